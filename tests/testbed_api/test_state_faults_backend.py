"""Persistence across restarts, fault injection, and the node-backend hook (`backend.py`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from grid5000 import Grid5000
from grid5000.exceptions import Grid5000CreateError

from g5k_testbed.backend import NodeBackend, NullBackend, load_backend
from g5k_testbed.http_server import ServerHandle, start_server
from waiting import wait_for

from .conftest import T0, make_config

HEADERS = {"Accept": "application/json", "X-Api-User-CN": "alice"}
JOB = {
    "resources": "{cluster='gros'}/nodes=2+slash_22=1+{type='kavlan'}/vlan=1,walltime=3:00:00",
    "command": "sleep 31536000",
    "types": ["deploy"],
    "name": "persist",
}


def deployment_status(server: ServerHandle, uid: str) -> str:
    return requests.get(f"{server.url}/sites/nancy/deployments/{uid}", headers=HEADERS).json()["status"]


def finish_deployment(server: ServerHandle, uid: str, seconds: int = 10) -> None:
    server.advance(seconds)
    wait_for(lambda: deployment_status(server, uid) != "processing", 5, 0.02)


def test_state_survives_a_restart(tmp_path: Path) -> None:
    config = make_config(state_dir=str(tmp_path), frozen_clock=None, tick_interval=0)
    first = start_server(config)
    try:
        first.advance(0)
        job = requests.post(f"{first.url}/sites/nancy/jobs", json=JOB, headers=HEADERS).json()
        first.advance(5)
        nodes = requests.get(f"{first.url}/sites/nancy/jobs/{job['uid']}", headers=HEADERS).json()[
            "assigned_nodes"
        ]
        moved = requests.post(f"{first.url}/sites/nancy/vlans/4/nodes", json=nodes[:1], headers=HEADERS)
        assert moved.json()[nodes[0]]["status"] == "success"
        dep = requests.post(
            f"{first.url}/sites/nancy/deployments",
            json={"nodes": nodes, "environment": "debian12-min", "key": "ssh-ed25519 AAA k"},
            headers=HEADERS,
        ).json()
        finish_deployment(first, dep["uid"])
        waiting = requests.post(
            f"{first.url}/sites/nancy/jobs",
            headers=HEADERS,
            json={
                "resources": "{cluster='gros'}/nodes=2,walltime=1:00:00",
                "reservation": "2030-01-01 10:00:00",
            },
        ).json()
    finally:
        first.stop()
    second = start_server(make_config(state_dir=str(tmp_path), frozen_clock=None, tick_interval=0))
    try:
        again = requests.get(f"{second.url}/sites/nancy/jobs/{job['uid']}", headers=HEADERS).json()
        assert again["state"] == "running" and again["assigned_nodes"] == nodes
        assert requests.get(f"{second.url}/sites/nancy/jobs/{waiting['uid']}", headers=HEADERS).json()[
            "state"
        ] == ("waiting")
        vlan_nodes = requests.get(f"{second.url}/sites/nancy/vlans/4/nodes", headers=HEADERS).json()["items"]
        assert [n["uid"] for n in vlan_nodes] == nodes[:1]
        stored = requests.get(f"{second.url}/sites/nancy/deployments/{dep['uid']}", headers=HEADERS).json()
        assert stored["status"] == "terminated"
        key_path = urlsplit(stored["key"]).path  # an absolute URL built by the first server (other port)
        assert requests.get(second.base_url + key_path).text == "ssh-ed25519 AAA k"
        new = requests.post(
            f"{second.url}/sites/nancy/jobs", json={"command": "sleep 1"}, headers=HEADERS
        ).json()
        assert new["uid"] > waiting["uid"]  # ids never reused
        # the clock offset persisted: the restarted server still honours the earlier fast-forward
        assert again["started_at"] <= second.testbed.now()
    finally:
        second.stop()


def test_get_failures_are_retried_by_python_grid5000() -> None:
    config = make_config()
    config.faults.update({"error_rate": 0.25, "seed": 11})
    handle = start_server(config)
    try:
        gk = Grid5000(uri=handle.url)
        for _ in range(8):  # python-grid5000 retries 500/502/504 on GET (5 times, with backoff)
            assert len(gk.sites["nancy"].clusters.list()) > 0
        assert handle.testbed.faults.injected["errors"] > 0
    finally:
        handle.stop()


def test_lost_reply_on_post_still_creates_the_job(server: ServerHandle) -> None:
    requests.patch(f"{server.base_url}/_testbed/faults", json={"lost_reply_rate": 1.0, "error_codes": [502]})
    gk = Grid5000(uri=server.url)
    with pytest.raises(Grid5000CreateError) as lost:
        gk.sites["nancy"].jobs.create({"resources": "nodes=1", "command": "sleep 60", "name": "lost-one"})
    assert lost.value.response_code == 502
    requests.patch(f"{server.base_url}/_testbed/faults", json={"lost_reply_rate": 0.0})
    found = gk.sites["nancy"].jobs.list(name="lost-one", state="waiting,launching,running")
    assert len(found) == 1  # executed although the client saw an error: look it up before resubmitting
    injected = requests.get(f"{server.base_url}/_testbed/state").json()["faults_injected"]
    assert injected == {"errors": 0, "lost_replies": 1, "slow": 0}  # what a client went through


def test_latency_and_ko_nodes(server: ServerHandle) -> None:
    requests.patch(
        f"{server.base_url}/_testbed/faults", json={"latency": 0.2, "ko_nodes": ["gros-2.nancy.grid5000.fr"]}
    )
    started = time.monotonic()
    job = requests.post(
        f"{server.url}/sites/nancy/jobs",
        headers=HEADERS,
        json={"resources": "{cluster='gros'}/nodes=2", "command": "sleep 600", "types": ["deploy"]},
    )
    assert time.monotonic() - started >= 0.2
    server.advance(5)
    nodes = requests.get(f"{server.url}/sites/nancy/jobs/{job.json()['uid']}", headers=HEADERS).json()[
        "assigned_nodes"
    ]
    assert nodes == ["gros-1.nancy.grid5000.fr", "gros-2.nancy.grid5000.fr"]
    dep = requests.post(
        f"{server.url}/sites/nancy/deployments",
        headers=HEADERS,
        json={"nodes": nodes, "environment": "debian12-min"},
    ).json()
    finish_deployment(server, dep["uid"])
    result = requests.get(f"{server.url}/sites/nancy/deployments/{dep['uid']}", headers=HEADERS).json()[
        "result"
    ]
    assert {n: r["state"] for n, r in result.items()} == {nodes[0]: "OK", nodes[1]: "KO"}


def test_deployment_rules_and_cancel(server: ServerHandle) -> None:
    url = f"{server.url}/sites/nancy/deployments"
    blank = requests.post(url, json={"nodes": [], "environment": "debian12-min"}, headers=HEADERS)
    assert blank.status_code == 400 and blank.text.startswith(
        "The deployment you are trying to submit is not valid"
    )
    not_reserved = requests.post(
        url, json={"nodes": ["gros-9.nancy.grid5000.fr"], "environment": "debian12-min"}, headers=HEADERS
    )
    assert not_reserved.status_code == 400 and not_reserved.text.startswith("Cannot launch deployment:")
    job = requests.post(
        f"{server.url}/sites/nancy/jobs",
        headers=HEADERS,
        json={"resources": "{cluster='gros'}/nodes=1", "command": "sleep 600", "types": ["deploy"]},
    )
    server.advance(5)
    node = requests.get(f"{server.url}/sites/nancy/jobs/{job.json()['uid']}", headers=HEADERS).json()[
        "assigned_nodes"
    ]
    unknown_env = requests.post(url, json={"nodes": node, "environment": "plan9-max"}, headers=HEADERS)
    assert unknown_env.status_code == 400 and "Invalid environment specification" in unknown_env.text
    dep = requests.post(url, json={"nodes": node, "environment": "debian12-min"}, headers=HEADERS)
    assert dep.status_code == 201 and dep.headers["Location"].endswith(dep.json()["uid"])
    other = requests.delete(f"{url}/{dep.json()['uid']}", headers={**HEADERS, "X-Api-User-CN": "bob"})
    assert other.status_code == 403
    cancel = requests.delete(f"{url}/{dep.json()['uid']}", headers=HEADERS)
    assert cancel.status_code == 202
    assert deployment_status(server, dep.json()["uid"]) == "canceled"
    listing = requests.get(f"{url}?status=canceled", headers=HEADERS).json()
    assert [d["uid"] for d in listing["items"]] == [dep.json()["uid"]]


class RecordingBackend(NullBackend):
    """A backend that materialises two nodes and records what the server asks of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.lock = threading.Lock()

    def materialised_nodes(self) -> set[str] | None:
        return {"gros-1.nancy.grid5000.fr", "gros-2.nancy.grid5000.fr"}

    def deploy_node(self, fqdn: str, environment: str, authorized_keys: str | None,
                    release: str | None = None) -> bool:
        assert threading.current_thread() is not threading.main_thread()
        with self.lock:
            self.calls.append(("deploy", fqdn, environment, authorized_keys or ""))
            self.calls.append(("release", fqdn, release or ""))
        return True

    def move_to_vlan(self, fqdn: str, vlan: str) -> None:
        self.calls.append(("vlan", fqdn, vlan))

    def subnets_changed(self, site: str, cidrs: list[str]) -> None:
        self.calls.append(("subnets", site, *cidrs))


