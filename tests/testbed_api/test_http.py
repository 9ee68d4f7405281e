"""HTTP details of the Grid'5000 API: versions and hrefs, negotiation, errors, headers, paging, auth."""

from __future__ import annotations

import email.utils

import requests

from g5k_testbed.http_server import ServerHandle

from .conftest import T0

JSON = {"Accept": "application/json"}
SESSION = requests.Session()  # keep-alive, as python-grid5000 does


def submit(
    server: ServerHandle, site: str = "nancy", user: str = "alice", **body: object
) -> requests.Response:
    payload = {"resources": "nodes=1,walltime=1:00:00", "command": "sleep 3600", **body}
    return requests.post(
        f"{server.url}/sites/{site}/jobs", json=payload, headers={**JSON, "X-Api-User-CN": user}
    )


def test_versions_prefix_hrefs_and_links(server: ServerHandle) -> None:
    for prefix in ("/3.0", "/stable", "/sid"):
        site = requests.get(f"{server.base_url}{prefix}/sites/rennes", headers=JSON).json()
        links = {link["rel"]: link for link in site["links"]}
        assert links["self"]["href"] == f"{prefix}/sites/rennes"
        assert links["parent"]["href"] == f"{prefix}/"
        assert links["clusters"]["type"] == "application/vnd.grid5000.collection+json"
        assert [link["rel"] for link in site["links"]][:2] == ["clusters", "network_equipments"]
        assert site["version"]
    node = requests.get(f"{server.url}/sites/rennes/clusters/parasilo/nodes/parasilo-1", headers=JSON).json()
    assert {link["rel"]: link["href"] for link in node["links"]}[
        "parent"
    ] == "/stable/sites/rennes/clusters/parasilo"
    nodes = requests.get(f"{server.url}/sites/rennes/clusters/parasilo/nodes", headers=JSON).json()
    assert list(nodes) == ["total", "offset", "items", "version", "links"]
    assert nodes["total"] == len(nodes["items"]) == 25
    assert requests.get(f"{server.base_url}/4.0/sites", headers=JSON).status_code == 404


def test_content_negotiation_and_errors(server: ServerHandle) -> None:
    as_json = requests.get(f"{server.url}/sites", headers=JSON)
    assert as_json.headers["Content-Type"].startswith("application/json")
    vnd = requests.get(f"{server.url}/sites", headers={"Accept": "*/*"})
    assert vnd.headers["Content-Type"].startswith("application/vnd.grid5000.collection+json")
    item = requests.get(f"{server.url}/sites/rennes", headers={"Accept": "*/*"})
    assert item.headers["Content-Type"].startswith("application/vnd.grid5000.item+json")
    missing = requests.get(f"{server.url}/sites/rennes/clusters/nope", headers=JSON)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("text/plain")
    assert missing.text == "Cannot find resource /sites/rennes/clusters/nope"
    assert requests.get(f"{server.url}/sites/rennes/jobs/99999", headers=JSON).text == (
        "Couldn't find OAR::Job with 'job_id'=99999"
    )
    not_allowed = requests.put(f"{server.url}/sites/rennes/jobs", headers=JSON)
    assert not_allowed.status_code == 405 and "GET" in not_allowed.headers["Allow"]
    pretty = requests.get(f"{server.url}/sites/rennes?pretty=yes", headers=JSON).text
    assert pretty.startswith("{\n")
    deep = requests.get(f"{server.url}/sites/rennes?deep=true", headers=JSON).json()
    assert isinstance(deep["items"], dict) and "parasilo-1" in {
        n["uid"] for n in deep["items"]["clusters"]["parasilo"]["nodes"]
    }


def test_date_header_is_the_testbed_clock(server: ServerHandle) -> None:
    reply = requests.get(f"{server.url}/sites", headers=JSON)
    assert email.utils.parsedate_to_datetime(reply.headers["Date"]).timestamp() == T0
    server.advance(86400)
    status = requests.get(f"{server.url}/sites/nancy/status", headers=JSON)
    assert email.utils.parsedate_to_datetime(status.headers["Date"]).timestamp() == T0 + 86400
    assert status.json()["uid"] == T0 + 86400


def test_job_creation_location_and_key_order(server: ServerHandle) -> None:
    reply = submit(server, name="keys")
    assert reply.status_code == 201
    job = reply.json()
    assert reply.headers["Location"] == f"{server.url}/sites/nancy/jobs/{job['uid']}"
    assert list(job)[:8] == ["uid", "user_uid", "user", "walltime", "queue", "state", "project", "name"]
    assert list(job)[-4:] == ["events", "links", "resources_by_type", "assigned_nodes"]
    assert job["started_at"] == 0 and "stopped_at" not in job and "exit_code" not in job
    deleted = requests.delete(
        f"{server.url}/sites/nancy/jobs/{job['uid']}", headers={**JSON, "X-Api-User-CN": "alice"}
    )
    assert deleted.status_code == 202 and deleted.text == ""
    assert deleted.headers["Location"].endswith(f"/sites/nancy/jobs/{job['uid']}")
    assert "REGISTERED" in deleted.headers["X-Oar-Info"]


