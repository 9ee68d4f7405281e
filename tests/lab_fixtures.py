"""Reusable pytest fixtures and helpers for tests that need a real testbed (`vm5k-testbed up`).

Registered for the whole suite by `pytest_plugins` in tests/conftest.py. A test asks for

    def test_something(lab_testbed: LabTestbed) -> None:          # rennes, 3 nodes, shared by the session
        lab_testbed.ssh(lab_testbed.nodes[0], "virsh list")

or builds its own layout, shared by every test asking for the same one:

    def test_multi_site(lab_testbed_factory) -> None:
        testbed = lab_testbed_factory("rennes:1,nancy:1")

Each testbed lives in its own state folder, /var/lib/vm5k-testbed/pytest-<pid>-<n>, is brought up through
the real command line and brought down at the end of the session whatever happened (a testbed left by a
killed session is brought down by the next one: its owner PID is recorded). Tests that use these fixtures
must be marked `@pytest.mark.integration` (they need root, namespaces, libvirt and QEMU).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

STATE_ROOT = Path("/var/lib/vm5k-testbed")
DEFAULT_SITES = os.environ.get("VM5K_LAB_SITES", "rennes:3")
OWNER_FILE = "pytest-owner.pid"
UP_TIMEOUT = 900


def run_testbed(*args: str, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run `vm5k-testbed ARGS` with this interpreter (the project's environment)."""
    return subprocess.run([sys.executable, "-m", "g5k_testbed.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def lab_available() -> str | None:
    """Why a testbed cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "nsenter", "unshare", "dnsmasq", "sshd", "libvirtd", "qemu-system-x86_64", "nc"):
        if shutil.which(tool) is None:
            return f"{tool} missing (run scripts/setup.sh)"
    from g5k_testbed.lab import cgroups
    if not cgroups.available():
        return "no memory cgroup controller (v1 or v2)"
    return None


@dataclass
class VM:
    """A VM a test booted by hand on a node (see `boot_tiny_vm`)."""

    name: str
    node: str
    mac: str
    ip: str
    folder: str


@dataclass
class LabTestbed:
    """A running testbed: its status (`vm5k-testbed status --json`) and ways to reach its nodes and VMs."""

    state_dir: Path
    status: dict[str, Any]
    vms: list[VM] = field(default_factory=list)

    @property
    def api(self) -> str:
        return self.status["api"]

    @property
    def ssh_config(self) -> str:
        return self.status["ssh_config"]

    @property
    def routing_ssh_config(self) -> str:
        """How to reach the nodes, no key: what a client under test uses, with a key of its own."""
        return self.status["routing_ssh_config"]

    @property
    def private_key(self) -> str:
        return self.status["private_key"]

    @property
    def image(self) -> str:
        return self.status["image"]

    @property
    def nodes(self) -> list[str]:
        return [node["name"] for node in self.status["nodes"]]

    def node(self, name: str) -> dict[str, Any]:
        return next(node for node in self.status["nodes"] if node["name"] == name)

    def refresh(self) -> dict[str, Any]:
        proc = run_testbed("status", "--json", "--state", str(self.state_dir), timeout=60)
        self.status = json.loads(proc.stdout)
        return self.status

    def wait_nodes_up(self, timeout: float = 300) -> None:
        """Until no node is being put back in the standard environment (the end of an earlier test's job
        reboots its nodes): a test that uses the nodes without a reservation of its own (``--hosts``) waits,
        as a Grid'5000 user waits for a node to be free."""
        deadline = time.monotonic() + timeout
        while any(node.get("state") != "up" for node in self.refresh()["nodes"]):
            if time.monotonic() > deadline:
                raise AssertionError(f"testbed nodes not up within {timeout:.0f} s: {self.status['nodes']}")
            time.sleep(0.5)

    def ssh(self, host: str, command: str | list[str], *, input: str | None = None, timeout: float = 120,
            check: bool = True, options: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        """`ssh -F <testbed config> root@host command` (a list is quoted for the remote shell)."""
        remote = command if isinstance(command, str) else shlex.join(command)
        argv = ["ssh", "-F", self.ssh_config, "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
                *(options or []), f"root@{host}", remote]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"ssh {host} {remote!r}: exit {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def ssh_vm(self, vm: VM, command: str, *, timeout: float = 60, check: bool = True
               ) -> subprocess.CompletedProcess[str]:
        """SSH to a VM through its node (ProxyJump), with the testbed key the VM's seed authorized."""
        return self.ssh(vm.ip, command, timeout=timeout, check=check, options=[
            "-J", f"root@{vm.node}", "-i", self.private_key, "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"])

    def grid5000(self) -> Any:
        """python-grid5000 pointed at this testbed's API (never the real Grid'5000)."""
        from grid5000 import Grid5000
        return Grid5000(uri=self.api)


# ------------------------------------------------------------------------------------------ VMs by hand
BRIDGE_SCRIPT = r"""
set -e
iface=$(ip -o -4 route show default | awk '{print $5}')
if [ "$iface" != br0 ]; then
    addr=$(ip -o -4 addr show dev "$iface" | awk '{print $4}')
    gw=$(ip -o -4 route show default | awk '{print $3}')
    ip link add br0 type bridge
    ip link set br0 up
    ip link set "$iface" master br0
    ip addr del "$addr" dev "$iface"
    ip addr add "$addr" dev br0
    ip route replace default via "$gw" dev br0
fi
"""


def domain_xml(name: str, mac: str, folder: str, boot: dict[str, Any], image_dir: str, memory_mib: int = 256
               ) -> str:
    """A lean TCG domain for the tiny image: direct kernel boot, virtio disk and seed, NIC on br0."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{image_dir}/{boot['kernel']}</kernel>
    <initrd>{image_dir}/{boot['initrd']}</initrd>
    <cmdline>{boot['cmdline']}</cmdline>
  </os>
  <features><acpi/><tcg><tb-cache unit='MiB'>64</tb-cache></tcg></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='unsafe'/>
      <source file='{folder}/disk.qcow2'/><target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{folder}/seed.iso'/><target dev='vdb' bus='virtio'/><readonly/>
    </disk>
    <interface type='bridge'><source bridge='br0'/><mac address='{mac}'/><model type='virtio'/></interface>
    <serial type='file'><source path='{folder}/serial.log'/><target port='0'/></serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
</domain>
"""


def prepare_bridge(testbed: LabTestbed, node: str) -> None:
    """A bridge br0 on the node's main interface, keeping its address (what vm5k does on a host)."""
    testbed.ssh(node, BRIDGE_SCRIPT)


def create_vm(testbed: LabTestbed, node: str, name: str, mac: str, ip: str, memory_mib: int = 256,
              image: str | None = None, user_data_extra: str = "") -> VM:
    """Disk (a qcow2 overlay of the default image, or `image`), cidata seed and domain on `node`; starts it.

    The seed authorizes the testbed key for root; `user_data_extra` is appended to the #cloud-config.
    """
    image = image or testbed.image
    boot = json.loads(testbed.ssh(node, ["cat", f"{image}.boot.json"]).stdout)
    folder = f"/tmp/lab-vms/{name}"
    key = Path(f"{testbed.private_key}.pub").read_text().strip()
    user_data = f"#cloud-config\nhostname: {name}\nssh_authorized_keys:\n  - {key}\n{user_data_extra}"
    meta_data = f"instance-id: {name}\nlocal-hostname: {name}\n"
    xml = domain_xml(name, mac, folder, boot, str(Path(image).parent), memory_mib)
    script = "\n".join([
        "set -e",
        f"mkdir -p {folder} && cd {folder}",
        f"qemu-img create -q -f qcow2 -F qcow2 -b {shlex.quote(image)} disk.qcow2 2G",
        f"printf %s {shlex.quote(user_data)} > user-data",
        f"printf %s {shlex.quote(meta_data)} > meta-data",
        "genisoimage -quiet -output seed.iso -volid cidata -joliet -rock user-data meta-data",
        f"printf %s {shlex.quote(xml)} > domain.xml",
        "virsh -q -c qemu:///system create domain.xml",
    ])
    testbed.ssh(node, script)
    vm = VM(name, node, mac, ip, folder)
    testbed.vms.append(vm)
    return vm


def serial(testbed: LabTestbed, vm: VM) -> str:
    return testbed.ssh(vm.node, f"cat {vm.folder}/serial.log", check=False).stdout


def wait_ready(testbed: LabTestbed, vm: VM, timeout: float = 180) -> float:
    """Seconds until the VM printed its `sshd up` marker and answers SSH through its node."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if "vm5k-guest: sshd up" in serial(testbed, vm):
            proc = testbed.ssh_vm(vm, "true", check=False, timeout=30)
            if proc.returncode == 0:
                return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"{vm.name} not ready after {timeout} s; console:\n{serial(testbed, vm)[-2000:]}")


def destroy_vm(testbed: LabTestbed, vm: VM) -> None:
    testbed.ssh(vm.node, f"virsh -q -c qemu:///system destroy {vm.name}; rm -rf {vm.folder}", check=False)
    if vm in testbed.vms:
        testbed.vms.remove(vm)


def subnet_pairs(cidr: str) -> list[tuple[str, str]]:
    """(IP, MAC) pairs of a reserved /22 with Grid'5000's rule (the testbed's DHCP knows them)."""
    import ipaddress
    pairs = []
    for address in ipaddress.IPv4Network(cidr).hosts():
        octets = address.packed
        pairs.append((str(address), f"00:16:3e:{octets[1]:02x}:{octets[2]:02x}:{octets[3]:02x}"))
    return pairs


# ------------------------------------------------------------------------------------------ up / down
def _clean_stale() -> None:
    """Bring down testbeds whose pytest session died without doing it."""
    if not STATE_ROOT.exists():
        return
    for folder in STATE_ROOT.glob("pytest-*"):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (FileNotFoundError, ValueError):
            continue
        if Path(f"/proc/{owner}").exists():
            continue
        run_testbed("down", "--state", str(folder), timeout=300)
        shutil.rmtree(folder, ignore_errors=True)


def bring_up(state_dir: Path, sites: str, extra: list[str] | None = None) -> LabTestbed:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / OWNER_FILE).write_text(str(os.getpid()))
    proc = run_testbed("up", "--site", sites, "--state", str(state_dir), "--json", *(extra or []))
    if proc.returncode != 0:
        down = run_testbed("down", "--state", str(state_dir), timeout=300)
        shutil.rmtree(state_dir, ignore_errors=True)
        raise AssertionError(f"vm5k-testbed up --site {sites} failed ({proc.returncode}):\n"
                             f"{proc.stderr[-3000:]}\n(down: {down.returncode} {down.stderr[-500:]})")
    return LabTestbed(state_dir, json.loads(proc.stdout))


def bring_down(testbed: LabTestbed) -> subprocess.CompletedProcess[str]:
    proc = run_testbed("down", "--state", str(testbed.state_dir), timeout=300)
    shutil.rmtree(testbed.state_dir, ignore_errors=True)
    return proc


@pytest.fixture(scope="session")
def lab_testbed_factory() -> Iterator[Callable[[str], LabTestbed]]:
    """`factory(sites)` → a testbed for that layout, shared by the session, brought down at its end."""
    reason = lab_available()
    if reason:
        pytest.skip(f"no testbed on this machine: {reason}")
    _clean_stale()
    made: dict[str, LabTestbed] = {}

    def factory(sites: str = DEFAULT_SITES, extra: tuple[str, ...] = ()) -> LabTestbed:
        key = f"{sites} {' '.join(extra)}"
        if key not in made:
            state_dir = STATE_ROOT / f"pytest-{os.getpid()}-{len(made)}"
            made[key] = bring_up(state_dir, sites, list(extra))
        return made[key]

    try:
        yield factory
    finally:
        for testbed in made.values():
            bring_down(testbed)


@pytest.fixture(scope="session")
def lab_testbed(lab_testbed_factory: Callable[..., LabTestbed]) -> LabTestbed:
    """The session's default testbed: 3 nodes of rennes (VM5K_LAB_SITES overrides), API with /_testbed/."""
    return lab_testbed_factory(DEFAULT_SITES, ("--api-arg=--admin",))
