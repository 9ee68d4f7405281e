"""Changes to a running fleet on its hosts: stop, start, reboot and reset VMs, each waited until true.

Why here and not in the VMs step: these act on VMs that already exist (their domain XML, seed and disk are
on their host), one host at a time in parallel, over the same SSH layer; the VMs step creates them. Each
operation returns, per VM, None (it is done: a stopped VM's domain is shut off; a started, rebooted or
reset VM accepts the run's key) or the one-line reason it is not, and sets the VM's state in the topology:

- ``stop``: an ACPI shutdown (``virsh shutdown``), the domain forced off (``virsh destroy``) when it is
  still running after `grace` seconds; the VM's state becomes ``stopped`` (not KO: the user asked for it);
- ``start``: the domain defined again from the run's XML on the host and started; ``OK`` once it answers;
- ``reboot``: a stop then a start (a new QEMU process: the guest's uptime starts again);
- ``reset``: the domain forced off, its disk made again from the backing file (same id, IP, MAC, host),
  its seed remade, then started; the VM makes new host keys, so its old ``known_hosts`` line is forgotten.

>>> parse_stopped("ok vm5k_r1_vm-1 clean\\nko vm5k_r1_vm-2 still running\\n", HostLayout("r1"))
{'vm-1': None, 'vm-2': 'still running'}
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import asyncssh

from vm5k.errors import RemoteError
from vm5k.hypervisor import lifecycle
from vm5k.hypervisor.disks import VmFiles, parse_prepare, prepare_command
from vm5k.hypervisor.layout import HostLayout
from vm5k.hypervisor.readiness import VmProber
from vm5k.hypervisor.runtime import provisioned as is_provisioned
from vm5k.hypervisor.settings import RunSettings
from vm5k.hypervisor.state import mark_vm_ko, meta, short
from vm5k.remote import TunnelRunner
from vm5k.timeline import ANSWERED, CREATED, STARTED, stamp
from vm5k.topology import VM, VM_OK, VM_STOPPED, Topology

log = logging.getLogger(__name__)

PROBE_INTERVAL = 1.0
OPERATIONS = ("stop", "start", "reboot", "reset")

#: $1 grace seconds, then domain names. Asks each domain to shut down (ACPI), waits until every one is
#: shut off or the grace is over, forces the rest off. Prints "ok <name> clean|forced" or "ko <name> <why>".
STOP_SCRIPT = r"""
set -u
grace=$1
shift
virsh="virsh -q -c qemu:///system"
for name in "$@"; do
    [ "$($virsh domstate "$name" 2>/dev/null)" = running ] && $virsh shutdown "$name" >/dev/null 2>&1
done
end=$(( $(date +%s) + grace ))
while :; do
    left=0
    for name in "$@"; do [ "$($virsh domstate "$name" 2>/dev/null)" = running ] && left=1; done
    [ "$left" = 0 ] && break
    [ "$(date +%s)" -ge "$end" ] && break
    sleep 0.5
done
for name in "$@"; do
    state=$($virsh domstate "$name" 2>&1)
    case "$state" in
        "shut off") echo "ok $name clean" ;;
        running|paused|"in shutdown")
            $virsh destroy "$name" >/dev/null 2>&1
            if [ "$($virsh domstate "$name" 2>/dev/null)" = "shut off" ]; then echo "ok $name forced"
            else echo "ko $name still running after a forced stop"; fi ;;
        *) echo "ko $name $(printf '%s' "$state" | tr '\n' ' ' | tail -c 200)" ;;
    esac
done
"""


def stop_command(layout: HostLayout, vm_ids: Iterable[str], grace: float) -> list[str]:
    """Shut these VMs down, forced after `grace` seconds (0: forced at once)."""
    return ["sh", "-c", STOP_SCRIPT, "vm5k-stop", str(max(0, int(grace))),
            *(layout.domain_name(vm) for vm in vm_ids)]


def parse_stopped(stdout: str, layout: HostLayout) -> dict[str, str | None]:
    """VM id → None (shut off) or the reason, from `STOP_SCRIPT`'s output."""
    outcome: dict[str, str | None] = {}
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        name, _, detail = rest.partition(" ")
        vm = layout.vm_of_domain(name)
        if vm is not None:
            outcome[vm] = None if word == "ok" else (detail.strip() or "failed")
    return outcome


