"""With API faults injected, a reservation still succeeds, exactly once.

The testbed's fault injection answers a share of calls with 500/502/504 (nothing done), executes a share
of POSTs and DELETEs but loses their reply (a 5xx after the fact), and slows some replies down.
"""

from __future__ import annotations

import pytest
from g5k_helpers import jobs_on, make_platform, make_server, request_for

from g5k_testbed.faults import FaultConfig
from vm5k.platforms.grid5000.record import Grid5000Record
from vm5k.topology import HOST_OK


def all_jobs_named(server, name):  # every job ever created with that name, whatever its state
    return [job for oar in server.testbed.oar.values() for job in oar.jobs.values() if job.name == name]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_whole_platform_run_with_20_percent_faults(seed: int) -> None:
    faults = FaultConfig(error_rate=0.2, lost_reply_rate=0.2, slow_rate=0.1, slow_seconds=0.05, seed=seed)
    server = make_server(faults=faults)
    try:
        platform = make_platform(server)
        request = request_for(server, "-n", "20", "-r", "rennes:2,nancy:1,lyon:1", "-w", "1:00:00")
        topo = platform.plan(request.topology, request)
        topo = platform.reserve(topo)
        topo = platform.wait_running(topo)
        topo = platform.resources(topo)
        topo = platform.deploy_hosts(topo)
        name = f"vm5k-{topo.meta['run_id']}"
        created = all_jobs_named(server, name)
        # exactly one job per site was ever created, and it is the one recorded
        assert sorted(job.site for job in created) == ["lyon", "nancy", "rennes"]
        assert sorted(j.id for j in Grid5000Record.load(topo).jobs) == sorted(job.uid for job in created)
        assert all(h.state == HOST_OK for h in topo.hosts())
        assert all(vm.ip and vm.mac for vm in topo.vms())
        injected = server.testbed.faults.injected
        assert injected["errors"] > 0 and injected["slow"] > 0
        topo = platform.destroy(topo)
        assert jobs_on(server, name) == []
    finally:
        server.stop()


def test_every_submission_reply_lost_still_gives_one_job() -> None:
    server = make_server(faults=FaultConfig(lost_reply_rate=1.0, error_codes=[502]))
    try:
        platform = make_platform(server)
        request = request_for(server, "-n", "4", "-r", "rennes:1,nancy:1", "-w", "1:00:00")
        topo = platform.reserve(platform.plan(request.topology, request))
        name = f"vm5k-{topo.meta['run_id']}"
        assert server.testbed.faults.injected["lost_replies"] >= 2
        assert sorted(job.site for job in all_jobs_named(server, name)) == ["nancy", "rennes"]
        topo = platform.deploy_hosts(platform.resources(platform.wait_running(topo)))
        deployments = [d for site in server.testbed.deployments.values() for d in site.values()]
        assert len(deployments) == 2  # the lost deployment replies were found again, not resent
        platform.destroy(topo)
        assert jobs_on(server, name) == []
    finally:
        server.stop()
