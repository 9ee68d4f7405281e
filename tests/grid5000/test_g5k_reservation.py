"""Real reservations on the testbed's API: submit, wait running, hosts and IP/MAC pairs, -j, destroy."""

from __future__ import annotations

import ipaddress
import logging

import pytest
from g5k_helpers import T0, jobs_on, make_platform, request_for
from grid5000 import Grid5000

from g5k_testbed.http_server import ServerHandle
from vm5k.addresses import AddressPool, grid5000_mac, same_mac
from vm5k.errors import PlatformError, UsageError
from vm5k.platforms import ProgressReport
from vm5k.platforms.grid5000 import Grid5000Platform
from vm5k.platforms.grid5000.hosts import node_of
from vm5k.platforms.grid5000.oar import job_payload, submit_job
from vm5k.platforms.grid5000.planning import SECURITY_MARGIN
from vm5k.platforms.grid5000.record import Grid5000Record
from vm5k.topology import HOST_OK, Topology


def run_until_resources(platform: Grid5000Platform, server: ServerHandle, *args: str) -> Topology:
    request = request_for(server, *args)
    topo = platform.plan(request.topology, request)
    topo = platform.reserve(topo)
    topo = platform.wait_running(topo)
    return platform.resources(topo)


def test_reservation_runs_with_hosts_and_pairs_then_destroy(server: ServerHandle) -> None:
    reports: list[ProgressReport] = []
    platform = make_platform(server, progress=reports.append)
    topo = run_until_resources(platform, server, "-n", "30", "-r", "rennes:2,nancy:1", "-w", "1:00:00")
    record = Grid5000Record.load(topo)
    assert sorted(j.site for j in record.jobs) == ["nancy", "rennes"]
    assert all(j.state == "running" for j in record.jobs)
    assert reports and reports[-1].message == "2 jobs running"
    # the hosts are the jobs' nodes, with their reference hardware
    held = {job.uid: job for oar in server.testbed.oar.values() for job in oar.jobs.values()}
    expected = sorted(n for j in record.jobs for n in held[j.id].nodes)
    assert sorted(h.id for h in topo.hosts()) == expected
    assert all(h.capacity is not None and h.capacity.ram > 0 for h in topo.hosts())
    # every VM placed, with a pair from its site's subnets, Grid'5000's MAC rule, no pair twice
    pool = AddressPool.from_dict(topo.meta["address_pool"])
    index = topo.host_index()
    assert len(topo.vms()) == 30 and not topo.unplaced
    for vm in topo.vms():
        site = index[vm.host][0].id
        subnets = [ipaddress.ip_network(c) for j in record.jobs if j.site == site for c in held[j.id].subnets]
        assert any(ipaddress.ip_address(vm.ip) in net for net in subnets)
        assert same_mac(vm.mac, grid5000_mac(vm.ip))
        assert pool.range_for(site).valid(vm.ip, vm.mac)
    assert len({vm.ip for vm in topo.vms()}) == 30
    service = topo.meta["service_address"]  # the run's DNS/DHCP address: in the pool, no VM's
    assert any(service in r.reserved for r in pool.ranges) and service not in {vm.ip for vm in topo.vms()}
    # destroy kills the jobs and waits until they are gone
    topo = platform.destroy(topo)
    assert jobs_on(server) == []
    assert all(j.state == "error" for j in Grid5000Record.load(topo).jobs)


def test_steps_are_reentrant(server: ServerHandle, platform: Grid5000Platform) -> None:
    topo = run_until_resources(platform, server, "-n", "12", "-r", "rennes:2", "-w", "1:00:00")
    pairs = {vm.id: (vm.host, vm.ip, vm.mac) for vm in topo.vms()}
    again = platform.resources(platform.wait_running(platform.reserve(topo)))
    assert {vm.id: (vm.host, vm.ip, vm.mac) for vm in again.vms()} == pairs
    assert len(jobs_on(server)) == 1