class FleetChange:
    """One operation on some VMs of a topology, host by host in parallel (see the module docstring)."""

    def __init__(self, topo: Topology, ssh: TunnelRunner, settings: RunSettings) -> None:
        self.topo = topo
        self.ssh = ssh
        self.settings = settings
        self.layout = settings.layout
        self.prober = VmProber(ssh, settings.private_key, settings.vm_user)

    async def apply(self, operation: str, vms: list[VM], grace: float) -> dict[str, str | None]:
        steps: dict[str, Callable[[str, list[VM]], Awaitable[dict[str, str | None]]]] = {
            "stop": lambda host, mine: self.stop(host, mine, grace),
            "start": self.start,
            "reboot": lambda host, mine: self.reboot(host, mine, grace),
            "reset": self.reset,
        }
        by_host: dict[str, list[VM]] = {}
        for vm in vms:
            if vm.host is None:
                raise RemoteError(f"{vm.id} is on no host")
            by_host.setdefault(vm.host, []).append(vm)
        outcomes = await asyncio.gather(*(steps[operation](host, mine) for host, mine in by_host.items()))
        result: dict[str, str | None] = {}
        for outcome in outcomes:
            result.update(outcome)
        for vm in vms:
            why = result.setdefault(vm.id, "no outcome")
            if why is not None:
                mark_vm_ko(vm, f"{operation}: {why}")
            elif operation == "stop":
                vm.state, vm.reason = VM_STOPPED, None
            else:
                vm.state, vm.reason = VM_OK, None
        return result

    async def _run(self, host: str, command: list[str], timeout: float) -> str:
        """The command's output; a `RemoteError` (the reason for every VM of the host) when it failed."""
        result = (await self.ssh.run([host], command, timeout=timeout))[0]
        if not result.ok:
            raise RemoteError(f"on {host}: {result.describe()}")
        return result.stdout

    async def stop(self, host: str, vms: list[VM], grace: float) -> dict[str, str | None]:
        try:
            out = await self._run(host, stop_command(self.layout, [vm.id for vm in vms], grace), grace + 120)
        except RemoteError as error:
            return {vm.id: str(error) for vm in vms}
        outcome = parse_stopped(out, self.layout)
        forced = [line.split()[1] for line in out.splitlines() if line.endswith(" forced")]
        if forced:
            log.info("%s: forced off after %.0f s: %s", host, grace, ", ".join(forced))
        return {vm.id: outcome.get(vm.id, "no outcome from the stop script") for vm in vms}

    async def start(self, host: str, vms: list[VM]) -> dict[str, str | None]:
        try:
            out = await self._run(host, lifecycle.start_command(self.layout, [vm.id for vm in vms]), 300)
        except RemoteError as error:
            return {vm.id: str(error) for vm in vms}
        started = lifecycle.parse_outcome(out, self.layout)
        outcome: dict[str, str | None] = {vm.id: started.get(vm.id, "no outcome from the start script")
                                          for vm in vms}
        waits = [vm for vm in vms if outcome[vm.id] is None]
        for vm in waits:
            stamp(vm, STARTED)
        answers = await asyncio.gather(*(self.wait_login(host, vm) for vm in waits))
        outcome.update({vm.id: why for vm, why in zip(waits, answers, strict=True)})
        return outcome

    async def reboot(self, host: str, vms: list[VM], grace: float) -> dict[str, str | None]:
        stopped = await self.stop(host, vms, grace)
        down = [vm for vm in vms if stopped[vm.id] is None]
        outcome: dict[str, str | None] = {vm.id: f"stop: {why}" for vm in vms
                                          if (why := stopped[vm.id]) is not None}
        outcome.update(await self.start(host, down) if down else {})
        return outcome

    async def reset(self, host: str, vms: list[VM]) -> dict[str, str | None]:
        stopped = await self.stop(host, vms, 0)
        down = [vm for vm in vms if stopped[vm.id] is None]
        outcome: dict[str, str | None] = {vm.id: f"stop: {why}" for vm in vms
                                          if (why := stopped[vm.id]) is not None}
        if not down:
            return outcome
        images = meta(self.topo).get("images", {})
        entries, ready = [], []
        for vm in down:
            image = images.get(vm.backing_file or "")
            if image is None:
                outcome[vm.id] = f"the image {vm.backing_file} is not on the hosts"
                continue
            entries.append(VmFiles(vm.id, image["path"], image["format"], vm.hdd, vm.real_file))
            ready.append(vm)
        try:  # no archive: the seed's files and the domain's XML are already on the host
            made = parse_prepare(await self._run(host, prepare_command(self.layout, "", entries), 900))
        except RemoteError as error:
            return {**outcome, **{vm.id: f"new disk: {error}" for vm in ready}}
        fresh = []
        for vm in ready:
            why = made.get(vm.id, "no outcome from the disk script")
            if why is None:
                assert vm.ip is not None
                self.prober.forget(vm.ip)  # the fresh disk makes new host keys
                stamp(vm, CREATED)
                fresh.append(vm)
            else:
                outcome[vm.id] = f"new disk: {why}"
        outcome.update(await self.start(host, fresh) if fresh else {})
        return outcome

    async def wait_login(self, host: str, vm: VM) -> str | None:
        """None once the VM accepts the run's key; the last stage reached when `boot_timeout` is over."""
        assert vm.ip is not None
        t0 = time.monotonic()
        deadline = t0 + self.settings.boot_timeout
        detail = "no answer"
        while time.monotonic() < deadline:
            try:
                probe = await self.prober.probe(host, vm.ip)
            except (RemoteError, OSError, asyncssh.Error, TimeoutError) as error:
                probe = None
                detail = f"host connection: {error}"
            if probe is not None:
                if probe.stage == "login":
                    vm.extra["boot_seconds"] = round(time.monotonic() - t0, 2)
                    vm.extra["stage"] = "login"
                    stamp(vm, ANSWERED)
                    return None
                detail = f"{probe.stage}: {probe.detail}" if probe.detail else probe.stage
            await asyncio.sleep(PROBE_INTERVAL)
        return short(f"no SSH login after {self.settings.boot_timeout:.0f} s (reached {detail})", 300)