def test_backend_hooks_and_absent_nodes() -> None:
    backend = RecordingBackend()
    assert isinstance(backend, NodeBackend)
    handle = start_server(make_config(sites=["nancy"]), backend=backend)
    try:
        status = requests.get(f"{handle.url}/sites/nancy/status", headers=HEADERS).json()["nodes"]
        assert status["gros-1.nancy.grid5000.fr"]["hard"] == "alive"
        assert status["gros-3.nancy.grid5000.fr"]["hard"] == "absent"
        too_many = requests.post(
            f"{handle.url}/sites/nancy/jobs",
            headers=HEADERS,
            json={"resources": "nodes=3", "command": "sleep 1"},
        )
        assert too_many.status_code == 400  # absent nodes are never scheduled
        job = requests.post(f"{handle.url}/sites/nancy/jobs", headers=HEADERS, json=JOB).json()
        handle.advance(5)
        assert ("subnets", "nancy", "10.144.0.0/22") in backend.calls
        nodes = sorted(job["assigned_nodes"])
        dep = requests.post(
            f"{handle.url}/sites/nancy/deployments",
            headers=HEADERS,
            json={"nodes": nodes, "environment": "debian12-min", "key": "ssh-rsa K", "vlan": 4},
        ).json()
        finish_deployment(handle, dep["uid"])
        assert sorted(c[1] for c in backend.calls if c[0] == "deploy") == nodes
        assert ("deploy", nodes[0], "debian12-min", "ssh-rsa K") in backend.calls
        assert ("release", nodes[0], "debian12-x64-min-2025010712") in backend.calls
        assert [c for c in backend.calls if c[0] == "vlan"] == [("vlan", n, "4") for n in nodes]
        requests.delete(f"{handle.url}/sites/nancy/jobs/{job['uid']}", headers=HEADERS)
        assert [c for c in backend.calls if c[0] == "vlan"][-2:] == [("vlan", n, "DEFAULT") for n in nodes]
        assert backend.calls[-1] == ("subnets", "nancy")  # released: no subnet left for the DHCP
    finally:
        handle.stop()


