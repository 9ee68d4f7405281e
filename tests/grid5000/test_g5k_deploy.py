"""Kadeploy through the testbed's API: KO nodes retried once then excluded, deployed hosts left alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from g5k_helpers import make_platform, request_for

from g5k_testbed.http_server import ServerHandle
from vm5k.errors import DeploymentError, UsageError
from vm5k.platforms.grid5000 import Grid5000Platform
from vm5k.platforms.grid5000.deployed import DeploymentMarker, marker_text, parse_marker
from vm5k.platforms.grid5000.hosts import node_of
from vm5k.platforms.grid5000.kadeploy import DEFAULT_ENVIRONMENT, environment
from vm5k.platforms.grid5000.record import Grid5000Record
from vm5k.remote import LocalRunner
from vm5k.timeline import DEPLOY_STARTED, DEPLOYED, times_of
from vm5k.topology import HOST_KO, HOST_OK, Topology


def reserved(platform: Grid5000Platform, server: ServerHandle, *args: str) -> Topology:
    request = request_for(server, *args)
    topo = platform.reserve(platform.plan(request.topology, request))
    return platform.resources(platform.wait_running(topo))


def deployments(server: ServerHandle) -> list:
    return [d for site in server.testbed.deployments.values() for d in site.values()]


def test_a_ko_node_is_retried_once_then_excluded_and_its_vms_move(server: ServerHandle,
                                                                  platform: Grid5000Platform) -> None:
    topo = reserved(platform, server, "-n", "9", "-r", "paradoxe:3", "-w", "1:00:00")
    bad = topo.hosts()[1]
    server.testbed.faults.reconfigure({"ko_nodes": [node_of(bad)]})
    topo = platform.deploy_hosts(topo)
    states = {h.id: h.state for h in topo.hosts()}
    assert states[bad.id] == HOST_KO and topo.host(bad.id).reason.startswith("Kadeploy KO")
    assert sum(state == HOST_OK for state in states.values()) == 2
    tries = [d for d in deployments(server) if node_of(bad) in d.nodes]
    assert len(tries) == 2 and tries[1].nodes == [node_of(bad)]  # retried once, alone
    assert not topo.host(bad.id).vms and not topo.unplaced
    assert sum(len(h.vms) for h in topo.hosts()) == 9
    assert all(vm.ip for vm in topo.vms())
    assert "paradoxe" in Grid5000Record.load(topo).deployed[0]
    # the run's timeline: every host's Kadeploy submitted, then seen ended (the KO one's second try too)
    for host in topo.hosts():
        times = times_of(host)
        assert times[DEPLOY_STARTED] <= times[DEPLOYED], host.id
    before = len(deployments(server))
    again = platform.deploy_hosts(topo)  # re-entrant: a KO host is not tried a third time
    assert len(deployments(server)) == before and again.host(bad.id).state == HOST_KO


def test_ko_nodes_whose_vms_do_not_fit_elsewhere_is_a_clear_error(server: ServerHandle) -> None:
    saved: list[Topology] = []
    platform = make_platform(server, checkpoint=saved.append)
    topo = reserved(platform, server, "-n", "150", "-t", '<vm mem="4096"/>', "-r", "paradoxe:2",
                    "-w", "1:00:00")
    server.testbed.faults.reconfigure({"ko_nodes": [node_of(topo.hosts()[0])]})
    with pytest.raises(DeploymentError, match=r"1 hosts failed Kadeploy twice .*their 75 VMs do not fit"):
        platform.deploy_hosts(topo)
    assert saved and saved[-1].hosts()[0].state == HOST_KO  # the record says which host failed


def test_deployed_hosts_are_not_deployed_again(server: ServerHandle, tmp_path: Path) -> None:
    marker = DeploymentMarker(LocalRunner, path=str(tmp_path / "deployed"))
    platform = make_platform(server, marker=marker)
    topo = reserved(platform, server, "-n", "2", "-r", "paradoxe:1", "-w", "1:00:00")
    platform.deploy_hosts(topo)
    assert len(deployments(server)) == 1
    assert parse_marker((tmp_path / "deployed").read_text())["environment"] == DEFAULT_ENVIRONMENT
    # a new run on the same host (e.g. -j): the marker says it is deployed with that environment
    fresh = Grid5000Record.load(topo)
    fresh.deployed, fresh.deployments = [], []
    fresh.save(topo)
    topo = platform.deploy_hosts(topo)
    assert len(deployments(server)) == 1 and topo.hosts()[0].state == HOST_OK
    # --forcedeploy deploys anyway
    fresh.options = fresh.options.with_(forcedeploy=True)
    fresh.save(topo)
    platform.deploy_hosts(topo)
    assert len(deployments(server)) == 2
    # the marker names the reservation: under another job the host is not provably deployed for it
    job = Grid5000Record.load(topo).jobs[0]
    assert parse_marker((tmp_path / "deployed").read_text())["jobs"] == f"{job.site}:{job.id}"
    later = Grid5000Record.load(topo)
    later.deployed, later.deployments = [], []
    later.options = later.options.with_(forcedeploy=False)
    later.jobs = [replace(j, id=j.id + 1) for j in later.jobs]
    later.save(topo)
    platform.deploy_hosts(topo)
    assert len(deployments(server)) == 3


def test_nodeploy_deploys_nothing(server: ServerHandle, platform: Grid5000Platform) -> None:
    request = request_for(server, "-n", "2", "-r", "paradoxe:1", "-w", "1:00:00", "--nodeploy")
    topo = platform.reserve(platform.plan(request.topology, request))
    topo = platform.deploy_hosts(platform.resources(platform.wait_running(topo)))
    assert deployments(server) == [] and topo.hosts()[0].state == HOST_OK


def test_environment_url_reaches_the_api(server: ServerHandle, platform: Grid5000Platform) -> None:
    # (the command line still wants -a to name a local file: the URL form is set on the request here)
    request = replace(request_for(server, "-n", "2", "-r", "paradoxe:1", "-w", "1:00:00"),
                      env_file="https://example.org/envs/mine.yaml")
    topo = platform.reserve(platform.plan(request.topology, request))
    platform.deploy_hosts(platform.resources(platform.wait_running(topo)))
    (deployment,) = deployments(server)
    assert deployment.environment == "https://example.org/envs/mine.yaml"
    assert deployment.key and server.testbed.files  # the run's key was sent (stored as a file by the API)


def test_environment_forms(tmp_path: Path) -> None:
    assert environment().spec("lyon") == "debian12-min"
    assert environment("alice:my-env").spec("lyon") == "my-env@alice"
    public = tmp_path / "public" / "envs"
    public.mkdir(parents=True)
    (public / "env.yaml").write_text("name: mine\n")
    env = environment(env_file=str(public / "env.yaml"), login="alice", home=tmp_path)
    assert env.spec("nancy") == "https://public.nancy.grid5000.fr/~alice/envs/env.yaml"
    with pytest.raises(UsageError, match="-a: the Kadeploy API reads environment descriptions from URLs"):
        environment(env_file=str(tmp_path / "elsewhere.yaml"), home=tmp_path)


def test_marker_round_trip() -> None:
    assert parse_marker(marker_text("debian12-min", "D-42")) == {"environment": "debian12-min",
                                                                 "deployment": "D-42"}
    assert parse_marker(marker_text("debian12-min", "D-42", "rennes:1001"))["jobs"] == "rennes:1001"
    assert parse_marker("garbage\n=x\n") == {}
