"""Fault matrix: a node dies during VM creation.

Injected by killing the node's init, by the PID the testbed records for it: the kernel then ends every
process of the node (sshd, libvirtd, its VMs), as a machine that loses power. vm5k reports that host KO and
its VMs KO with why (they are not moved: a VM whose host died mid-creation is reported, the rest of the
fleet is fine, and ``--resume`` gives them another chance on the hosts that are OK). A destroy while the
node is still dead says honestly that it could not clean it; once the node is back, a second destroy does.
"""

from __future__ import annotations

import os
import signal

import pytest
from vm5k_driver import (
    TINY,
    Runs,
    domains,
    hosts_of,
    leftovers,
    live_jobs,
    node_pid,
    record,
    restart_dead_nodes,
    run_id,
    ssh_vm,
    vms_of,
)

from lab_fixtures import LabTestbed

pytestmark = pytest.mark.integration

SITES = "rennes:3"


def test_a_node_dying_during_vm_creation_takes_only_its_vms_and_destroy_says_what_it_left(
        lab_testbed_factory, runs_on) -> None:  # type: ignore[no-untyped-def]
    testbed: LabTestbed = lab_testbed_factory(SITES)
    runs: Runs = runs_on(testbed)
    victim = testbed.nodes[2]
    out = runs.outdir()
    process = runs.start("-n", "3", "-r", SITES, "-w", "0:20:00", "-t", TINY, "-o", str(out), outdir=out)
    process.wait_for("vms: create and start the VMs", timeout=300)
    os.kill(node_pid(testbed, victim), signal.SIGKILL)
    done = process.finish(timeout=600)

    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    hosts = hosts_of(out)
    assert hosts[victim]["state"] == "KO" and "failed during VM creation" in hosts[victim]["reason"]
    vms = vms_of(out)
    lost = {vm for vm, row in vms.items() if row["host"] == victim}
    assert len(lost) == 1
    for vm, row in vms.items():
        if vm in lost:
            assert row["state"] == "KO" and f"host {victim} failed during VM creation" in row["reason"]
            assert f"VM {vm} (host {victim}) is KO: host {victim} failed" in done.stderr
        else:
            assert row["state"] == "OK" and ssh_vm(out, vm).stdout.strip() == vm
    assert record(out)["status"] == "failed" and record(out)["message"] == "1 VMs KO"
    run = run_id(out)
    (lost_vm,) = lost

    # resumed while the node is still dead: the lost VM goes to a host that is OK, and the fleet is whole
    resumed = runs.run("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"1 hosts failed earlier in this run ({victim}): their 1 VMs now run on the other hosts" \
        in resumed.stderr
    vms = vms_of(out)
    assert {row["state"] for row in vms.values()} == {"OK"} and vms[lost_vm]["host"] != victim
    assert ssh_vm(out, lost_vm).stdout.strip() == lost_vm
    assert record(out)["status"] == "done"

    # the node is still dead: destroy ends the reservation but must not claim the node is clean
    first = runs.run("--destroy", str(out))
    assert first.returncode == 1, first.stderr[-2000:]
    assert f"is not fully destroyed: {victim} could not be cleaned" in first.stderr
    assert record(out)["status"] == "failed" and record(out)["message"] == f"destroy incomplete on {victim}"
    assert live_jobs(testbed, "rennes", run) == []
    assert leftovers(testbed, run, [n for n in testbed.nodes if n != victim]) == {}

    # the job's end rebooted every node of it into the standard environment, the dead one included (as
    # Grid'5000 does): nothing of the run is left anywhere (seen with the testbed's admin config)
    restart_dead_nodes(testbed, SITES)  # a no-op: the reboot brought it back
    assert domains(testbed, victim, run) == [] and leftovers(testbed, run) == {}
