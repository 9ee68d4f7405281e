"""Fault matrix: the SSH connection to a host drops in the middle of a step.

Injected on the node itself: the sshd processes serving vm5k's connections are killed (by PID: every
connection handler of the node's sshd except the one running the injection), once while the hosts are
being set up and once while the VMs boot, each time on another node. vm5k reconnects and goes on; since
its remote steps are idempotent, nothing is done twice (one domain per VM) and the run succeeds.
"""

from __future__ import annotations

import re
import time

import pytest
from vm5k_driver import TINY, Runs, domains, drop_ssh_connections, record, run_id, ssh_vm, vms_of

from lab_fixtures import LabTestbed

pytestmark = pytest.mark.integration


def test_dropped_connections_are_reopened_and_the_run_goes_on(testbed: LabTestbed, runs: Runs) -> None:
    first, second = testbed.nodes[:2]
    out = runs.outdir()
    # -v: the log then shows every SSH connection vm5k opens
    process = runs.start("-v", "-n", "2", "-r", "rennes:2", "-w", "0:20:00", "-t", TINY, "-o", str(out),
                         outdir=out)
    process.wait_for("hosts: 0/", timeout=300)
    # Counted before the drop: vm5k may reconnect before the drop's own SSH command has returned.
    connects_before = {first: connects(process.new_log(), first)}
    assert drop_ssh_connections(testbed, first) >= 1
    process.wait_for("vms: create and start the VMs", timeout=300)
    time.sleep(2)  # the VMs are being created and probed through their hosts' connections
    connects_before[second] = connects(process.new_log(), second)
    assert drop_ssh_connections(testbed, second) >= 1
    done = process.finish(timeout=600)

    assert done.returncode == 0, done.stderr[-3000:]
    assert record(out)["status"] == "done"
    vms = vms_of(out)
    assert {vm["state"] for vm in vms.values()} == {"OK"}
    for vm in vms:
        assert ssh_vm(out, vm).stdout.strip() == vm
    # Each host was connected to again after its connection dropped: the connection dropped is one
    # counted before the drop, or one opened after the count; either way one more connect follows it.
    log = process.new_log()
    for node, before in connects_before.items():
        assert connects(log, node) >= max(before, 1) + 1, (node, before)
    # idempotent steps: one domain per VM, none twice
    run = run_id(out)
    for node in (first, second):
        assert domains(testbed, node, run) == sorted(f"vm5k_{run}_{vm}" for vm, row in vms.items()
                                                     if row["host"] == node)


def connects(log: str, node: str) -> int:
    """How many SSH connections to `node` vm5k opened, as its -v log says."""
    return len(re.findall(rf"ssh connect {re.escape(node)} ", log))