class RebootingBackend(RecordingBackend):
    """Deploy jobs' nodes are rebooted at the job's end; each reboot waits until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def needs_reboot(self, fqdn: str, deploy: bool) -> bool:
        return deploy

    def reboot_node(self, fqdn: str, deploy: bool) -> bool:
        assert threading.current_thread() is not threading.main_thread()
        self.go.wait(30)
        with self.lock:
            self.calls.append(("reboot", fqdn))
        return True


def _job_state(handle: ServerHandle, uid: int) -> str:
    return str(requests.get(f"{handle.url}/sites/nancy/jobs/{uid}", headers=HEADERS).json()["state"])


@pytest.mark.parametrize("end", ["delete", "walltime"])
def test_job_end_is_finishing_until_its_nodes_are_rebooted(end: str) -> None:
    """As on Grid'5000: `finishing` while the nodes reboot (outside the API's lock: the API answers
    meanwhile), then `error`; a job on those nodes starts only once they are back."""
    backend = RebootingBackend()
    handle = start_server(make_config(sites=["nancy"]), backend=backend)
    try:
        spec = {"resources": "nodes=2,walltime=1:00:00", "command": "sleep 1d", "types": ["deploy"]}
        job = requests.post(f"{handle.url}/sites/nancy/jobs", headers=HEADERS, json=spec).json()
        nxt = requests.post(f"{handle.url}/sites/nancy/jobs", headers=HEADERS, json=spec).json()
        handle.advance(5)
        assert _job_state(handle, job["uid"]) == "running"
        if end == "delete":
            requests.delete(f"{handle.url}/sites/nancy/jobs/{job['uid']}", headers=HEADERS)
        else:
            handle.advance(3600)
        assert _job_state(handle, job["uid"]) == "finishing"
        handle.advance(60)
        assert _job_state(handle, nxt["uid"]) == "waiting"  # its nodes are still being rebooted
        assert not [c for c in backend.calls if c[0] == "reboot"]
        backend.go.set()
        wait_for(lambda: _job_state(handle, job["uid"]) == "error", 10, interval=0.05)
        assert sorted(c[1] for c in backend.calls if c[0] == "reboot") == sorted(job["assigned_nodes"])
        handle.advance(2)
        assert _job_state(handle, nxt["uid"]) == "running"
        events = requests.get(f"{handle.url}/sites/nancy/jobs/{job['uid']}", headers=HEADERS).json()["events"]
        assert events[-1]["type"] == "SWITCH_INTO_ERROR_STATE"
    finally:
        backend.go.set()
        handle.stop()


def test_load_backend_without_lab_is_null(tmp_path: Path) -> None:
    assert isinstance(load_backend(tmp_path), NullBackend)
    assert isinstance(load_backend(None), NullBackend)
    assert T0  # the shared frozen start of every other test


def test_global_vlan_spans_sites_and_the_ticker_ends_jobs() -> None:
    backend = RecordingBackend()
    handle = start_server(make_config(sites=["nancy", "rennes"], tick_interval=0.05))
    handle.testbed.backend = backend  # record the moves the ticker makes, without any request
    try:
        glob = requests.post(
            f"{handle.url}/sites/rennes/jobs",
            headers=HEADERS,
            json={
                "resources": "{type='kavlan-global'}/vlan=1+nodes=1,walltime=1:00:00",
                "command": "sleep 1d",
                "types": ["deploy"],
            },
        ).json()
        nancy = requests.post(
            f"{handle.url}/sites/nancy/jobs",
            headers=HEADERS,
            json={
                "resources": "{cluster='gros'}/nodes=1,walltime=2:00:00",
                "command": "sleep 1d",
                "types": ["deploy"],
            },
        ).json()
        handle.advance(5)
        assert glob["resources_by_type"]["vlans"] == ["16"]
        kinds = {
            v["uid"]: v["type"]
            for v in requests.get(f"{handle.url}/sites/nancy/vlans", headers=HEADERS).json()["items"]
        }
        assert kinds["16"] == "kavlan-global-remote" and kinds["14"] == "kavlan-global"
        node = nancy["assigned_nodes"][0]
        moved = requests.post(f"{handle.url}/sites/nancy/vlans/16/nodes", json=[node], headers=HEADERS).json()
        assert moved[node]["status"] == "success"
        bob = requests.post(
            f"{handle.url}/sites/nancy/vlans/16/nodes",
            json=[node],
            headers={**HEADERS, "X-Api-User-CN": "bob"},
        )
        assert bob.status_code == 403
        handle.testbed.clock.advance(3600)  # no request: the ticker must end the rennes job by itself
        wait_for(lambda: ("vlan", node, "DEFAULT") in backend.calls, 5, 0.02)
        assert requests.get(f"{handle.url}/sites/nancy/vlans/nodes/{node}", headers=HEADERS).json()[
            "vlan"
        ] == ("DEFAULT")
    finally:
        handle.stop()
