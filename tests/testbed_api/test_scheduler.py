"""OAR behaviour on the fast-forward clock: contention, advance reservations, multi-site dates, walltime."""

from __future__ import annotations

from typing import Any

import requests

from g5k_testbed.http_server import ServerHandle, start_server
from g5k_testbed.timefmt import format_paris

from .conftest import T0, make_config

SESSION = requests.Session()
PARASILO = 25


def submit(
    server: ServerHandle, user: str, site: str = "rennes", expect: int = 201, **body: Any
) -> dict[str, Any]:
    payload = {"command": "sleep 31536000", **body}
    reply = SESSION.post(
        f"{server.url}/sites/{site}/jobs",
        json=payload,
        headers={"Accept": "application/json", "X-Api-User-CN": user},
    )
    assert reply.status_code == expect, reply.text
    return reply.json() if expect == 201 else {"text": reply.text}


def get_job(server: ServerHandle, uid: int, site: str = "rennes") -> dict[str, Any]:
    return SESSION.get(f"{server.url}/sites/{site}/jobs/{uid}", headers={"Accept": "application/json"}).json()


def status(server: ServerHandle, site: str = "rennes") -> dict[str, Any]:
    return SESSION.get(f"{server.url}/sites/{site}/status", headers={"Accept": "application/json"}).json()


def test_contention_between_users_then_walltime_expiry(server: ServerHandle) -> None:
    alice = submit(server, "alice", resources=f"{{cluster='parasilo'}}/nodes={PARASILO},walltime=2:00:00")
    bob = submit(server, "bob", resources="{cluster='parasilo'}/nodes=5,walltime=1:00:00")
    assert bob["state"] == "waiting" and bob["scheduled_at"] == T0 + 7200
    assert len(bob["assigned_nodes"]) == 5  # predicted (gantt) nodes, tentative until running
    server.advance(10)
    assert get_job(server, alice["uid"])["state"] == "running"
    assert get_job(server, bob["uid"])["state"] == "waiting"
    entry = status(server)["nodes"][bob["assigned_nodes"][0]]
    assert entry["soft"] == "busy"
    assert {r["uid"]: r["state"] for r in entry["reservations"]} == {
        alice["uid"]: "running",
        bob["uid"]: "waiting",
    }
    server.advance(7200)
    done = get_job(server, alice["uid"])
    assert done["state"] == "error" and done["stopped_at"] == T0 + 7200
    assert [e["type"] for e in done["events"]] == ["WALLTIME", "SWITCH_INTO_ERROR_STATE"]
    started = get_job(server, bob["uid"])
    assert started["state"] == "running" and started["started_at"] == T0 + 7200
    server.advance(3600)
    assert get_job(server, bob["uid"])["state"] == "error"
    assert all(n["soft"] == "free" for n in status(server)["nodes"].values())


def test_deleting_a_job_lets_waiting_jobs_start_earlier(server: ServerHandle) -> None:
    alice = submit(server, "alice", resources=f"{{cluster='parasilo'}}/nodes={PARASILO},walltime=5:00:00")
    bob = submit(server, "bob", resources="{cluster='parasilo'}/nodes=3,walltime=1:00:00")
    assert bob["scheduled_at"] == T0 + 5 * 3600
    server.advance(600)
    deleted = SESSION.delete(
        f"{server.url}/sites/rennes/jobs/{alice['uid']}", headers={"X-Api-User-CN": "alice"}
    )
    assert deleted.status_code == 202
    server.advance(2)
    moved = get_job(server, bob["uid"])
    assert moved["scheduled_at"] == T0 + 600 and moved["state"] in ("launching", "running")


def test_command_that_ends_terminates_the_job(server: ServerHandle) -> None:
    job = submit(server, "alice", resources="nodes=1,walltime=1:00:00", command="sleep 60")
    server.advance(61)
    ended = get_job(server, job["uid"])
    assert ended["state"] == "terminated" and ended["exit_code"] == 0 and ended["stopped_at"] == T0 + 60


