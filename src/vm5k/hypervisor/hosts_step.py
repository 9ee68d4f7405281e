"""The *hosts* step: every host of the topology becomes a ready hypervisor, or KO with the reason.

Order, each sub-step on all hosts at once (a host that fails one is KO and left out of the next):

1. facts (one command: cores, memory, KVM, main interface) — unreachable hosts and non-root logins are KO;
2. the run's folders (world-traversable, under ``<base>/runs/<run>``);
3. the images: checksummed on the frontend (started first, in threads) and distributed to the hosts' cache
   in the background, overlapping everything below;
4. packages (only what is missing; dnsmasq on the service node), the commands vm5k calls;
5. libvirt running (``/dev/kvm`` fixed);
6. the bridge on the main interface;
7. the accelerator (up-front checks, memo, KVM canary);
8. the images' distribution is awaited: a host without a verified copy of every file is KO.

Idempotent: a rerun on ready hosts runs the same commands, which find everything done (about a second per
host on the testbed, see benchmarks/vms.py).

>>> import asyncio
>>> # topo = asyncio.run(setup_hosts(topo, ssh, settings))   # hosts OK/KO, host.extra filled
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from vm5k.errors import UsageError
from vm5k.hypervisor import accel
from vm5k.hypervisor.bridge import bridge_command, parse_bridge
from vm5k.hypervisor.facts import HostFacts, gather_facts
from vm5k.hypervisor.images import DistributionReport, Image, distribute, load_images
from vm5k.hypervisor.provision import (
    commands_command,
    folders_command,
    libvirt_command,
    packages_command,
    packages_for,
)
from vm5k.hypervisor.runtime import HostRuntime, mark_provisioned
from vm5k.hypervisor.settings import RunSettings, StepCounter, no_progress
from vm5k.hypervisor.state import mark_host_ko, meta
from vm5k.remote import Results, Runner
from vm5k.timeline import IMAGE_READY, IMAGE_STARTED, SET_UP, SETUP_STARTED, stamp
from vm5k.topology import HOST_KO, HOST_OK, Host, Topology

log = logging.getLogger(__name__)

PACKAGES_TIMEOUT = 1800
LIBVIRT_TIMEOUT = 180
BRIDGE_TIMEOUT = 180


def choose_service_node(hosts: Iterable[Host], wanted: str | None, nproc: dict[str, int]) -> str | None:
    """The service node: the one asked for if it is usable, else the first host with the most cores.

    >>> choose_service_node([Host("a"), Host("b")], None, {"a": 2, "b": 8})
    'b'
    """
    usable = [host.id for host in hosts if host.state != HOST_KO]
    if wanted is not None and wanted in usable:
        return wanted
    if not usable:
        return None
    return max(usable, key=lambda name: (nproc.get(name, 0), -usable.index(name)))


def _host_ko(host: Host, reason: str) -> None:
    """The host failed its set-up: KO, and its set-up ends now (the timeline shows where it stopped)."""
    mark_host_ko(host, reason)
    stamp(host, SET_UP)


def _exclude(results: Results, hosts: dict[str, Host], what: str) -> list[str]:
    for result in results.ko:
        _host_ko(hosts[result.host], f"{what}: {result.describe().removeprefix(result.host + ': ')}")
        log.warning("%s: %s failed: %s", result.host, what, result.describe())
    return results.ok_hosts


def backing_sources(topo: Topology) -> set[str]:
    """The backing files of the placed VMs: every host gets all of them (``-l all`` needs it anyway, and a
    run rarely uses more than one image)."""
    sources: set[str] = set()
    for vm in topo.vms():
        if vm.host is not None:
            if not vm.backing_file:
                raise UsageError(f"VM {vm.id} has no backing file: give one with -f or in the template")
            sources.add(vm.backing_file)
    return sources


async def setup_hosts(topo: Topology, runner: Runner, settings: RunSettings,
                      progress: StepCounter = no_progress) -> Topology:
    """Provision every host that is not KO (see the module docstring); returns the enriched topology."""
    layout = settings.layout
    hosts = {host.id: host for host in topo.hosts() if host.state != HOST_KO}
    if not hosts:
        return topo
    total = 8
    for host in hosts.values():
        stamp(host, SETUP_STARTED)
    sources = backing_sources(topo)
    images_task = asyncio.create_task(load_images(sources))
    distribution: asyncio.Task[DistributionReport] | None = None
    try:
        progress("hosts", 0, total, f"facts of {len(hosts)} hosts")
        facts, results = await gather_facts(runner, list(hosts), layout)
        ok = _exclude(results, hosts, "unreachable")
        for name in list(ok):
            if facts[name].uid != 0:
                _host_ko(hosts[name], f"vm5k needs root on hosts (logged in as uid {facts[name].uid})")
                ok.remove(name)
        progress("hosts", 1, total, "folders")
        ok = _exclude(await runner.run(ok, folders_command(layout), timeout=60), hosts, "folders")
        for name in ok:
            mark_provisioned(hosts[name])  # something of the run may live there: destroy visits it
        images = await images_task
        record_images(topo, images, settings)
        files = [item for image in images.values() for item in image.files()]
        distribution = asyncio.create_task(distribute(runner, ok, files, layout, timeout=3600))
        for name in ok:
            stamp(hosts[name], IMAGE_STARTED)

        state = meta(topo)
        wanted = settings.service_node or state.get("service_node")
        nproc = {name: facts[name].nproc for name in ok}
        service = choose_service_node([hosts[n] for n in ok], wanted, nproc)
        state["service_node"] = service
        progress("hosts", 2, total, "packages")
        commands = {name: packages_command(packages_for(settings.host_packages, service=name == service),
                                           settings.packages_upgrade, layout) for name in ok}
        installed = await runner.run_each(commands, timeout=PACKAGES_TIMEOUT)
        for result in installed.ok:
            if result.stdout.strip():
                log.info("%s: %s", result.host, " ".join(result.stdout.split()))
        ok = _exclude(installed, hosts, "packages")
        checks = {name: commands_command(service=name == service) for name in ok}
        ok = _exclude(await runner.run_each(checks, timeout=60), hosts, "commands")
        progress("hosts", 3, total, "libvirt")
        ok = _exclude(await runner.run(ok, libvirt_command(), timeout=LIBVIRT_TIMEOUT), hosts, "libvirt")
        progress("hosts", 4, total, f"bridge {settings.bridge}")
        bridged = await runner.run(ok, bridge_command(settings.bridge, layout), timeout=BRIDGE_TIMEOUT)
        ok = _exclude(bridged, hosts, f"bridge {settings.bridge}")
        progress("hosts", 5, total, "accelerator")
        decisions = await accel.probe(runner, {name: facts[name] for name in ok}, layout,
                                      settings.accelerator)
        progress("hosts", 6, total, "images")
        report = await distribution
        distribution = None
        for name, when in report.ready_at.items():
            if name in hosts and name not in report.failed:
                stamp(hosts[name], IMAGE_READY, when)
        for name in list(ok):
            if name in report.failed:
                _host_ko(hosts[name], report.failed[name])
                ok.remove(name)
        for name in ok:
            bridge, _ = parse_bridge(bridged[name].stdout)
            record_host(hosts[name], facts[name], decisions[name], bridge or settings.bridge)
            stamp(hosts[name], SET_UP)
        progress("hosts", total, total, f"{len(ok)} of {len(hosts)} hosts ready")
        log.info("hosts: %d of %d ready (images: %.1f s)", len(ok), len(hosts), report.seconds)
    finally:
        for task in (images_task, distribution):
            if task is not None and not task.done():
                task.cancel()
    if meta(topo).get("service_node") not in {h.id for h in topo.hosts() if h.state == HOST_OK}:
        meta(topo)["service_node"] = choose_service_node(
            [h for h in topo.hosts() if h.state == HOST_OK], settings.service_node,
            {h.id: HostRuntime.of(h).nproc for h in topo.hosts()})
    return topo


def record_images(topo: Topology, images: dict[str, Image], settings: RunSettings) -> None:
    """Remember each image's digest, format and paths on hosts (the VM step and resume read them)."""
    layout = settings.layout
    known = meta(topo).setdefault("images", {})
    for source, image in images.items():
        known[source] = image.to_dict(layout)


def record_host(host: Host, facts: HostFacts, decision: accel.Decision, bridge: str) -> None:
    host.state = HOST_OK
    host.reason = None
    kvm = decision.accel == "kvm"
    HostRuntime(accel=decision.accel, accel_reason=decision.reason, nproc=facts.nproc, address=facts.address,
                prefixlen=facts.prefixlen, bridge=bridge, boot_id=facts.boot_id,
                cpu_model=facts.cpu_model if kvm else "",
                cpu_flags=facts.cpu_flags if kvm else "").record(host)