def test_future_reservation_is_dated_in_paris_time_and_waited_for(server: ServerHandle) -> None:
    gk = Grid5000(uri=server.url)
    gk.sites["lyon"].jobs.create({"resources": "{cluster='taurus'}/nodes=ALL,walltime=3:00:00",
                                  "command": "sleep 86400", "name": "someone-else"})
    server.advance(2)
    reports: list[ProgressReport] = []
    platform = make_platform(server, progress=reports.append)
    request = request_for(server, "-n", "4", "-r", "taurus:2", "-w", "1:00:00")
    topo = platform.reserve(platform.plan(request.topology, request))
    (job,) = Grid5000Record.load(topo).jobs
    server_job = server.testbed.find_job("lyon", job.id)
    assert server_job.reservation == T0 + 3 * 3600 + SECURITY_MARGIN
    topo = platform.wait_running(topo)
    assert server_job.state == "running"
    waiting = [r for r in reports if r.items and r.items[0].state == "waiting"]
    assert waiting and waiting[0].items[0].start == T0 + 3 * 3600 + SECURITY_MARGIN
    assert waiting[0].items[0].left is not None and waiting[0].items[0].left > 3 * 3600 - 10


def test_could_run_at_is_followed(server: ServerHandle, platform: Grid5000Platform) -> None:
    bob = Grid5000(uri=server.url)
    bob.session.headers["X-Api-User-CN"] = "bob"
    bob.sites["lyon"].jobs.create({"resources": "{cluster='taurus'}/nodes=ALL,walltime=1:00:00",
                                   "command": "sleep 86400", "name": "bob-1"})
    request = request_for(server, "-n", "4", "-r", "taurus:12", "-w", "1:00:00")
    topo = platform.plan(request.topology, request)
    planned = Grid5000Record.load(topo).plan.start
    assert planned == T0 + 3600 + SECURITY_MARGIN
    # meanwhile bob reserves one taurus node just before our start
    bob.sites["lyon"].jobs.create({"resources": "{cluster='taurus'}/nodes=1,walltime=1:00:00",
                                   "reservation": "2023-11-15 00:13:50", "name": "bob-2"})
    topo = platform.reserve(topo)
    (job,) = Grid5000Record.load(topo).jobs
    start = server.testbed.find_job("lyon", job.id).scheduled_at
    assert start >= T0 + 3600 + 30 + 3600  # after bob's second job
    assert len(jobs_on(server, f"vm5k-{topo.meta['run_id']}")) == 1