def test_advance_reservation_and_backfilling(server: ServerHandle) -> None:
    tomorrow = T0 + 86400
    resa = submit(
        server,
        "alice",
        resources="{cluster='parasilo'}/nodes=10,walltime=1:00:00",
        reservation=format_paris(tomorrow),
        command="",
    )
    assert resa["scheduled_at"] == tomorrow and resa["started_at"] == 0
    big = submit(server, "bob", resources=f"{{cluster='parasilo'}}/nodes={PARASILO},walltime=25:00:00")
    assert big["scheduled_at"] == tomorrow + 3600  # cannot overlap the reservation
    small = submit(server, "carol", resources="{cluster='parasilo'}/nodes=15,walltime=23:00:00")
    assert small["scheduled_at"] == T0  # fits before the big one, beside the reservation: backfilled now
    late = submit(server, "carol", resources="{cluster='parasilo'}/nodes=1,walltime=26:00:00")
    assert late["scheduled_at"] == tomorrow + 3600 + 25 * 3600  # no gap of 26 h before the big job ends
    # 15 nodes are free tomorrow beside the reservation; 16 are free together only after the big job
    clash = submit(
        server,
        "dave",
        expect=400,
        resources="{cluster='parasilo'}/nodes=16,walltime=1:00:00",
        reservation=format_paris(tomorrow),
    )
    proposal = format_paris(tomorrow + 3600 + 25 * 3600)
    assert f"Reservation not valid --> KO (This reservation could run at {proposal})" in clash["text"]
    server.advance(86400)
    assert get_job(server, resa["uid"])["state"] in ("launching", "running")
    server.advance(5)
    running = get_job(server, resa["uid"])
    assert running["state"] == "running" and running["started_at"] == tomorrow


def test_multi_site_reservation_at_one_date(server: ServerHandle) -> None:
    date = T0 + 3 * 3600
    jobs = {
        site: submit(
            server,
            "alice",
            site=site,
            resources="nodes=2,walltime=1:00:00",
            reservation=format_paris(date),
            types=["deploy"],
        )
        for site in ("rennes", "nancy", "lyon")
    }
    assert {job["scheduled_at"] for job in jobs.values()} == {date}
    server.advance(3 * 3600 + 5)
    for site, job in jobs.items():
        now = get_job(server, job["uid"], site)
        assert now["state"] == "running" and now["started_at"] == date
        assert all(node.endswith(f".{site}.grid5000.fr") for node in now["assigned_nodes"])


def test_subnets_and_vlans_are_scarce_resources(server: ServerHandle) -> None:
    everything = submit(server, "alice", resources="slash_16=3,walltime=1:00:00")
    assert len(everything["resources_by_type"]["subnets"]) == 192
    later = submit(server, "bob", resources="slash_22=1,walltime=1:00:00")
    assert later["scheduled_at"] == T0 + 3600
    vlans = [submit(server, "carol", resources="{type='kavlan'}/vlan=1,walltime=1:00:00") for _ in range(6)]
    assert sorted(v["resources_by_type"]["vlans"][0] for v in vlans) == ["4", "5", "6", "7", "8", "9"]
    seventh = submit(server, "carol", resources="{type='kavlan'}/vlan=1,walltime=1:00:00")
    assert seventh["scheduled_at"] == T0 + 3600
    local = submit(server, "dave", resources="{type='kavlan-local'}/vlan=1+nodes=1")
    glob = submit(server, "dave", resources="{type='kavlan-global'}/vlan=1+nodes=1")
    assert local["resources_by_type"]["vlans"] == ["1"] and glob["resources_by_type"]["vlans"] == ["16"]


def test_filters_queues_and_named_nodes(server: ServerHandle) -> None:
    named = submit(
        server, "alice", resources="{network_address in ('parasilo-7.rennes.grid5000.fr')}/nodes=1"
    )
    assert named["assigned_nodes"] == ["parasilo-7.rennes.grid5000.fr"]
    props = submit(server, "alice", resources="nodes=2", properties="cluster='paradoxe'")
    assert all(n.startswith("paradoxe-") for n in props["assigned_nodes"])
    wrong_queue = submit(server, "alice", expect=400, resources="{cluster='roazhon5'}/nodes=1")
    assert "There are not enough resources" in wrong_queue["text"]
    production = submit(server, "alice", resources="{cluster='roazhon5'}/nodes=1", queue="production")
    assert production["assigned_nodes"][0].startswith("roazhon5-")
    assert "does not exist" in submit(server, "alice", expect=400, queue="nope")["text"]


def test_dead_nodes_are_never_scheduled() -> None:
    config = make_config()
    config.faults.dead_nodes = ["parasilo-1.rennes.grid5000.fr"]
    handle = start_server(config)
    try:
        job = submit(handle, "alice", resources="{cluster='parasilo'}/nodes=3")
        assert "parasilo-1.rennes.grid5000.fr" not in job["assigned_nodes"]
        entry = status(handle)["nodes"]["parasilo-1.rennes.grid5000.fr"]
        assert entry["hard"] == "dead" and entry["soft"] == "unknown" and entry["free_slots"] == 0
        too_many = submit(handle, "bob", expect=400, resources=f"{{cluster='parasilo'}}/nodes={PARASILO}")
        assert "There are not enough resources" in too_many["text"]
    finally:
        handle.stop()
