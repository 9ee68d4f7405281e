"""The testbed driven by python-grid5000, unchanged: the calls vm5k, enoslib and users make."""

from __future__ import annotations

import pytest
from grid5000 import Grid5000
from grid5000.exceptions import Grid5000AuthenticationError, Grid5000CreateError, Grid5000DeleteError

from g5k_testbed.auth import AuthConfig
from g5k_testbed.http_server import ServerHandle, start_server
from waiting import wait_for

from .conftest import T0, make_config

JOB = {
    "resources": "{cluster='parasilo'}/nodes=2+slash_22=2+{type='kavlan'}/vlan=1,walltime=2:00:00",
    "command": "sleep 31536000",
    "types": ["deploy"],
    "name": "vm5k-contract",
}


def test_reference_sites_clusters_nodes(gk: Grid5000) -> None:
    assert [s.uid for s in gk.sites.list()] == ["lyon", "nancy", "rennes"]
    rennes = gk.sites["rennes"]
    assert rennes.virt_ip_range == "10.156.0.0/14"
    clusters = [c.uid for c in rennes.clusters.list()]
    assert "parasilo" in clusters and clusters == sorted(clusters)
    nodes = rennes.clusters["parasilo"].nodes.list()
    assert len(nodes) == 25
    assert [n.uid for n in nodes][:3] == ["parasilo-1", "parasilo-10", "parasilo-11"]  # file-name order
    node = rennes.clusters["parasilo"].nodes["parasilo-1"]
    assert node.architecture["nb_cores"] == 16
    assert node.main_memory["ram_size"] > 0
    assert node.supported_job_types["virtual"] == "ivt"
    assert gk.root.get().version
    assert len(gk.sites["nancy"].network_equipments.list()) > 0


def test_synthetic_servers_and_pdus(gk: Grid5000) -> None:
    """EnOSlib's `servers["dns"].network_adapters["default"]["ip"]`: the resolver the testbed's nodes use."""
    rennes = gk.sites["rennes"]
    dns = rennes.servers["dns"]
    assert dns.network_adapters["default"]["ip"] == rennes.kavlans["default"]["gateway"] == "172.16.111.254"
    assert [s.uid for s in rennes.servers.list()] == ["dns", "frontend"]
    assert rennes.servers["frontend"].network_adapters["default"]["ip"] == rennes.frontend_ip
    pdus = rennes.pdus.list()
    assert "parasilo-pdu1" in [p.uid for p in pdus]
    assert rennes.pdus["parasilo-pdu1"].ports["1"] == "parasilo-1"
    links = [link["rel"] for link in rennes.links]
    assert links[:5] == ["clusters", "network_equipments", "pdus", "servers", "self"]


def test_job_with_subnets_and_kavlan_runs(server: ServerHandle, gk: Grid5000) -> None:
    site = gk.sites["rennes"]
    job = site.jobs.create(JOB)
    assert job.state == "waiting"
    assert job.user == "alice" and job.walltime == 7200 and job.types == ["deploy"]
    server.advance(5)
    job.refresh()
    assert job.state == "running"
    assert job.started_at == T0
    assert job.assigned_nodes == ["parasilo-1.rennes.grid5000.fr", "parasilo-2.rennes.grid5000.fr"]
    rbt = job.resources_by_type
    assert rbt["vlans"] == ["4"]
    assert rbt["subnets"] == ["10.156.0.0/22", "10.156.4.0/22"]
    assert len(rbt["cores"]) == 32 and rbt["cores"][0] == "parasilo-1.rennes.grid5000.fr/0"
    listed = site.jobs.list(name="vm5k-contract", state="waiting,launching,running", user="alice")
    assert [j.uid for j in listed] == [job.uid]


def test_status_shows_reservations_vlans_subnets(server: ServerHandle, gk: Grid5000) -> None:
    site = gk.sites["rennes"]
    job = site.jobs.create(JOB)
    server.advance(5)
    status = site.status.list()
    entry = status.nodes["parasilo-1.rennes.grid5000.fr"]
    assert entry["hard"] == "alive" and entry["soft"] == "busy" and entry["busy_slots"] == 16
    assert [r["uid"] for r in entry["reservations"]] == [job.uid]
    assert status.nodes["parasilo-3.rennes.grid5000.fr"]["soft"] == "free"
    assert status.vlans["4"]["soft"] == "busy" and status.vlans["4"]["type"] == "kavlan"
    assert status.vlans["1"]["type"] == "kavlan-local" and status.vlans["16"]["type"] == "kavlan-global"
    assert status.subnets["10.156.0.0/22"]["soft"] == "busy"
    assert len(status.subnets) == 192
    cluster_status = site.clusters["parasilo"].status.list()
    names = {f"{n.uid}.rennes.grid5000.fr" for n in site.clusters["parasilo"].nodes.list()}
    assert set(cluster_status.nodes) == names and len(names) == 25