def test_five_refusals_in_a_row_stop_with_oars_answer_and_no_job(
        server: ServerHandle, platform: Grid5000Platform, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Each time vm5k is about to submit, bob takes a taurus node at vm5k's planned start: OAR refuses,
    vm5k plans again from the date OAR proposes, five times, then stops with OAR's answer."""
    from vm5k.platforms.grid5000 import platform as platform_module
    from vm5k.platforms.grid5000.oar import ReservationRefused, paris_date

    bob = Grid5000(uri=server.url)
    bob.session.headers["X-Api-User-CN"] = "bob"
    bob.sites["lyon"].jobs.create({"resources": "{cluster='taurus'}/nodes=ALL,walltime=1:00:00",
                                   "command": "sleep 86400", "name": "bob-busy"})
    real_submit = platform_module.submit_plan
    taken: list[int] = []

    def bob_first(api, plan, how):  # type: ignore[no-untyped-def]
        taken.append(plan.start)
        bob.sites["lyon"].jobs.create({"resources": "{cluster='taurus'}/nodes=1,walltime=1:00:00",
                                       "reservation": paris_date(plan.start), "name": f"bob-{len(taken)}"})
        return real_submit(api, plan, how)

    monkeypatch.setattr(platform_module, "submit_plan", bob_first)
    request = request_for(server, "-n", "4", "-r", "taurus:12", "-w", "1:00:00")
    topo = platform.plan(request.topology, request)
    with caplog.at_level(logging.INFO, logger="vm5k"), \
            pytest.raises(ReservationRefused, match="OAR on lyon refused the reservation"):
        platform.reserve(topo)
    assert len(taken) == 5 and taken == sorted(set(taken))  # five tries, each later than the last
    assert caplog.text.count("planning again from") == 4
    assert jobs_on(server, f"vm5k-{topo.meta['run_id']}") == []


def test_one_site_failing_deletes_the_others(server: ServerHandle, platform: Grid5000Platform) -> None:
    request = request_for(server, "-n", "4", "-r", "rennes:1,nancy:1", "-w", "1:00:00")
    topo = platform.plan(request.topology, request)
    record = Grid5000Record.load(topo)
    record.plan.sites["nancy"].clusters = {"nosuchcluster": 1}  # what OAR on nancy will refuse
    record.save(topo)
    with pytest.raises(PlatformError, match="nancy"):
        platform.reserve(topo)
    assert jobs_on(server) == []


def test_unrecorded_jobs_of_the_run_are_never_reused(server: ServerHandle,
                                                     platform: Grid5000Platform) -> None:
    request = request_for(server, "-n", "4", "-r", "rennes:1", "-w", "1:00:00")
    topo = platform.plan(request.topology, request)
    name = f"vm5k-{topo.meta['run_id']}"
    orphan = submit_job(platform.api, "rennes", job_payload("nodes=1,walltime=1:00:00", name, start=None))
    topo = platform.reserve(topo)
    (job,) = Grid5000Record.load(topo).jobs
    assert job.id != int(orphan["uid"])
    assert [j.uid for j in jobs_on(server, name)] == [job.id]


def test_job_option_forms(server: ServerHandle, platform: Grid5000Platform) -> None:
    mine = {}
    for site in ("rennes", "nancy"):
        payload = job_payload("nodes=2+slash_22=1,walltime=2:00:00", "mine", start=None)
        mine[site] = int(submit_job(platform.api, site, payload)["uid"])
    server.advance(5)
    both = f"rennes:{mine['rennes']},nancy:{mine['nancy']}"
    for form in (str(mine["rennes"]), f"rennes:{mine['rennes']}", both):
        request = request_for(server, "-n", "6", "-j", form)
        topo = platform.plan(request.topology, request)
        record = Grid5000Record.load(topo)
        assert all(j.given for j in record.jobs)
        assert "Using existing jobs:" in platform.plan_text(topo)
        assert len(topo.hosts()) == 2 * len(record.jobs) and not topo.unplaced
    topo = platform.resources(platform.wait_running(platform.reserve(topo)))
    assert all(vm.ip and vm.mac for vm in topo.vms())
    platform.destroy(topo)  # given jobs are not ours to kill
    assert len(jobs_on(server, "mine")) == 2
    with pytest.raises(UsageError, match="no site holds a job 999999"):
        platform.plan(request_for(server, "-n", "2", "-j", "999999").topology, request_for(server, "-n", "2",
                                                                                            "-j", "999999"))


def test_kavlan_reservation_renames_hosts_and_serves_own_macs(server: ServerHandle,
                                                              platform: Grid5000Platform) -> None:
    topo = run_until_resources(platform, server, "-n", "8", "-r", "rennes:2", "-k", "-w", "1:00:00")
    record = Grid5000Record.load(topo)
    assert record.vlan is not None and record.vlan in {str(v) for v in range(4, 10)}
    for host in topo.hosts():
        node = node_of(host)
        assert host.id == node.replace(".rennes.", f"-kavlan-{record.vlan}.rennes.")
    pool = AddressPool.from_dict(topo.meta["address_pool"])
    (rng,) = pool.ranges
    assert rng.kind == "kavlan" and rng.dhcp == "vm5k"
    for vm in topo.vms():
        assert vm.mac.lower().startswith("02:56:") and rng.valid(vm.ip, vm.mac)
        assert ipaddress.ip_address(vm.ip) in ipaddress.ip_network(rng.network)
    topo = platform.deploy_hosts(topo)
    assert all(h.state == HOST_OK for h in topo.hosts())
    for host in topo.hosts():  # Kadeploy put the nodes into the vlan
        assert server.testbed.kavlan.vlan_of(node_of(host)) == record.vlan
