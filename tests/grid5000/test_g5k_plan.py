"""Dry-run plans against the testbed's API: what would be reserved, when, and where the VMs would go."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from g5k_helpers import T0, jobs_on, request_for
from grid5000 import Grid5000

from g5k_testbed.http_server import ServerHandle
from vm5k.cli import parse_request
from vm5k.errors import EXIT_USAGE, UsageError
from vm5k.platforms.grid5000 import Grid5000Platform
from vm5k.platforms.grid5000.oar import paris_date
from vm5k.platforms.grid5000.planning import SECURITY_MARGIN
from vm5k.platforms.grid5000.record import Grid5000Record
from vm5k.request import Request

RESOURCE_LINE = re.compile(r"^(\{[^}]*\}/nodes=\d+\+?)+(slash_22=\d+|\{type='kavlan(-global)?'\}/vlan=1)?"
                           r",walltime=\d+:\d\d:\d\d$")


def plan(platform: Grid5000Platform, server: ServerHandle, *args: str) -> tuple[Grid5000Record, str, object]:
    request = request_for(server, *args)
    topo = platform.plan(request.topology, request)
    return Grid5000Record.load(topo), platform.plan_text(topo), topo


def file_request(server: ServerHandle, tmp_path: Path, xml: str) -> Request:
    """The Request of ``vm5k -i <a file holding xml> -w 1:00:00`` against the testbed's API."""
    path = tmp_path / "topo.xml"
    path.write_text(xml)
    request, _ = parse_request(["-i", str(path), "-w", "1:00:00", "-o", str(tmp_path / "out"),
                                "--api", server.url])
    return request


def test_rennes_vm_sized_plan_prints_start_request_and_placement(platform: Grid5000Platform,
                                                                   server: ServerHandle) -> None:
    record, text, topo = plan(platform, server, "-n", "100", "-r", "rennes", "-w", "1:00:00")
    assert record.plan is not None
    assert record.plan.now == T0 and record.plan.start == T0  # the server's clock, not this machine's
    assert list(record.plan.sites) == ["rennes"]
    site = record.plan.sites["rennes"]
    assert site.subnets == (22, 1) and site.vlan is None
    lines = text.splitlines()
    end = paris_date(T0 + 3600)
    assert f"Start: {paris_date(T0)} Europe/Paris (now), walltime 1:00:00, end {end}" in lines
    resources = site.resources(3600)
    assert resources in lines  # the exact OAR string, alone on its line
    assert RESOURCE_LINE.match(resources)
    assert "Would place 100 VMs:" in lines
    assert len(topo.unplaced) == 0 and sum(len(h.vms) for h in topo.hosts()) == 100
    assert all(h.id.endswith(".rennes.grid5000.fr") for h in topo.hosts())
    assert jobs_on(server) == []  # a plan submits nothing


def test_grid5000_count_takes_one_site_and_biggest_hosts(platform: Grid5000Platform,
                                                         server: ServerHandle) -> None:
    record, text, topo = plan(platform, server, "-n", "20", "-r", "grid5000:3", "-w", "0:30:00")
    assert record.plan is not None and len(record.plan.sites) == 1
    (site,) = record.plan.sites.values()
    assert site.node_count == 3 and len(topo.hosts()) == 3
    assert site.resources(1800) in text.splitlines()


def test_multi_site_counts_add_up(platform: Grid5000Platform, server: ServerHandle) -> None:
    record, text, topo = plan(platform, server, "-n", "10", "-r", "rennes:2,nancy:3", "-w", "1:00:00")
    assert record.plan is not None
    assert {s: p.node_count for s, p in record.plan.sites.items()} == {"rennes": 2, "nancy": 3}
    assert all(p.subnets == (22, 1) for p in record.plan.sites.values())
    for site in record.plan.sites.values():
        assert site.resources(3600) in text.splitlines()
        assert f"OAR job on {site.site} (types deploy, name vm5k-{topo.meta['run_id']}):" in text.splitlines()


def test_cluster_inside_its_site_is_extra(platform: Grid5000Platform, server: ServerHandle) -> None:
    record, _, topo = plan(platform, server, "-n", "10", "-r", "taurus:4,lyon:10", "-b", "taurus-3",
                           "-w", "1:00:00")
    assert record.plan is not None
    lyon = record.plan.sites["lyon"]
    assert lyon.node_count == 14 and lyon.clusters["taurus"] >= 4
    assert "taurus-3.lyon.grid5000.fr" not in {h.id for h in topo.hosts()}
    assert "host not in ('taurus-3.lyon.grid5000.fr')" in lyon.resources(3600)


