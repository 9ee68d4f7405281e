"""The hypervisor engine on the testbed's nodes: real hosts (SSH only), real libvirt, real VMs (TCG here).

One deployment per test, built by hand as the workflow would: a topology of two testbed nodes, IP/MAC pairs
of a /22 reserved through the testbed's API with python-grid5000 (subnet mode: the site's DHCP serves them),
the run's own ed25519 key. The tests check what a user would: every VM answers SSH with the run's key
(OpenSSH through its node, as ``ssh -J``), names resolve through the service node from hosts and VMs, a VM
that cannot come up is recreated once then reported KO with its console, a second run on the same hosts does
not clash, and destroy leaves nothing of the run on the nodes. Everything is destroyed even when a check
fails.
"""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from lab_fixtures import LabTestbed
from vm5k.hypervisor import (
    RunSettings,
    VmNetwork,
    deploy_vms,
    destroy_run,
    ko_vms,
    setup_hosts,
    setup_service,
)
from vm5k.hypervisor.layout import HostLayout
from vm5k.hypervisor.state import meta
from vm5k.remote import SshRunner, SshSettings
from vm5k.topology import HOST_OK, VM, VM_KO, VM_OK, Host, Topology

pytestmark = pytest.mark.integration

SITE = "rennes"
BOOT_TIMEOUT = 240  # generous: CI machines run other tests at the same time (TCG is CPU-bound)
BAD_TIMEOUT = 60  # long enough for the guest to print its boot lines on a loaded machine


def tiny_vm(testbed: LabTestbed, name: str, ip: str, mac: str) -> VM:
    """A VM of the testbed's tiny image: 256 MiB, a 2 GiB disk."""
    return VM(name, mem=256, hdd=2, backing_file=testbed.image, ip=ip, mac=mac)


def make_key(folder: Path) -> tuple[Path, str]:
    key = asyncssh.generate_private_key("ssh-ed25519", comment="vm5k-test-run")
    private = folder / "id_ed25519"
    private.write_bytes(key.export_private_key())
    private.chmod(0o600)
    return private, key.export_public_key().decode().strip()


def g5k_pairs(cidr: str) -> list[tuple[str, str]]:
    """Grid'5000's MAC rule over a block (the site's DHCP serves these pairs for reserved /22s)."""
    pairs = []
    for address in ipaddress.IPv4Network(cidr).hosts():
        octets = address.packed
        pairs.append((str(address), f"00:16:3e:{octets[1]:02x}:{octets[2]:02x}:{octets[3]:02x}"))
    return pairs


def reserve_subnet(testbed: LabTestbed, name: str) -> Any:
    site = testbed.grid5000().sites[SITE]
    job = site.jobs.create({"resources": "slash_22=1,walltime=0:30:00", "command": "sleep 1800",
                            "name": name})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job.refresh()
        if job.state == "running":
            return job
        time.sleep(0.5)
    job.delete()
    raise AssertionError(f"the subnet job did not start: {job.state}")


def site_network(testbed: LabTestbed) -> tuple[str, str]:
    subnet = testbed.grid5000().sites[SITE].g5ksubnet
    return subnet["network"], subnet["gateway"]


def ssh_settings(testbed: LabTestbed, folder: Path) -> SshSettings:
    return SshSettings(config_files=(Path(testbed.ssh_config),), known_hosts=folder / "known_hosts",
                       record_new_host_keys=True, command_timeout=600)


def openssh_vm(testbed: LabTestbed, vm: VM, key: Path, command: str) -> subprocess.CompletedProcess[str]:
    """What a user types: ssh to the VM as root with the run's key, jumping through its host."""
    return subprocess.run(
        ["ssh", "-F", testbed.ssh_config, "-J", f"root@{vm.host}", "-i", str(key), "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=30", f"root@{vm.ip}", command],
        capture_output=True, text=True, timeout=120, check=False)


def known_hosts_lines(folder: Path, address: str) -> list[str]:
    """The run's recorded host-key lines for a VM's address (port 22: the bare address)."""
    return [line for line in (folder / "known_hosts").read_text().splitlines()
            if line.split(" ", 1)[0] == address]


