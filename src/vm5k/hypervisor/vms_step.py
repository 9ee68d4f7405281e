"""The *VMs* step: disks, seeds and domains, started in waves, each VM followed until it answers or is KO.

Per host (all hosts at once):

1. the run's domains already there are listed; a VM whose domain runs and accepts the run's key is kept
   as is (a resumed run skips it), any other domain of the run for a VM to create is removed first;
2. ``--vm-clean-disks``: orphaned disks of older runs and this run's stale disks are removed;
3. the small files of every VM to create (seed, domain XML) go in one archive; one script makes the seed
   ISOs and the disks (with ``-l all``, every VM's disk and seed on every host);
4. VMs start in waves sized to the host's ``nproc`` (a sliding window: when one VM has booted, i.e. got
   its address, the next one starts; hosts that report the same kernel ``boot_id`` share their processors,
   hence one window: `vm5k.hypervisor.waves`), and each is followed through the readiness stages
   (`vm5k.hypervisor.readiness`) by a probe every second through the host's SSH connection, while one
   stream of libvirt's lifecycle events per host, for all its VMs, notices domains that stopped (a
   ``virsh list`` every two seconds where the stream cannot run);
5. a VM that has not accepted the run's key ``boot_timeout`` seconds after its start (or whose domain
   stopped) is destroyed and created again (``recreate`` times, once by default); then it is stopped (kept
   for inspection) and marked KO with the stage it reached and the last lines of its serial console;
6. a host that stops answering SSH during the step is KO, and so are its VMs; the other hosts go on.

The fleet is never silently smaller than asked: every VM of the topology ends OK or KO with a reason
(`vm5k.hypervisor.state.ko_vms` lists the KO ones).

>>> # topo = await deploy_vms(topo, ssh, settings, progress)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncssh

from vm5k.errors import RemoteError
from vm5k.hypervisor import lifecycle
from vm5k.hypervisor.disks import VmFiles, clean_command, pack, parse_prepare, prepare_command
from vm5k.hypervisor.domain import DomainSpec, domain_xml
from vm5k.hypervisor.layout import HostLayout
from vm5k.hypervisor.readiness import DomainEvents, EventsEnded, Probe, VmProber
from vm5k.hypervisor.runtime import HostRuntime
from vm5k.hypervisor.seed import meta_data, user_data
from vm5k.hypervisor.settings import RunSettings, StepCounter, no_progress
from vm5k.hypervisor.state import mark_host_ko, mark_vm_ko, meta, short
from vm5k.hypervisor.waves import plan_windows
from vm5k.remote import HostResult, TunnelRunner
from vm5k.timeline import ANSWERED, CREATED, STARTED, stamp
from vm5k.topology import HOST_OK, VM, VM_OK, VM_STOPPED, Host, Topology

log = logging.getLogger(__name__)

PROBE_INTERVAL = 1.0
STATES_INTERVAL = 2.0
STOPPED_GRACE = 4.0  # seconds after a start before "shut off" means the domain stopped by itself
HOST_ERRORS_TOLERATED = 2
CONSOLE_LINES = 8


class HostFailed(Exception):
    """The host stopped answering during the step."""


def _host_error(result: HostResult) -> bool:
    """True when the command did not run for want of the host (no connection). A command that ran out of
    time is not one: the host answers, the command failed (its caller says so)."""
    error = result.error
    return result.exit_status is None and error is not None and not error.startswith("timed out")


@dataclass
class _Counter:
    total: int
    done: int = 0


@dataclass
class HostBoot:
    """Creates and follows the VMs of one host."""

    host: Host
    topo: Topology
    ssh: TunnelRunner
    prober: VmProber
    settings: RunSettings
    progress: StepCounter
    counter: _Counter
    window: asyncio.Semaphore
    states: dict[str, str] = field(default_factory=dict)  # when polling: the last `virsh list`
    states_at: float = 0.0
    events: DomainEvents | None = None  # when streaming: the host's lifecycle events
    failed: str | None = None
    finished: set[str] = field(default_factory=set)
    _errors: int = 0

    @property
    def layout(self) -> HostLayout:
        return self.settings.layout

    async def _run(self, command: list[str], timeout: float = 120, input: bytes | None = None) -> HostResult:
        if self.failed:
            raise HostFailed(self.failed)
        result = (await self.ssh.run([self.host.id], command, timeout=timeout, input=input))[0]
        if _host_error(result):
            self._fail(result.describe())
        return result

    def _fail(self, why: str) -> None:
        if self.failed is None:
            self.failed = why
            log.warning("%s failed during VM creation: %s", self.host.id, why)
        raise HostFailed(self.failed)

    # -- files ----------------------------------------------------------------------------------------
    def image(self, vm: VM) -> dict[str, Any]:
        images = meta(self.topo).get("images", {})
        image: dict[str, Any] | None = images.get(vm.backing_file or "")
        if image is None:
            raise RemoteError(f"the image {vm.backing_file} of {vm.id} was not distributed "
                              "(run the hosts step first)")
        return image

    def vm_files(self, vm: VM) -> VmFiles:
        image = self.image(vm)
        return VmFiles(vm.id, image["path"], image["format"], vm.hdd, vm.real_file)

    def small_files(self, vm: VM, with_domain: bool) -> dict[str, str]:
        layout = self.layout
        dns = meta(self.topo).get("dns_server")
        nameservers = [dns] if dns and not self.settings.network.dhcp else []
        files = {
            f"seeds/{vm.id}/meta-data": meta_data(self.settings.run_id, vm.id),
            f"seeds/{vm.id}/user-data": user_data(vm.id, self.settings.public_key, nameservers=nameservers,
                                                  domain=self.settings.network.domain),
        }
        if with_domain:
            image = self.image(vm)
            assert vm.mac is not None
            spec = DomainSpec(
                name=layout.domain_name(vm.id), vm_id=vm.id, run_id=self.settings.run_id, memory_mib=vm.mem,
                vcpus=vm.n_cpu, cpuset=vm.cpuset, disk=layout.disk(vm.id), disk_format="qcow2",
                seed=layout.seed_iso(vm.id), mac=vm.mac,
                bridge=HostRuntime.of(self.host).bridge or self.settings.bridge,
                console=layout.console(vm.id), accel=HostRuntime.of(self.host).accel,
                kernel=image.get("kernel"), initrd=image.get("initrd"), cmdline=image.get("cmdline") or None,
                tb_cache_mib=self.settings.tcg_tb_cache_mib)
            files[f"domains/{vm.id}.xml"] = domain_xml(spec)
        return files

    # -- the step -------------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._run_checked(list(self.host.vms))
        except HostFailed as error:
            mark_host_ko(self.host, f"failed during VM creation: {error}")
            for vm in self.host.vms:  # the host is gone: so are the VMs that ran there
                mark_vm_ko(vm, f"host {self.host.id} failed during VM creation: {error}")
                self._done(vm)

    def _done(self, vm: VM) -> None:
        if vm.id in self.finished:
            return
        self.finished.add(vm.id)
        self.counter.done += 1
        self.progress("vms", self.counter.done, self.counter.total,
                      f"{vm.id} {vm.state}" + (f" ({vm.reason})" if vm.state != VM_OK and vm.reason else ""))

    async def _run_checked(self, vms: list[VM]) -> None:
        layout = self.layout
        existing = lifecycle.parse_states((await self._run(lifecycle.states_command(layout))).stdout, layout)
        to_create: list[VM] = []
        for vm in vms:
            if not vm.ip or not vm.mac:
                mark_vm_ko(vm, "no IP/MAC pair assigned")
                self._done(vm)
                continue
            vm.extra["domain"] = layout.domain_name(vm.id)
            if vm.state == VM_STOPPED and vm.id in existing:  # stopped on purpose: kept as it is
                self._done(vm)
                continue
            if existing.get(vm.id) == "running":
                probe = await self._probe(vm)
                if probe.stage == "login":
                    vm.state, vm.reason = VM_OK, None
                    vm.extra["stage"] = "login"
                    log.info("%s already runs and answers on %s: kept", vm.id, self.host.id)
                    self._done(vm)
                    continue
            to_create.append(vm)
        stale = [vm.id for vm in to_create if vm.id in existing]
        if stale:
            await self._run(lifecycle.destroy_command(layout, stale))
        if self.settings.clean_disks:
            keep = [vm.id for vm in vms if vm.state == VM_OK and vm not in to_create]
            cleaned = await self._run(clean_command(layout, keep), timeout=600)
            if cleaned.stdout.strip():
                log.info("%s: %s", self.host.id, "; ".join(cleaned.stdout.split("\n")).strip("; "))
        if not to_create and self.settings.disk_location == "one":
            return
        ready = await self._prepare(to_create)
        window = self.window
        poller = asyncio.create_task(self._watch_states())
        try:
            outcomes = await asyncio.gather(*(self._boot(vm, window) for vm in ready), return_exceptions=True)
        finally:
            poller.cancel()
        if self.failed:
            raise HostFailed(self.failed)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _prepare(self, to_create: list[VM]) -> list[VM]:
        """Send the small files and make seeds and disks; returns the VMs ready to start."""
        layout = self.layout
        entries = [self.vm_files(vm) for vm in to_create]
        files: dict[str, str] = {}
        for vm in to_create:
            files.update(self.small_files(vm, with_domain=True))
        if self.settings.disk_location == "all":
            mine = {vm.id for vm in to_create}
            for other in self.topo.vms():
                elsewhere = other.host is not None and other.host != self.host.id
                if elsewhere and other.id not in mine and other.ip:
                    files.update(self.small_files(other, with_domain=False))
                    entries.append(self.vm_files(other))
        if not entries:
            return []
        archive = f"{layout.run_dir}/prepare.tar"
        sent = await self.ssh.put([self.host.id], pack(files), archive, mode=0o644, timeout=300)
        if _host_error(sent[0]):
            self._fail(sent[0].describe())
        result = await self._run(prepare_command(layout, archive, entries), timeout=1800)
        outcome = parse_prepare(result.stdout)
        ready: list[VM] = []
        for vm in to_create:
            why = outcome.get(vm.id, "no outcome from the disk script" if result.ok else result.describe())
            if why is None:
                stamp(vm, CREATED)
                ready.append(vm)
            else:
                mark_vm_ko(vm, f"disk/seed on {self.host.id}: {why}")
                self._done(vm)
        return ready

    async def _watch_states(self) -> None:
        """Follow the host's domains: its event stream, or polls when the stream cannot run."""
        events = DomainEvents()
        try:
            conn = await self.ssh.connection(self.host.id)
            self.events = events
            await events.follow(conn)
        except asyncio.CancelledError:
            raise
        except (EventsEnded, RemoteError, OSError, asyncssh.Error) as error:
            log.debug("%s: no domain events (%s): polling the domains' states", self.host.id, error)
        self.events = None
        await self._poll_states()

    def _stopped(self, vm: VM, since: float) -> str | None:
        """The state of a VM started at ``since`` if its domain stopped by itself since; None otherwise."""
        if self.events is not None:
            return self.events.stopped(self.layout.domain_name(vm.id), since, STOPPED_GRACE)
        if self.states_at > since + STOPPED_GRACE and self.states.get(vm.id) != "running":
            return self.states.get(vm.id, "disappeared")
        return None

    async def _poll_states(self) -> None:
        while True:
            try:
                asked = time.monotonic()  # the list is as of when it was asked, not when it came back
                result = await self._run(lifecycle.states_command(self.layout), timeout=60)
                if result.ok:
                    self.states = lifecycle.parse_states(result.stdout, self.layout)
                    self.states_at = asked
            except HostFailed:
                return
            await asyncio.sleep(STATES_INTERVAL)

    async def _probe(self, vm: VM) -> Probe:
        assert vm.ip is not None
        try:
            probe = await self.prober.probe(self.host.id, vm.ip)
        except (RemoteError, OSError, asyncssh.Error, TimeoutError) as error:
            self._errors += 1
            if self._errors > HOST_ERRORS_TOLERATED:
                self._fail(f"SSH to the host failed: {error}")
            return Probe("running", f"host connection: {error}")
        self._errors = 0
        return probe

    async def _boot(self, vm: VM, window: asyncio.Semaphore) -> None:
        """Create and follow one VM. A wave slot is held from the start until the guest has its address
        (kernel and init done: the CPU-heavy part of a boot), not until its SSH login: the waits that end
        a boot (sshd start, key exchange, our probes) then overlap the next VM's boot."""
        attempts = 1 + self.settings.recreate
        last = Probe("defined")
        for attempt in range(1, attempts + 1):
            vm.extra["attempts"] = attempt
            await window.acquire()
            held = [True]

            def release(held: list[bool] = held) -> None:
                if held[0]:
                    held[0] = False
                    window.release()

            try:
                if attempt > 1:
                    log.info("%s did not come up (%s): recreating it on %s", vm.id, _describe(last),
                             self.host.id)
                    why = await self._recreate(vm)
                    if why is not None:
                        last = Probe("defined", why)
                        break
                last = await self._start_and_wait(vm, release)
            finally:
                release()
            if last.stage == "login":
                vm.state, vm.reason = VM_OK, None
                self._done(vm)
                return
        await self._run(lifecycle.stop_command(self.layout, [vm.id]))
        tail = await self._console_tail(vm)
        tries = vm.extra["attempts"]
        mark_vm_ko(vm, f"no SSH login after {tries} attempt{'s' * (tries > 1)} of "
                       f"{self.settings.boot_timeout:.0f} s (reached {_describe(last)}); console: {tail}")
        log.warning("%s is KO: %s", vm.id, vm.reason)
        self._done(vm)

    async def _recreate(self, vm: VM) -> str | None:
        """Destroy the VM's domain and remake its disk; the reason when the disk cannot be remade."""
        assert vm.ip is not None
        await self._run(lifecycle.destroy_command(self.layout, [vm.id]))
        result = await self._run(prepare_command(self.layout, "", [self.vm_files(vm)]), timeout=600)
        why = parse_prepare(result.stdout).get(vm.id, f"disk script: {result.describe()}")
        if why is None:
            stamp(vm, CREATED)
        return why

    async def _start_and_wait(self, vm: VM, booted: Callable[[], None] = lambda: None) -> Probe:
        """Start the VM and follow it until it answers or its time is up; returns the best stage reached
        with the last probe's detail."""
        assert vm.ip is not None
        self.prober.forget(vm.ip)  # a new instance makes new host keys (a former run may have used this IP)
        asked = time.monotonic()
        started = await self._run(lifecycle.start_command(self.layout, [vm.id]), timeout=120)
        why = lifecycle.parse_outcome(started.stdout, self.layout).get(vm.id, started.describe())
        if why is not None:
            return Probe("defined", f"start failed: {why}")
        stamp(vm, STARTED)
        t0 = time.monotonic()
        deadline = t0 + self.settings.boot_timeout
        best = "running"
        while True:
            probe = await self._probe(vm)
            if probe.reached(best):
                best = probe.stage
            if probe.reached("address"):
                booted()
            vm.extra["stage"] = best
            if probe.stage == "login":
                vm.extra["boot_seconds"] = round(time.monotonic() - t0, 2)
                stamp(vm, ANSWERED)
                log.info("%s answers on %s after %.1f s", vm.id, self.host.id, time.monotonic() - t0)
                return probe
            stopped = self._stopped(vm, asked)
            if stopped is not None:
                return Probe(best, f"domain {stopped} by itself")
            if time.monotonic() >= deadline:
                return Probe(best, probe.detail or "no answer")
            await asyncio.sleep(PROBE_INTERVAL)

    async def _console_tail(self, vm: VM) -> str:
        try:
            command = lifecycle.console_tail_command(self.layout, vm.id, CONSOLE_LINES)
            result = await self._run(command, timeout=30)
        except HostFailed:
            return "(host unreachable)"
        lines = [line.strip()[:160] for line in result.stdout.splitlines() if line.strip()]
        return short(" | ".join(lines), 900) if lines else "(empty)"


