"""Fault matrix: two vm5k runs at once on the same hosts.

Both runs are started together on the same two nodes (``--hosts``: hosts you already have, so nothing
gives them separate machines), each with its own block of addresses, and the same VM names. They must not
clash: every name and path a run creates carries its run id (libvirt domains, the per-host run folder, the
dnsmasq and its address, the resolver line), and destroying one leaves the other's VMs running and
answering.
"""

from __future__ import annotations

import pytest
from vm5k_driver import TINY, Runs, domains, leftovers, node_script, record, run_id, ssh_vm, vms_of

from lab_fixtures import LabTestbed

pytestmark = pytest.mark.integration

BLOCKS = ("10.156.248.0/22", "10.156.244.0/22")  # in rennes' VM network, outside what OAR hands out here


def test_two_runs_at_once_on_the_same_hosts_never_touch_each_other(testbed: LabTestbed, runs: Runs) -> None:
    subnet = testbed.grid5000().sites["rennes"].g5ksubnet
    hosts = testbed.nodes[:2]
    testbed.wait_nodes_up()
    outs = [runs.outdir(f"run-{index}") for index in range(2)]
    processes = [
        runs.start("--hosts", ",".join(hosts), "--ssh-config", testbed.ssh_config, "--vm-network",
                   f"{subnet['network']},gateway={subnet['gateway']},block={block},mac=local",
                   "-n", "2", "-t", TINY, "-o", str(out), outdir=out)
        for out, block in zip(outs, BLOCKS, strict=True)]
    for process in processes:
        done = process.finish(timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    first, second = (run_id(out) for out in outs)
    assert first != second
    rows = [vms_of(out) for out in outs]
    assert set(rows[0]) == set(rows[1]) == {"vm-1", "vm-2"}  # the same VM names in both runs
    addresses = [{(row["ip"], row["mac"].lower()) for row in run.values()} for run in rows]
    assert not addresses[0] & addresses[1]
    # per-run names and folders on every host
    for node in hosts:
        for run, vms in ((first, rows[0]), (second, rows[1])):
            assert domains(testbed, node, run) == sorted(f"vm5k_{run}_{vm}" for vm, row in vms.items()
                                                         if row["host"] == node)
            assert node_script(testbed, node, f"test -d /tmp/vm5k/runs/{run}").returncode == 0

    # destroying the first run leaves the second one whole
    destroyed = runs.run("--destroy", str(outs[0]))
    assert destroyed.returncode == 0, destroyed.stderr[-3000:]
    assert record(outs[0])["status"] == "destroyed"
    assert leftovers(testbed, first) == {}
    for node in hosts:
        assert len(domains(testbed, node, second)) == sum(row["host"] == node for row in rows[1].values())
        running = node_script(testbed, node, "virsh -q -c qemu:///system list --name --state-running").stdout
        assert all(f"vm5k_{second}_{vm}" in running for vm, row in rows[1].items() if row["host"] == node)
    for vm in rows[1]:
        assert ssh_vm(outs[1], vm).stdout.strip() == vm
    # its names are still served by its own dnsmasq
    assert rows[1]["vm-2"]["ip"] in ssh_vm(outs[1], "vm-1", "nslookup vm-2").stdout