def test_kavlan_one_site_routed_several_sites_global(platform: Grid5000Platform,
                                                     server: ServerHandle) -> None:
    record, text, _ = plan(platform, server, "-n", "10", "-r", "rennes:2", "-k", "-w", "1:00:00")
    assert record.plan is not None
    assert record.plan.sites["rennes"].vlan == "kavlan" and record.plan.sites["rennes"].subnets is None
    assert "{type='kavlan'}/vlan=1" in text
    record, text, _ = plan(platform, server, "-n", "10", "-r", "rennes:2,nancy:1", "-k", "-w", "1:00:00")
    assert record.plan is not None
    assert {s: p.vlan for s, p in record.plan.sites.items()} == {"rennes": "kavlan-global", "nancy": None}
    assert "{type='kavlan-global'}/vlan=1" in text


def test_busy_cluster_plans_after_the_jobs_in_paris_time(platform: Grid5000Platform,
                                                         server: ServerHandle) -> None:
    gk = Grid5000(uri=server.url)
    gk.sites["lyon"].jobs.create({"resources": "{cluster='taurus'}/nodes=ALL,walltime=2:00:00",
                                  "command": "sleep 86400", "name": "someone-else"})
    server.advance(2)
    record, text, _ = plan(platform, server, "-n", "4", "-r", "taurus:2", "-w", "1:00:00")
    assert record.plan is not None
    start = T0 + 7200 + SECURITY_MARGIN
    assert record.plan.start == start
    assert "OAR job on lyon (types deploy, name vm5k-" in text
    assert f"reservation {paris_date(start)}):" in text
    assert "(in 2:00:58)" in text  # from the server's now (T0 + 2), the job started at T0


def test_dead_nodes_are_never_planned(server: ServerHandle, platform: Grid5000Platform) -> None:
    dead = [f"paradoxe-{i}.rennes.grid5000.fr" for i in (1, 2, 3)]
    server.testbed.faults.reconfigure({"dead_nodes": dead})
    _, _, topo = plan(platform, server, "-n", "10", "-r", "paradoxe:4", "-w", "1:00:00")
    assert not {h.id for h in topo.hosts()} & set(dead)


@pytest.mark.parametrize(("resources", "message"), [
    ("sagittaire:2", "cluster sagittaire cannot run VMs (supported_job_types.virtual is false on its nodes)"),
    ("grvingt:1", "cluster grvingt is not in the default queue"),
    ("nowhere", "unknown Grid'5000 element 'nowhere'"),
    ("paradoxe:500", "-r asks for 500 nodes on cluster paradoxe: only 64 usable nodes"),
])
def test_unusable_requests_are_usage_errors(platform: Grid5000Platform, server: ServerHandle, resources: str,
                                            message: str) -> None:
    with pytest.raises(UsageError) as caught:
        plan(platform, server, "-n", "4", "-r", resources, "-w", "1:00:00")
    assert message in str(caught.value)
    assert caught.value.exit_status == EXIT_USAGE and "\n" not in str(caught.value)


def test_exotic_clusters_only_when_named(platform: Grid5000Platform, server: ServerHandle) -> None:
    _, _, topo = plan(platform, server, "-n", "1000", "-r", "lyon", "-w", "1:00:00")
    clusters = {cluster.id for site in topo.sites for cluster in site.clusters}
    assert clusters == {"nova"}  # the biggest non-exotic hosts; neowise (512 GiB, exotic) would win otherwise
    with pytest.raises(UsageError, match="every usable node would not do: not enough capacity: 2000 VMs"):
        plan(platform, server, "-n", "2000", "-r", "lyon", "-w", "1:00:00")
    record, text, _ = plan(platform, server, "-n", "2", "-r", "neowise:1", "-w", "1:00:00")
    assert record.plan is not None and record.plan.sites["lyon"].exotic
    assert "types deploy,exotic" in text