def test_job_validation_texts(server: ServerHandle) -> None:
    no_command = requests.post(
        f"{server.url}/sites/nancy/jobs",
        json={"resources": "nodes=1"},
        headers={**JSON, "X-Api-User-CN": "alice"},
    )
    assert no_command.status_code == 400
    assert no_command.text == (
        "The job you are trying to submit is not valid: you must give a :command to execute on launch"
    )
    epoch = submit(server, reservation=T0 + 3600)
    assert epoch.status_code == 400 and epoch.text.endswith("`reservation` should be a String.")
    bad_date = submit(server, reservation="tomorrow")
    assert bad_date.status_code == 400 and "Syntax error in reservation start date" in bad_date.text
    too_big = submit(server, resources="nodes=100000")
    assert too_big.status_code == 400 and "There are not enough resources for your request" in too_big.text
    form = requests.post(
        f"{server.url}/sites/nancy/jobs",
        data={"resources": "nodes=1", "command": "sleep 10", "types[]": ["deploy"]},
        headers={**JSON, "X-Api-User-CN": "alice"},
    )
    assert form.status_code == 201 and form.json()["types"] == ["deploy"]


def test_jobs_list_filters_and_paging(server: ServerHandle) -> None:
    uids = [
        submit(server, name=f"j{i % 3}", user="alice" if i % 2 else "bob").json()["uid"] for i in range(12)
    ]
    listing = requests.get(f"{server.url}/sites/nancy/jobs", headers=JSON).json()
    assert [j["uid"] for j in listing["items"]] == sorted(uids, reverse=True)
    assert "assigned_nodes" not in listing["items"][0]
    page = requests.get(f"{server.url}/sites/nancy/jobs?offset=2&limit=3&resources=yes", headers=JSON).json()
    assert page["total"] == 12 and page["offset"] == 2 and len(page["items"]) == 3
    assert "assigned_nodes" in page["items"][0]
    capped = requests.get(f"{server.url}/sites/nancy/jobs?limit=1073741824", headers=JSON).json()
    assert len(capped["items"]) == 12
    alice_j1 = requests.get(f"{server.url}/sites/nancy/jobs?user=alice&name=j1", headers=JSON).json()
    assert {(j["user"], j["name"]) for j in alice_j1["items"]} == {("alice", "j1")}
    running = requests.get(f"{server.url}/sites/nancy/jobs?state=running", headers=JSON).json()
    assert running["total"] == 0
    server.advance(5)
    running = requests.get(f"{server.url}/sites/nancy/jobs?state=running,launching", headers=JSON).json()
    assert running["total"] == 12


def test_jobs_list_caps_pages_at_500(server: ServerHandle) -> None:
    for _ in range(3):
        for _ in range(200):
            submit(server, resources="nodes=1,walltime=0:10:00")
        server.advance(3600)
    listing = requests.get(f"{server.url}/sites/nancy/jobs?limit=100000", headers=JSON).json()
    assert listing["total"] == 600 and len(listing["items"]) == 500


def test_auth_rules(server: ServerHandle) -> None:
    anonymous = submit(server, user="anonymous")
    assert anonymous.status_code == 403 and anonymous.text == "You are not authorized to access this resource"
    job = submit(server, user="alice").json()
    other = requests.delete(
        f"{server.url}/sites/nancy/jobs/{job['uid']}", headers={**JSON, "X-Api-User-CN": "bob"}
    )
    assert other.status_code == 403
    server.advance(5)
    status = requests.get(
        f"{server.url}/sites/nancy/status", headers={**JSON, "X-Api-User-CN": "anonymous"}
    ).json()
    assert all("reservations" not in entry for entry in status["nodes"].values())
    assert requests.get(f"{server.url}/sites/nancy/status", headers=JSON).json()[
        "nodes"
    ]  # inside user reads all


def test_kavlan_request_rules(server: ServerHandle) -> None:
    headers = {**JSON, "X-Api-User-CN": "alice"}
    url = f"{server.url}/sites/nancy/vlans/4/nodes"
    wrong_type = requests.post(url, data="[]", headers={**headers, "Content-Type": "text/plain"})
    assert wrong_type.status_code == 415 and wrong_type.text == "Content-Type 'text/plain' is not supported"
    assert requests.post(url, json=[], headers=headers).status_code == 422
    not_mine = requests.post(url, json=["gros-1.nancy.grid5000.fr"], headers=headers)
    assert not_mine.status_code == 403 and not_mine.text == "Not enough privileges on Kavlan resources"
    assert requests.get(f"{server.url}/sites/nancy/vlans/99", headers=JSON).text == "Vlan 99 does not exist"
    unknown = requests.get(f"{server.url}/sites/nancy/vlans/nodes/nope.nancy.grid5000.fr", headers=JSON)
    assert unknown.status_code == 404 and unknown.text == "Unknown node 'nope.nancy.grid5000.fr'."
    everything = requests.get(f"{server.url}/sites/nancy/vlans/nodes", headers=JSON).json()
    vlans = {n["uid"]: n["vlan"] for n in everything["items"]}
    assert vlans["gros-1.nancy.grid5000.fr"] == "DEFAULT"


def test_admin_endpoints_only_when_enabled(server: ServerHandle) -> None:
    clock = requests.post(f"{server.base_url}/_testbed/clock", json={"advance": 60}).json()
    assert clock["now"] == T0 + 60 and clock["frozen"] is True
    faults = requests.patch(f"{server.base_url}/_testbed/faults", json={"latency": 0.01}).json()
    assert faults["latency"] == 0.01
    bad = requests.patch(f"{server.base_url}/_testbed/faults", json={"error_rate": 3})
    assert bad.status_code == 422
    from g5k_testbed.http_server import start_server

    from .conftest import make_config

    closed = start_server(make_config(admin=False))
    try:
        assert requests.get(f"{closed.base_url}/_testbed/clock").status_code == 404
    finally:
        closed.stop()
