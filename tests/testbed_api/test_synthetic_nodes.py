"""Synthetic nodes (`reference_synthetic.with_synthetic_nodes`): served like vendored ones, scheduled by OAR,
deployable, and never mistaken for real machines (no address of a real node, marked synthetic)."""

from __future__ import annotations

import doctest

import pytest
import requests

from g5k_testbed import reference_synthetic
from g5k_testbed.auth import AuthConfig
from g5k_testbed.http_server import start_server
from g5k_testbed.reference import Reference
from g5k_testbed.reference_synthetic import with_synthetic_nodes
from g5k_testbed.testbed import TestbedConfig as Config

T0 = 1_700_000_000
HEADERS = {"Accept": "application/json", "X-Api-User-CN": "alice"}


def test_doctests() -> None:
    assert doctest.testmod(reference_synthetic).failed == 0


def test_the_base_reference_is_left_alone_and_numbering_follows_the_cluster() -> None:
    base = Reference.load(["nancy"])
    before = len(base.sites["nancy"].nodes["gros"])
    more = with_synthetic_nodes(base, {("nancy", "gros"): 3, ("nancy", "grue"): 1})
    assert len(base.sites["nancy"].nodes["gros"]) == before
    added = more.sites["nancy"].nodes["gros"][before:]
    assert [n["uid"] for n in added] == [f"gros-{before + i}" for i in (1, 2, 3)]
    assert all(n["synthetic"] for n in added)
    real = base.sites["nancy"].nodes["gros"]
    real_ips = {a.get("ip") for n in real for a in n["network_adapters"]} - {None}
    for node in added:
        assert not real_ips & {a.get("ip") for a in node["network_adapters"]}
        assert "kavlan" not in node
    fqdns = list(more.sites["nancy"].node_info)
    assert fqdns.index(f"gros-{before + 3}.nancy.grid5000.fr") < fqdns.index("grosminet-1.nancy.grid5000.fr")
    assert "grue-6.nancy.grid5000.fr" in fqdns
    assert more.nodes_by_fqdn[f"gros-{before + 3}.nancy.grid5000.fr"].cluster == "gros"


@pytest.mark.parametrize("counts", [{("nancy", "nope"): 1}, {("atlantis", "gros"): 1},
                                    {("nancy", "gros"): -1}])
def test_unknown_clusters_and_negative_counts_are_refused(counts: dict[tuple[str, str], int]) -> None:
    with pytest.raises(ValueError):
        with_synthetic_nodes(Reference.load(["nancy"]), counts)


def test_the_api_serves_schedules_and_deploys_synthetic_nodes() -> None:
    base = Reference.load(["nancy"])
    size = len(base.sites["nancy"].nodes["gros"])
    reference = with_synthetic_nodes(base, {("nancy", "gros"): 5})
    config = Config(sites=["nancy"], frozen_clock=T0, tick_interval=0,
                    auth=AuthConfig(users=None, inside_user="alice"))
    handle = start_server(config, reference=reference)
    try:
        url = handle.url
        nodes = requests.get(f"{url}/sites/nancy/clusters/gros/nodes", headers=HEADERS, timeout=30).json()
        assert nodes["total"] == size + 5
        synthetic = [n["uid"] for n in nodes["items"] if n.get("synthetic")]
        assert synthetic == [f"gros-{size + i}" for i in range(1, 6)]
        # all of gros, the synthetic nodes included, in one deploy job
        body = {"resources": f"{{cluster='gros'}}/nodes={size + 5},walltime=1:00:00", "command": "sleep 1h",
                "types": ["deploy"]}
        reply = requests.post(f"{url}/sites/nancy/jobs", json=body, headers=HEADERS, timeout=30)
        reply.raise_for_status()
        handle.advance(5)
        uid = reply.json()["uid"]
        job = requests.get(f"{url}/sites/nancy/jobs/{uid}", headers=HEADERS, timeout=30).json()
        assert job["state"] == "running"
        assert f"gros-{size + 5}.nancy.grid5000.fr" in job["assigned_nodes"]
        deploy = {"nodes": [f"gros-{size + 5}.nancy.grid5000.fr"], "environment": "debian12-min",
                  "key": "ssh-ed25519 AAAA test"}
        reply = requests.post(f"{url}/sites/nancy/deployments", json=deploy, headers=HEADERS, timeout=30)
        assert reply.status_code in (200, 201, 202), reply.text
    finally:
        handle.stop()
