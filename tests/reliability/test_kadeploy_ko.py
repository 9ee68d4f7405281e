"""Fault matrix: one of 3 nodes comes back KO from Kadeploy.

Injected with the testbed's ``ko_nodes`` fault (its Kadeploy reports that node KO at the step a real
deployment fails at). vm5k deploys it a second time alone, then excludes it: its VMs go to the other hosts
when they fit; when they do not, the run stops with one clear line and leaves the job running, as
documented (``vm5k --destroy OUTDIR`` ends it).
"""

from __future__ import annotations

import pytest
from vm5k_driver import TINY, Runs, admin, domains, hosts_of, live_jobs, record, run_id, ssh_vm, state, vms_of

from lab_fixtures import LabTestbed

pytestmark = pytest.mark.integration


def test_a_ko_node_is_deployed_twice_then_excluded_and_its_vms_run_on_the_others(
        testbed: LabTestbed, runs: Runs) -> None:
    ko = testbed.nodes[2]
    admin(testbed, "PATCH", "faults", {"ko_nodes": [ko]})
    out = runs.outdir()
    done = runs.run("-n", "3", "-r", "rennes:3", "-w", "0:20:00", "-t", TINY, "--forcedeploy", "-o", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    hosts = hosts_of(out)
    assert hosts[ko]["state"] == "KO" and "Kadeploy KO" in hosts[ko]["reason"]
    assert hosts[ko].get("vms", []) == []
    # deployed once with the others, once more alone, then given up
    deployments = state(out)["meta"]["grid5000"]["deployments"]
    tries = [(d["attempt"], ko in d["nodes"], len(d["nodes"])) for d in deployments]
    assert tries == [(1, True, 3), (2, True, 1)]
    assert all(ko in d["ko"] for d in deployments)
    assert f"1 hosts failed Kadeploy twice and are excluded: {ko}" in (out / "vm5k.log").read_text()
    # its VM runs on another host, and every VM answers
    vms = vms_of(out)
    assert {vm["state"] for vm in vms.values()} == {"OK"} and len(vms) == 3
    assert ko not in {vm["host"] for vm in vms.values()}
    assert ko not in (out / "hosts.list").read_text().split()
    for vm in vms:
        assert ssh_vm(out, vm).stdout.strip() == vm
    assert domains(testbed, ko, run_id(out)) == []
    assert len(live_jobs(testbed, "rennes", run_id(out))) == 1


def test_when_the_vms_of_a_ko_node_do_not_fit_elsewhere_the_run_stops_clearly_and_keeps_the_job(
        testbed: LabTestbed, runs: Runs) -> None:
    ko = testbed.nodes[2]
    admin(testbed, "PATCH", "faults", {"ko_nodes": [ko]})
    out = runs.outdir()
    big = '<vm mem="300000" hdd="2" n_cpu="1"/>'  # one per node: paradoxe has 384 GiB
    done = runs.run("-n", "3", "-r", "rennes:3", "-w", "0:20:00", "-t", big, "--forcedeploy", "-o", str(out))
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (error,) = done.error_lines
    assert f"1 hosts failed Kadeploy twice ({ko}); their 1 VMs do not fit on the 2 others" in error
    assert "the jobs are left running: vm5k --destroy OUTDIR ends them" in error
    run = record(out)
    assert run["status"] == "failed" and run["message"].startswith("hosts: ")
    assert f"vm5k --destroy {out}" in (out / "vm5k.log").read_text()
    # the job is left, as said; no VM was started anywhere
    assert len(live_jobs(testbed, "rennes", run_id(out))) == 1
    for node in testbed.nodes:
        assert domains(testbed, node, run_id(out)) == []
    # the recorded state is true: the KO host and its unplaced VM
    assert hosts_of(out)[ko]["state"] == "KO"
    placed = sum(len(host.get("vms", [])) for host in hosts_of(out).values())
    assert placed + len(state(out).get("unplaced", [])) == 3
