"""A node dies while its VMs are being created: its VMs are KO with the reason, the other node's are fine.

A testbed of its own (the dead node would spoil the session's shared one), brought down at the end of the
session. "Dies" is the node's network going away (its bridge set down from inside), as a crashed or
unplugged machine looks from the frontend: every SSH connection to it stalls, then fails.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest
from tests.hypervisor.test_testbed_vms import (
    SITE,
    g5k_pairs,
    make_key,
    openssh_vm,
    reserve_subnet,
    site_network,
    ssh_settings,
    tiny_vm,
)

from lab_fixtures import LabTestbed
from vm5k.hypervisor import RunSettings, VmNetwork, deploy_vms, destroy_run, setup_hosts, setup_service
from vm5k.hypervisor.state import meta
from vm5k.remote import SshRunner
from vm5k.retry import RetryPolicy
from vm5k.topology import HOST_KO, HOST_OK, VM_KO, VM_OK, Host, Topology

pytestmark = pytest.mark.integration

#: The bridge goes down a second later, from a detached shell: the command that sets it returns first.
CUT = "nohup sh -c 'sleep 1; ip link set br0 down' >/dev/null 2>&1 &"


def test_a_node_dying_during_vm_creation(lab_testbed_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    testbed: LabTestbed = lab_testbed_factory("rennes:2", ("--node-memory", "6G"))
    alive, doomed = testbed.nodes[:2]
    network, gateway = site_network(testbed)
    job = reserve_subnet(testbed, "hv-node-dies")
    pairs = g5k_pairs(job.resources_by_type["subnets"][0])
    key, public = make_key(tmp_path)
    settings = RunSettings(run_id="hvdie", public_key=public, private_key=str(key), boot_timeout=240,
                           service_node=alive, network=VmNetwork(mode="subnet", cidr=network, gateway=gateway,
                                                                 service_address=pairs[-1][0]))
    ssh = replace(ssh_settings(testbed, tmp_path), connect_timeout=8, keepalive_interval=3,
                  keepalive_count_max=2, connect_retry=RetryPolicy(attempts=2, initial_delay=1))
    topo = Topology()
    for node in (alive, doomed):
        topo.add_host(SITE, "paradoxe", Host(node))
    for index, node in enumerate([alive, alive, doomed, doomed]):
        topo.place(tiny_vm(testbed, f"vm-{index + 1}", *pairs[40 + index]), node)

    async def scenario() -> Topology:
        async with SshRunner(ssh) as runner:
            current = await setup_hosts(topo, runner, settings)
            current = await setup_service(current, runner, settings)
            deploying = asyncio.create_task(deploy_vms(current, runner, settings))
            deadline = time.monotonic() + 300
            while "vm5k_hvdie_" not in testbed.ssh(doomed, "virsh -q -c qemu:///system list --name").stdout:
                assert time.monotonic() < deadline and not deploying.done()
                await asyncio.sleep(0.5)
            testbed.ssh(doomed, CUT)
            return await deploying

    started = time.monotonic()
    try:
        topo = asyncio.run(scenario())
        elapsed = time.monotonic() - started
        host = topo.host(doomed)
        assert host.state == HOST_KO and "failed during VM creation" in (host.reason or "")
        for vm in topo.host(doomed).vms:
            assert vm.state == VM_KO and f"host {doomed} failed during VM creation" in (vm.reason or "")
        assert topo.host(alive).state == HOST_OK
        for vm in topo.host(alive).vms:
            assert vm.state == VM_OK, vm.reason
            assert openssh_vm(testbed, vm, key, "hostname").stdout.strip() == vm.id
        assert elapsed < 400  # the dead node is given up on, not waited for until the boot timeout
    finally:
        async def clean() -> Topology:
            async with SshRunner(ssh) as runner:
                return await destroy_run(topo, runner, settings)
        topo = asyncio.run(clean())
        job.delete()
    assert doomed in meta(topo).get("destroy_failed", {})  # said, not hidden
    assert "vm5k_hvdie_" not in testbed.ssh(alive, "virsh -q -c qemu:///system list --all --name").stdout