def test_topology_file_names_its_hosts(platform: Grid5000Platform, server: ServerHandle, tmp_path) -> None:
    request = file_request(server, tmp_path,
                           '<vm5k><site id="lyon"><cluster id="taurus"><host id="taurus-5">'
                           '<vm id="a" mem="2048"/><vm id="b"/></host></cluster></site>'
                           '<site id="nancy"><cluster id="gros"><host id="gros-7.nancy.grid5000.fr"/>'
                           '</cluster></site><vm id="c"/></vm5k>')
    topo = platform.plan(request.topology, request)
    record = Grid5000Record.load(topo)
    assert record.plan is not None
    assert record.plan.sites["lyon"].hosts == ("taurus-5.lyon.grid5000.fr",)
    assert record.plan.sites["nancy"].hosts == ("gros-7.nancy.grid5000.fr",)
    named = "{network_address in ('taurus-5.lyon.grid5000.fr')}/nodes=1"
    assert named in record.plan.sites["lyon"].resources(60)
    assert [vm.id for vm in topo.host("taurus-5.lyon.grid5000.fr").vms][:2] == ["a", "b"]
    assert topo.vm("c").host is not None


def test_plan_is_reentrant_once_reserved(platform: Grid5000Platform, server: ServerHandle) -> None:
    request = request_for(server, "-n", "4", "-r", "rennes:1", "-w", "1:00:00")
    topo = platform.reserve(platform.plan(request.topology, request))
    again = platform.plan(topo)
    assert Grid5000Record.load(again).jobs == Grid5000Record.load(topo).jobs
    assert len(jobs_on(server)) == 1


def test_hardware_for_max_vms(platform: Grid5000Platform, server: ServerHandle) -> None:
    hosts = platform.hardware(request_for(server, "-r", "lyon", "-b", "taurus-3", "-w", "1:00:00"))
    names = {h.id for h in hosts}
    assert "taurus-1.lyon.grid5000.fr" in names and "taurus-3.lyon.grid5000.fr" not in names
    assert not any(n.startswith(("sagittaire", "neowise")) for n in names)  # no VMs there / exotic
    assert all(h.capacity is not None and h.capacity.ram > 0 for h in hosts)


def test_a_named_host_oar_reports_dead_gives_its_vms_to_another_node_of_its_cluster(
        platform: Grid5000Platform, server: ServerHandle, tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    dead = "taurus-5.lyon.grid5000.fr"
    server.testbed.faults.reconfigure({"dead_nodes": [dead]})
    gk = Grid5000(uri=server.url)  # taurus-1 is busy for two hours: the substitute is free now
    gk.sites["lyon"].jobs.create({"resources": "{network_address in ('taurus-1.lyon.grid5000.fr')}/nodes=1,"
                                  "walltime=2:00:00", "command": "sleep 86400", "name": "someone-else"})
    server.advance(2)
    request = file_request(server, tmp_path, '<vm5k><site id="lyon"><cluster id="taurus">'
                           '<host id="taurus-5"><vm id="a" mem="2048"/><vm id="b"/></host>'
                           '<host id="taurus-6"><vm id="c"/></host></cluster></site></vm5k>')
    topo = platform.plan(request.topology, request)
    record = Grid5000Record.load(topo)
    assert record.plan is not None and record.plan.start == T0 + 2  # now: not after the busy node
    hosts = record.plan.sites["lyon"].hosts
    assert dead not in hosts and "taurus-6.lyon.grid5000.fr" in hosts and len(hosts) == 2
    (substitute,) = set(hosts) - {"taurus-6.lyon.grid5000.fr"}
    assert substitute.startswith("taurus-") and substitute != "taurus-1.lyon.grid5000.fr"
    assert [vm.id for vm in topo.host(substitute).vms] == ["a", "b"]  # the file's group, kept together
    assert topo.host(substitute).extra["replaces"] == "taurus-5"
    assert f"host {dead} is dead in OAR: its 2 VMs go to {substitute} (same cluster) instead" in caplog.text


def test_a_named_host_is_remapped_only_when_its_cluster_has_another_node(
        platform: Grid5000Platform, server: ServerHandle, tmp_path) -> None:
    taurus = [f"taurus-{i}.lyon.grid5000.fr" for i in range(1, 17)]
    server.testbed.faults.reconfigure({"dead_nodes": taurus})
    request = file_request(server, tmp_path, '<vm5k><site id="lyon"><cluster id="taurus">'
                           '<host id="taurus-5"><vm id="a"/></host></cluster></site></vm5k>')
    with pytest.raises(UsageError) as caught:
        platform.plan(request.topology, request)
    assert ("host taurus-5.lyon.grid5000.fr is dead in OAR and no other node of cluster taurus can take its "
            "1 VMs") in str(caught.value)