def _describe(probe: Probe) -> str:
    return f"{probe.stage}: {probe.detail}" if probe.detail else probe.stage


async def deploy_vms(topo: Topology, ssh: TunnelRunner, settings: RunSettings,
                     progress: StepCounter = no_progress) -> Topology:
    """Create and start every VM of the topology's OK hosts (see the module docstring)."""
    if not isinstance(ssh, TunnelRunner):
        raise TypeError("deploy_vms probes VMs through tunnels of their hosts' connections: it needs a "
                        "TunnelRunner (an SshRunner)")
    for vm in topo.unplaced:
        mark_vm_ko(vm, "not placed on any host")
    for host in topo.hosts():
        if host.state != HOST_OK:
            for vm in host.vms:
                mark_vm_ko(vm, f"host {host.id} is KO: {host.reason or 'not ready'}")
    ok_hosts = [host for host in topo.hosts() if host.state == HOST_OK]
    counter = _Counter(total=sum(len(host.vms) for host in ok_hosts))
    prober = VmProber(ssh, settings.private_key, settings.vm_user)
    progress("vms", 0, counter.total, f"{counter.total} VMs on {len(ok_hosts)} hosts")
    facts = {host.id: HostRuntime.of(host) for host in ok_hosts}
    plan = plan_windows([(host.id, facts[host.id].boot_id, facts[host.id].nproc or 1) for host in ok_hosts],
                        settings.boot_parallel)
    windows = {window.key: asyncio.Semaphore(window.size) for window in plan.values()}
    shared = [window for window in dict.fromkeys(plan.values()) if len(window.hosts) > 1]
    for window in shared:
        log.info("%d hosts share one kernel (%s): %d VM boots at once among them", len(window.hosts),
                 window.key, window.size)
    boots = [HostBoot(host, topo, ssh, prober, settings, progress, counter, windows[plan[host.id].key])
             for host in ok_hosts]
    await asyncio.gather(*(boot.run() for boot in boots))
    ok = sum(1 for vm in topo.vms() if vm.state == VM_OK)
    log.info("VMs: %d of %d answer SSH", ok, len(topo.vms()))
    return topo