def leftovers(testbed: LabTestbed, node: str, layout: HostLayout) -> str:
    """What the run left on a node: its domains, its folder, its dnsmasq, its resolver line."""
    script = (f"virsh -q -c qemu:///system list --all --name | grep -F {layout.domain_prefix} ; "
              f"ls -d {layout.run_dir} 2>/dev/null ; "
              f"pgrep -af '[d]nsmasq --conf-file={layout.dnsmasq_dir}' ; "
              f"grep -F 'vm5k run {layout.run_id}' /etc/resolv.conf ; true")
    return testbed.ssh(node, script).stdout.strip()


class Deployment:
    """One run of the engine's steps against the testbed, recording progress."""

    def __init__(self, testbed: LabTestbed, folder: Path, settings: RunSettings) -> None:
        self.testbed = testbed
        self.ssh = ssh_settings(testbed, folder)
        self.settings = settings
        self.events: list[tuple[str, int, int, str]] = []

    def progress(self, step: str, done: int, total: int, message: str) -> None:
        self.events.append((step, done, total, message))

    def run(self, topo: Topology, *steps: Callable[..., Any],
            settings: RunSettings | None = None) -> Topology:
        async def go() -> Topology:
            current = topo
            async with SshRunner(self.ssh) as ssh:
                for step in steps:
                    current = await step(current, ssh, settings or self.settings, self.progress)
            return current
        return asyncio.run(go())

    def destroy(self, topo: Topology) -> Topology:
        return self.run(topo, destroy_run)