async def change_vms(topo: Topology, ssh: TunnelRunner, settings: RunSettings, operation: str,
                     vm_ids: Iterable[str], grace: float = 60) -> Topology:
    """Apply `operation` (``stop``, ``start``, ``reboot``, ``reset``) to these VMs; their states in the
    topology say how it went (``OK``, ``stopped``, or ``KO`` with the reason)."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation}")
    wanted = set(vm_ids)
    vms = [vm for vm in topo.vms() if vm.id in wanted]
    await FleetChange(topo, ssh, settings).apply(operation, vms, grace)
    return topo


#: Then triples: domain name, then the VM's files on the host as one colon separated list. Removes the
#: domain (stopped and undefined) and the files. Prints "gone <name>" or "left <name> <why>".
REMOVE_SCRIPT = r"""
set -u
while [ $# -ge 2 ]; do
    name=$1 files=$2
    shift 2
    virsh -q -c qemu:///system destroy "$name" >/dev/null 2>&1
    virsh -q -c qemu:///system undefine "$name" >/dev/null 2>&1
    if virsh -q -c qemu:///system dominfo "$name" >/dev/null 2>&1; then
        echo "left $name domain still defined"; continue
    fi
    old=$IFS; IFS=:
    for f in $files; do rm -rf -- "$f"; done
    IFS=$old
    echo "gone $name"
done
"""


def remove_command(layout: HostLayout, vm_ids: Iterable[str]) -> list[str]:
    """Remove these VMs' domains and files (disk, seed, domain XML, console) from a host."""
    args: list[str] = []
    for vm in vm_ids:
        files = (layout.disk(vm), layout.seed_dir(vm), layout.seed_iso(vm), layout.domain_xml(vm),
                 layout.console(vm))
        args += [layout.domain_name(vm), ":".join(files)]
    return ["sh", "-c", REMOVE_SCRIPT, "vm5k-remove", *args]


async def remove_vms(topo: Topology, ssh: TunnelRunner, settings: RunSettings,
                     vm_ids: Iterable[str]) -> dict[str, str | None]:
    """Remove these VMs' domains and files from every host that may hold them (their own host; every host
    the run provisioned with ``-l all``); VM id → None (gone everywhere) or why not. The topology is not
    changed: the caller takes the VMs out of it once they are gone."""
    layout = settings.layout
    ids = list(vm_ids)
    vms = [vm for vm in topo.vms() if vm.id in set(ids)]
    provisioned = [host.id for host in topo.hosts() if is_provisioned(host)]
    targets: dict[str, list[str]] = {}
    for vm in vms:
        where = set(provisioned) if settings.disk_location == "all" else set()
        if vm.host:
            where.add(vm.host)
        for host in where:
            targets.setdefault(host, []).append(vm.id)
    outcome: dict[str, str | None] = {vm_id: None for vm_id in ids}

    async def on(host: str, mine: list[str]) -> None:
        result = (await ssh.run([host], remove_command(layout, mine), timeout=300))[0]
        said: dict[str, str | None] = {}
        for line in result.stdout.splitlines():
            word, _, rest = line.partition(" ")
            name, _, why = rest.partition(" ")
            vm = layout.vm_of_domain(name)
            if vm is not None:
                said[vm] = None if word == "gone" else why or "left"
        for vm_id in mine:
            left = said.get(vm_id, result.describe() if not result.ok else "no outcome")
            if left is not None and outcome.get(vm_id) is None:
                outcome[vm_id] = f"on {host}: {short(left, 300)}"

    await asyncio.gather(*(on(host, mine) for host, mine in targets.items()))
    return outcome