def test_vlans_and_deployment(server: ServerHandle, gk: Grid5000) -> None:
    site = gk.sites["rennes"]
    job = site.jobs.create(JOB)
    server.advance(5)
    job.refresh()
    kinds = {v.uid: v.type for v in site.vlans.list()}
    assert kinds["DEFAULT"] == "NULL" and kinds["4"] == "kavlan" and kinds["14"] == "kavlan-global-remote"
    moved = site.vlans["4"].nodes.submit(job.assigned_nodes[:1])
    assert moved == {
        "parasilo-1.rennes.grid5000.fr": {"status": "success", "message": "Successfully added to vlan"}
    }
    again = site.vlans["4"].nodes.submit(job.assigned_nodes[:1])
    assert again["parasilo-1.rennes.grid5000.fr"]["status"] == "unchanged"
    assert [n.uid for n in site.vlans["4"].nodes.list()] == ["parasilo-1.rennes.grid5000.fr"]
    dep = site.deployments.create(
        {"nodes": job.assigned_nodes, "environment": "debian12-min", "key": "ssh-ed25519 AAAA me", "vlan": 4}
    )
    assert dep.status == "processing" and dep.uid.startswith("D-")
    assert dep.key.startswith(server.url + "/sites/rennes/files/alice-key-")
    server.advance(10)
    # Kadeploy's workers are threads: the deployment ends once they have all reported, so wait for that.
    wait_for(lambda: (dep.refresh(), dep.status)[1] != "processing", 5, 0.02)
    assert dep.status == "terminated"
    assert {n: r["state"] for n, r in dep.result.items()} == dict.fromkeys(job.assigned_nodes, "OK")
    in_vlan = sorted(n.uid for n in site.vlans["4"].nodes.list())
    assert in_vlan == job.assigned_nodes
    envs = [e.name for e in site.environments.list()]
    assert "debian12-min" in envs and "debian11-min" in envs
    job.delete()
    assert site.vlans["4"].nodes.list() == []  # back to DEFAULT when the job ends


def test_delete_then_error_texts(server: ServerHandle, gk: Grid5000) -> None:
    site = gk.sites["rennes"]
    job = site.jobs.create(JOB)
    server.advance(5)
    job.delete()
    job.refresh()
    assert job.state == "error"
    with pytest.raises(Grid5000DeleteError) as killed:
        job.delete()
    assert killed.value.response_code == 400
    assert "This job was already killed" in str(killed.value)


def test_reservation_that_cannot_be_met_proposes_a_date(server: ServerHandle, gk: Grid5000) -> None:
    site = gk.sites["rennes"]
    site.jobs.create({"resources": "{cluster='parasilo'}/nodes=25,walltime=2:00:00", "command": "sleep 1d"})
    with pytest.raises(Grid5000CreateError) as refused:
        site.jobs.create(
            {
                "resources": "{cluster='parasilo'}/nodes=1,walltime=1:00:00",
                "reservation": "2023-11-15 00:00:00",
            }
        )
    assert refused.value.response_code == 400
    # the first job ends at T0 + 2 h = 01:13:20 Paris time
    assert "Reservation not valid --> KO (This reservation could run at 2023-11-15 01:13:20)" in str(
        refused.value
    )


def test_authentication_variants() -> None:
    handle = start_server(make_config(auth=AuthConfig(users={"bob": "secret"}, inside_user="alice")))
    try:
        bob = Grid5000(uri=handle.url, username="bob", password="secret")
        job = bob.sites["nancy"].jobs.create({"resources": "nodes=1", "command": "sleep 60"})
        assert job.user == "bob"
        with pytest.raises(Grid5000AuthenticationError):
            Grid5000(uri=handle.url, username="bob", password="wrong").sites.list()
        inside = Grid5000(uri=handle.url)  # no credentials: the "inside" user, as on a frontend
        with pytest.raises(Grid5000DeleteError) as forbidden:
            inside.sites["nancy"].jobs[job.uid].delete()
        assert forbidden.value.response_code == 403
        anonymous = Grid5000(uri=handle.url, sslcert="/nonexistent", ssluser="anonymous")
        anonymous.client_cert = None  # python-grid5000's certificate mode sends X-Api-User-CN itself
        with pytest.raises(Grid5000CreateError) as refused:
            anonymous.sites["nancy"].jobs.create({"resources": "nodes=1", "command": "sleep 60"})
        assert refused.value.response_code == 403
        assert "You are not authorized to access this resource" in str(refused.value)
    finally:
        handle.stop()