def test_subnet_mode_vms_on_two_nodes(lab_testbed: LabTestbed, tmp_path: Path) -> None:
    nodes = lab_testbed.nodes[:2]
    network, gateway = site_network(lab_testbed)
    job = reserve_subnet(lab_testbed, "hv-subnet")
    cidr = job.resources_by_type["subnets"][0]
    pairs = g5k_pairs(cidr)
    key, public = make_key(tmp_path)
    settings = RunSettings(run_id="hvt1", public_key=public, private_key=str(key), boot_timeout=BOOT_TIMEOUT,
                           network=VmNetwork(mode="subnet", cidr=network, gateway=gateway,
                                             service_address=pairs[-1][0]))
    run = Deployment(lab_testbed, tmp_path, settings)
    topo = Topology()
    for node in nodes:
        topo.add_host(SITE, "paradoxe", Host(node))
    for index, host in enumerate([nodes[0], nodes[0], nodes[1]]):
        ip, mac = pairs[20 + index]
        topo.place(tiny_vm(lab_testbed, f"vm-{index + 1}", ip, mac), host)
    second = None
    try:
        topo = run.run(topo, setup_hosts, setup_service, deploy_vms)

        # hosts: ready, facts recorded, the accelerator decided (TCG here: /dev/kvm is PVM)
        for host in topo.hosts():
            assert host.state == HOST_OK, host.reason
            assert host.extra["accel"] == "tcg" and host.extra["bridge"] == "br0" and host.extra["nproc"] >= 1
        assert meta(topo)["service_node"] in nodes and meta(topo)["dns_server"] == pairs[-1][0]

        # every VM answers SSH with the run's key, under its own name
        assert ko_vms(topo) == [], [vm.reason for vm in ko_vms(topo)]
        for vm in topo.vms():
            assert vm.state == VM_OK and vm.extra["stage"] == "login"
            assert openssh_vm(lab_testbed, vm, key, "hostname").stdout.strip() == vm.id
        assert any(event[0] == "vms" and event[1] == event[2] == 3 for event in run.events)

        # names resolve through the service node, from every host and from the VMs
        for node in nodes:
            for vm in topo.vms():
                assert lab_testbed.ssh(node, ["getent", "hosts", vm.id]).stdout.split()[0] == vm.ip
        vm1, vm3 = topo.vm("vm-1"), topo.vm("vm-3")
        assert vm3.ip in openssh_vm(lab_testbed, vm1, key, "nslookup vm-3").stdout
        assert vm1.ip in openssh_vm(lab_testbed, vm3, key, "nslookup vm-1").stdout

        # a VM that never gets its address: recreated once, then KO with its console; the others are kept
        unknown_ip, unknown_mac = g5k_pairs("10.159.252.0/22")[4]  # nobody reserved it: the DHCP stays silent
        topo.place(tiny_vm(lab_testbed, "vm-bad", unknown_ip, unknown_mac), nodes[1])
        started = time.monotonic()
        topo = run.run(topo, setup_service, deploy_vms, settings=replace(settings, boot_timeout=BAD_TIMEOUT))
        bad = topo.vm("vm-bad")
        assert bad.state == VM_KO and bad.extra["attempts"] == 2
        assert "no SSH login after 2 attempts" in (bad.reason or "") and "console: " in (bad.reason or "")
        assert "vm5k-guest" in (bad.reason or "")  # the console's last lines
        assert time.monotonic() - started < 2 * BAD_TIMEOUT + 120
        assert [vm.id for vm in ko_vms(topo)] == ["vm-bad"]
        assert all(topo.vm(f"vm-{i}").state == VM_OK for i in (1, 2, 3))  # kept, not recreated
        assert "vm-bad" in lab_testbed.ssh(nodes[0], ["getent", "hosts", "vm-bad"]).stdout  # SIGHUP'd names

        # a second run on the same hosts: its own domains, folder, DNS server; no clash either way
        other_settings = replace(settings, run_id="hvt2", network=replace(settings.network,
                                                                          service_address=pairs[-2][0]))
        second = Deployment(lab_testbed, tmp_path, other_settings)
        other = Topology()
        for node in nodes:
            other.add_host(SITE, "paradoxe", Host(node))
        other.place(tiny_vm(lab_testbed, "vm-1", *pairs[30]), nodes[1])
        other = second.run(other, setup_hosts, setup_service, deploy_vms)
        assert ko_vms(other) == [], [vm.reason for vm in ko_vms(other)]
        assert meta(other)["dns_server"] == pairs[-2][0]
        other_vm = other.vm("vm-1")
        assert openssh_vm(lab_testbed, other_vm, key, "hostname").stdout.strip() == "vm-1"
        other = second.destroy(other)
        second = None
        assert leftovers(lab_testbed, nodes[1], other_settings.layout) == ""

        # the same address again in a later run (same outdir): a new instance makes new host keys, and its
        # recorded line is replaced instead of refusing the VM as an impostor
        old_line = known_hosts_lines(tmp_path, other_vm.ip)
        assert len(old_line) == 1
        third_settings = replace(other_settings, run_id="hvt3")
        second, other = Deployment(lab_testbed, tmp_path, third_settings), Topology()
        other.add_host(SITE, "paradoxe", Host(nodes[1]))
        other.place(tiny_vm(lab_testbed, "vm-1", *pairs[30]), nodes[1])
        other = second.run(other, setup_hosts, setup_service, deploy_vms)
        assert ko_vms(other) == [], [vm.reason for vm in ko_vms(other)]
        new_line = known_hosts_lines(tmp_path, other_vm.ip)
        assert len(new_line) == 1 and new_line != old_line
        other = second.destroy(other)
        second = None
        for vm in topo.vms():  # the first run is untouched
            if vm.state == VM_OK:
                assert openssh_vm(lab_testbed, vm, key, "true").returncode == 0
        assert lab_testbed.ssh(nodes[1], ["getent", "hosts", "vm-3"]).stdout.split()[0] == vm3.ip
    finally:
        if second is not None:
            second.destroy(other)
        topo = run.destroy(topo)
        job.delete()
    assert "destroy_failed" not in meta(topo)
    for node in nodes:
        assert leftovers(lab_testbed, node, settings.layout) == ""
        domains = lab_testbed.ssh(node, "virsh -q -c qemu:///system list --all --name").stdout
        assert "vm5k_hvt1_" not in domains
        # the shared image cache stays for the next run
        assert lab_testbed.ssh(node, f"ls {settings.layout.images_dir}").stdout.strip() != ""
