"""VMs on the testbed's nodes: the production DHCP of reserved subnets, a VM booted by hand, memory limits.

The VM is booted the way any client would: a qcow2 overlay of /grid5000/virt-images/debian12-x64-min.qcow2,
a cidata seed, a libvirt domain XML of the test's own (vm5k's engine is not involved), a MAC of a /22
reserved through the API; it must get its address from the site's DHCP and answer SSH through its node.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest

from g5k_testbed.lab.cgroups import memory_file
from g5k_testbed.lab.layout import Layout
from lab_fixtures import LabTestbed, create_vm, destroy_vm, prepare_bridge, serial, subnet_pairs, wait_ready
from waiting import wait_for

pytestmark = pytest.mark.integration



def reserve(testbed: LabTestbed, resources: str, name: str):  # type: ignore[no-untyped-def]
    site = testbed.grid5000().sites["rennes"]
    job = site.jobs.create({"resources": f"{resources},walltime=0:30:00", "command": "sleep 3600",
                            "name": name})
    wait_for(lambda: (job.refresh(), job.state)[1] == "running", 60)
    return job


DHCP_PROBE = """
set -e
dev=$(ip -o -4 route show default | awk '{{print $5}}')
ip link add lab-dhcp link "$dev" address {mac} type macvlan mode bridge
ip link set lab-dhcp up
busybox udhcpc -i lab-dhcp -n -q -f -t 3 -T 1 -s /bin/true 2>&1 || true
ip link del lab-dhcp
"""


def dhcp_offer(testbed: LabTestbed, node: str, mac: str) -> str | None:
    """The address the production DHCP gives to `mac` (asked from a node), None when it stays silent."""
    out = testbed.ssh(node, DHCP_PROBE.format(mac=mac), timeout=60).stdout
    for line in out.splitlines():
        if "lease of" in line:
            return line.split("lease of")[1].split()[0]
    return None


def test_production_dhcp_serves_exactly_the_reserved_pairs(lab_testbed: LabTestbed) -> None:
    node = lab_testbed.nodes[0]
    job = reserve(lab_testbed, "slash_22=1", "lab-dhcp")
    try:
        cidr = job.resources_by_type["subnets"][0]
        pairs = subnet_pairs(cidr)
        ip, mac = pairs[41]
        assert dhcp_offer(lab_testbed, node, mac) == ip
        assert dhcp_offer(lab_testbed, node, mac.upper()) == ip  # MACs compare case-insensitively
        unreserved_mac = subnet_pairs(_next_block(cidr))[7][1]  # Grid'5000's rule, but nobody holds it
        assert dhcp_offer(lab_testbed, node, unreserved_mac) is None
        assert dhcp_offer(lab_testbed, node, "52:54:00:12:34:56") is None
    finally:
        job.delete()
    wait_for(lambda: dhcp_offer(lab_testbed, node, mac) is None, 30, 1)


def _next_block(cidr: str) -> str:
    import ipaddress
    network = ipaddress.IPv4Network(cidr)
    return str(ipaddress.IPv4Network((int(network.network_address) + network.num_addresses, 22)))


def test_vm_gets_its_address_by_dhcp_and_answers_ssh_through_its_node(lab_testbed: LabTestbed) -> None:
    node = lab_testbed.nodes[1]
    job = reserve(lab_testbed, f"{{network_address in ('{node}')}}/nodes=1+slash_22=1", "lab-vm")
    vm = None
    try:
        ip, mac = subnet_pairs(job.resources_by_type["subnets"][0])[10]
        prepare_bridge(lab_testbed, node)
        vm = create_vm(lab_testbed, node, "lab-vm-1", mac, ip)
        seconds = wait_ready(lab_testbed, vm)
        console = serial(lab_testbed, vm)
        assert f"ip={ip}" in console and "-----BEGIN SSH HOST KEY KEYS-----" in console
        assert lab_testbed.ssh_vm(vm, "hostname").stdout.strip() == "lab-vm-1"
        assert lab_testbed.ssh_vm(vm, f"ip -4 addr show eth0 | grep -c 'inet {ip}/14'").stdout.strip() == "1"
        started = float(lab_testbed.ssh_vm(vm, "cat /run/vm5k/sshd-started").stdout)
        assert 0 < started < seconds + 60
        # Names of nodes resolve from VMs (the site's DNS, handed out by DHCP); the node reaches its VM.
        other = lab_testbed.node(lab_testbed.nodes[0])
        lookup = lab_testbed.ssh_vm(vm, f"nslookup {other['name']}").stdout
        assert other["ip"] in lookup
        assert lab_testbed.ssh(node, f"ping -c 1 -W 5 {ip}", check=False).returncode == 0
        # QEMU runs inside the node (its cgroup), not beside it.
        testbed_id = lab_testbed.refresh()["testbed_id"]
        procs = Path(f"/sys/fs/cgroup/memory/vm5k-testbed/{testbed_id}/{node.split('.')[0]}/cgroup.procs")
        comms = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in procs.read_text().split()
                 if Path(f"/proc/{pid}/comm").exists()}
        assert any(comm.startswith("qemu") for comm in comms)
    finally:
        if vm is not None:
            destroy_vm(lab_testbed, vm)
        job.delete()


def oom_kills(cgroup: Path) -> int:
    for line in memory_file(cgroup, "events").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def test_a_vm_beyond_its_node_memory_fails_alone(lab_testbed: LabTestbed) -> None:
    node = lab_testbed.nodes[1]
    cgroup = Layout(lab_testbed.state_dir).node_cgroup(node.split(".")[0])
    limit_file = memory_file(cgroup, "limit")
    original = limit_file.read_text().strip()
    job = reserve(lab_testbed, f"{{network_address in ('{node}')}}/nodes=1+slash_22=1", "lab-oom")
    vm = None
    try:
        ip, mac = subnet_pairs(job.resources_by_type["subnets"][0])[12]
        prepare_bridge(lab_testbed, node)
        vm = create_vm(lab_testbed, node, "lab-vm-big", mac, ip, memory_mib=768)
        wait_ready(lab_testbed, vm)
        usage = int(memory_file(cgroup, "usage").read_text())
        limit_file.write_text(str(usage + (200 << 20)))
        kills_before = oom_kills(cgroup)
        fill = ("mkdir -p /mnt/fill && mount -t tmpfs -o size=600m tmpfs /mnt/fill && "
                "dd if=/dev/zero of=/mnt/fill/zero bs=1M count=550")
        with contextlib.suppress(subprocess.TimeoutExpired):  # the VM dies under it: its session may hang
            lab_testbed.ssh_vm(vm, fill, check=False, timeout=90)

        def stopped() -> bool:
            state = lab_testbed.ssh(node, f"virsh -c qemu:///system domstate {vm.name}", check=False)
            return state.returncode != 0 or "running" not in state.stdout

        wait_for(stopped, 120, 1)
        assert oom_kills(cgroup) > kills_before  # the kernel's OOM killer, inside the node's cgroup
        assert lab_testbed.ssh(node, "hostname").stdout.strip() == node  # the node itself survived
    finally:
        limit_file.write_text(original)
        if vm is not None:
            destroy_vm(lab_testbed, vm)
        job.delete()
