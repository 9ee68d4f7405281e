"""One command, end to end: a Request in, a fleet of VMs answering SSH and an outdir that tells all, out.

``run(request)`` is what ``vm5k`` calls for everything that needs a platform: a new deployment (the steps of
`vm5k.pipeline`), ``--dry-run`` (the first step only), ``--resume OUTDIR`` (the steps not done yet) and
``--destroy OUTDIR`` (the run's VMs and disks on every host, then its reservation unless ``--keep-job``).
The platform in use is always said first. Without a Grid'5000 API configured (``--api``, ``VM5K_API``,
``~/.python-grid5000.yaml``, or a Grid'5000 frontend), the run goes to the embedded testbed, started when
it is not up.

Exit status: 0 only when every requested VM answers SSH (and the program, if any, succeeded); 1 when the
deployment ran but did not give everything (the KO VMs are listed with why); 2 for bad input; 130 when
interrupted (Ctrl-C or SIGTERM) — then the state is saved and the message says how to resume or destroy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vm5k import outdir
from vm5k.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, UsageError, Vm5kError
from vm5k.hypervisor import RunSettings, destroy_leftovers, destroy_run, ko_vms
from vm5k.hypervisor.settings import DEFAULT_BOOT_TIMEOUT
from vm5k.keys import ensure_run_key
from vm5k.log import add_file_handler
from vm5k.pipeline import KNOWN_HOSTS, STEPS, RunContext, identity_files
from vm5k.platforms import make_platform
from vm5k.platforms.grid5000.credentials import ENV_API, credentials_path, on_grid5000_frontend
from vm5k.platforms.hosts import HostsNetwork
from vm5k.platforms.testbed import DEFAULT_NODES, ensure_testbed
from vm5k.platforms.testbed import status as testbed_status
from vm5k.progress import Reporter
from vm5k.remote import SshSettings
from vm5k.remote.settings import PARALLEL_INSIDE_GRID5000, PARALLEL_VIA_GATEWAY
from vm5k.request import Request
from vm5k.runstate import (
    DESTROYED,
    DONE,
    FAILED,
    INTERRUPTED,
    RUNNING,
    RunRecord,
    check_outdir_reusable,
    new_run_id,
)
from vm5k.topology import VM_OK, Host, Topology

log = logging.getLogger(__name__)

#: Grid'5000 keeps VM images under /grid5000/virt-images, shared by NFS with every node; the testbed
#: installs its default guest at the same path, so the default is the same everywhere.
DEFAULT_BACKING_FILE = "/grid5000/virt-images/debian12-x64-min.qcow2"
GRID5000_SITES = ("bordeaux", "grenoble", "lille", "louvain", "luxembourg", "lyon", "nancy", "nantes",
                  "rennes", "sophia", "strasbourg", "toulouse")


# -- choosing the platform -------------------------------------------------------------------------------


def choose_platform(request: Request) -> str:
    """``--platform``, else ``hosts`` with ``--hosts``, ``grid5000`` when an API is configured, else the
    embedded ``testbed``."""
    if request.platform:
        return request.platform
    if request.hosts:
        return "hosts"
    if request.api or os.environ.get(ENV_API) or credentials_path().exists() or on_grid5000_frontend():
        return "grid5000"
    return "testbed"


def testbed_size(request: Request) -> tuple[str | None, int]:
    """The site and node count to start the testbed with, from ``-r`` (the first site it names)."""
    for element in request.resources:
        if element.name in GRID5000_SITES:
            return element.name, max(element.count or DEFAULT_NODES, 1)
    return None, DEFAULT_NODES


# -- building a run's context ------------------------------------------------------------------------------


def _context(folder: Path, record: RunRecord, topology: Topology, reporter: Reporter, loop: asyncio.Runner,
             request: Request | None) -> RunContext:
    """The platform, SSH settings and context of a run, from its record (new, resumed or destroyed)."""
    private, public = ensure_run_key(folder, f"vm5k-{record.run_id}")
    ssh = SshSettings(config_files=(Path(record.ssh_config),) if record.ssh_config else (),
                      identity_files=tuple(Path(p) for p in record.identity_files),
                      known_hosts=folder / KNOWN_HOSTS, record_new_host_keys=True, connect_timeout=30,
                      keepalive_interval=5, keepalive_count_max=3,  # a dropped host is noticed in 15 s
                      max_parallel=PARALLEL_VIA_GATEWAY if record.gateway else PARALLEL_INSIDE_GRID5000)
    def checkpoint(topo: Topology) -> Topology:  # the platform saves through the context made below
        return context.save(topo)

    settings: dict[str, Any] = {"ssh": ssh, "public_key": public, "progress": reporter.platform,
                                "checkpoint": checkpoint}
    if record.platform in ("grid5000", "testbed"):
        settings["api"] = record.api
    elif record.platform == "hosts":
        settings["hosts"] = tuple(record.hosts)
        settings["network"] = HostsNetwork(**(record.vm_network or {}))
        if request is not None:
            settings["placement"] = request.placement
    context = RunContext(outdir=folder, record=record, topology=topology,
                         platform=make_platform(record.platform, **settings), ssh=ssh, reporter=reporter,
                         loop=loop, request=request)
    if not record.hypervisor:
        options = request
        record.hypervisor = RunSettings(
            run_id=record.run_id, public_key=public, private_key=str(private.resolve()),
            host_packages=tuple(options.host_packages) if options else (),
            packages_upgrade=bool(options and options.packages_upgrade),
            disk_location=options.vm_disk_location if options else "one",
            clean_disks=bool(options and options.vm_clean_disks),
            boot_timeout=(float(options.boot_timeout) if options and options.boot_timeout
                          else DEFAULT_BOOT_TIMEOUT),
        ).to_dict()
    if request is not None:
        record.placement = request.placement
    if record.placement is not None:  # VMs of hosts that fail are placed again the way the user asked
        context.placement = record.placement
    return context


def _new_run(request: Request, reporter: Reporter, loop: asyncio.Runner) -> RunContext:
    if request.vm_network is not None:
        HostsNetwork(**request.vm_network)  # its addresses are input too: refused before anything is made
    folder = outdir.make_outdir(request.outdir)
    check_outdir_reusable(folder)
    add_file_handler(folder, request.verbosity)
    name = choose_platform(request)
    record = RunRecord(run_id=new_run_id(), platform=name, start_dir=os.getcwd(), api=request.api,
                       ssh_config=request.ssh_config, program=request.program, plot=request.plot,
                       dry_run=request.dry_run, hosts=list(request.hosts), vm_network=request.vm_network,
                       # from outside Grid'5000, every connection goes through its access gateway
                       gateway=name == "grid5000" and not on_grid5000_frontend())
    topology = request.topology.copy()
    backing = request.vm_backing_file or DEFAULT_BACKING_FILE
    if name == "testbed":
        site, nodes = testbed_size(request)
        info = ensure_testbed(site, nodes)
        record.api, record.ssh_config = info.api, info.ssh_config
        record.testbed_state = info.state_dir
        log.info("platform: testbed (the embedded Grid'5000: API %s, nodes through %s)", info.api,
                 info.ssh_config)
        if not request.vm_backing_file and info.image:
            backing = info.image
    else:
        where = f"API {request.api}" if request.api else "API from VM5K_API or ~/.python-grid5000.yaml"
        log.info("platform: %s (%s)", name, where if name == "grid5000" else ", ".join(request.hosts))
    record.identity_files = identity_files(folder)
    for vm in topology.vms():
        if vm.backing_file is None:
            vm.backing_file = backing
    log.info("run %s, outdir %s", record.run_id, folder)
    context = _context(folder, record, topology, reporter, loop, request)
    context.save(topology)
    return context


def _stored_run(request: Request, reporter: Reporter, loop: asyncio.Runner) -> RunContext:
    """The context of the run recorded in ``request.outdir`` (``--resume``, ``--destroy``)."""
    folder = Path(request.outdir)
    if not (folder / outdir.STATE_FILE).exists():
        raise UsageError(f"{folder} holds no vm5k run (no {outdir.STATE_FILE})")
    topology = outdir.read_state(folder)
    record = RunRecord.load(topology)
    add_file_handler(folder, request.verbosity)
    _reach_again(record, request)
    api = f" (API {record.api})" if record.api else ""
    log.info("platform: %s%s; run %s, outdir %s", record.platform, api, record.run_id, folder)
    return _context(folder, record, topology, reporter, loop, None)


def _reach_again(record: RunRecord, request: Request) -> None:
    """Where the run's platform is now: ``--api``/``--ssh-config`` given again win; a testbed restarted
    since the run (its API gets a new port at each start) is asked where it is."""
    if request.api:
        record.api = request.api
    if request.ssh_config:
        record.ssh_config = request.ssh_config
    if record.platform == "testbed" and not request.api:
        info = testbed_status(record.testbed_state)
        if info is None:
            raise UsageError(f"the testbed of this run ({record.testbed_state}) is not up: start it again "
                             f"(vm5k-testbed up --state {record.testbed_state}) or give --api")
        if info.not_up:  # reached as it is: what vm5k cannot reach on a dead node, it reports
            log.warning("the testbed of this run is degraded: %s not up", ", ".join(info.not_up))
        record.api = info.api
        record.ssh_config = request.ssh_config or info.ssh_config


# -- running ----------------------------------------------------------------------------------------------


@contextmanager
def _sigterm_as_sigint() -> Iterator[None]:
    """SIGTERM stops a run the way Ctrl-C does (state saved, message printed), instead of killing it.

    Both end up as SIGINT, which the event loop turns into a clean cancellation of the running step (and
    plain Python into KeyboardInterrupt elsewhere). A vm5k started with SIGINT ignored (the background job
    of a script, which is what batch systems stop with SIGTERM) gets Ctrl-C's handling back for the run:
    a stop, whatever its signal, must save the state and say how to go on.
    """
    def forward(signum: int, frame: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    try:
        previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int in (signal.SIG_IGN, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if previous_int in (signal.SIG_IGN, None):
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _steps_to_run(context: RunContext) -> list[Any]:
    done = context.record.steps
    if context.record.dry_run:
        return [STEPS[0]] if STEPS[0].name not in done else []
    if "vms" in done and any(vm.state != VM_OK for vm in context.topology.vms()):
        # a resumed run gives its KO VMs another chance (the step skips VMs that answer)
        done.pop("vms", None)
        done.pop("program", None)
    return [step for step in STEPS if step.name not in done]


def _execute(context: RunContext) -> int:
    record = context.record
    current = "start"
    try:
        for step in _steps_to_run(context):
            current = step.name
            if step.name == "program" and ko_vms(context.topology):
                log.warning("the program is not run: some VMs are KO")
                break
            start = time.monotonic()
            record.step_begun(step.name)
            _save(context, context.topology)
            with context.reporter.step(step.name, step.title):
                topology = step.run(context)
            record.step_done(step.name, time.monotonic() - start)
            _save(context, topology)
        return _finish(context)
    except KeyboardInterrupt:
        record.status, record.message = INTERRUPTED, f"interrupted during {current}"
        _save(context, context.topology, quiet=True)
        if record.planned:
            sys.stderr.write(f"vm5k: interrupted during the {current} step; the state is saved in "
                             f"{context.outdir}\n"
                             f"  continue it:   vm5k --resume {context.outdir}\n"
                             f"  or remove all: vm5k --destroy {context.outdir}\n")
        else:
            sys.stderr.write(f"vm5k: interrupted during the {current} step, before anything was reserved or "
                             f"started: run the same command again (-o {context.outdir} can be reused)\n")
        return EXIT_INTERRUPTED
    except Vm5kError as error:
        record.status, record.message = FAILED, f"{current}: {error}"
        partial = getattr(error, "topology", None)
        _save(context, partial if isinstance(partial, Topology) else context.topology, quiet=True)
        if record.planned and not record.dry_run:
            log.error("the %s step failed; the state is saved in %s: fix the cause and vm5k --resume %s, or "
                      "vm5k --destroy %s", current, context.outdir, context.outdir, context.outdir)
        raise
    finally:
        context.close()


def _save(context: RunContext, topology: Topology, *, quiet: bool = False) -> None:
    """Save the state; with `quiet` (on the way out after a failure), a save that fails is only logged:
    the error that stopped the run is the one to report."""
    try:
        context.save(topology)
    except Vm5kError as error:
        if not quiet:
            raise
        log.error("%s", error)


def _finish(context: RunContext) -> int:
    record, topology = context.record, context.topology
    if record.dry_run:
        record.status = DONE
        _save(context, topology)
        sys.stdout.write(f"vm5k dry run on {record.platform}: nothing reserved, nothing started\n")
        sys.stdout.write(context.platform.plan_text(topology))
        sys.stdout.write(f"Initial topology written to {context.outdir / outdir.INITIAL_XML} and "
                         f"{context.outdir / outdir.STATE_FILE}\n")
        return EXIT_OK
    vms = topology.vms()
    ko = [vm for vm in vms if vm.state != VM_OK]
    program_status = topology.meta.get("program_status")
    record.status = DONE if not ko and not program_status else FAILED
    record.message = f"{len(ko)} VMs KO" if ko else (f"program exited with {program_status}"
                                                      if program_status else None)
    _save(context, topology)
    summary = context.reporter.summary()
    if summary:
        log.info("step durations:\n%s", summary)
    hosts = [host for host in topology.hosts() if host.vms]
    log.info("%d of %d VMs answer SSH, on %d hosts; files in %s", len(vms) - len(ko), len(vms), len(hosts),
             context.outdir)
    for vm in ko:
        log.error("VM %s (host %s) is KO: %s", vm.id, vm.host, vm.reason or vm.state)
    if not ko:
        first = min(vms, key=lambda vm: vm.id).id if vms else "vm-1"
        log.info("reach a VM with: ssh -F %s %s", context.outdir / outdir.SSH_CONFIG, first)
    return EXIT_OK if record.status == DONE else EXIT_FAILURE


def run(request: Request) -> int:
    """Run what `request` asks (see the module docstring); returns the exit status."""
    if request.action == "destroy":
        return destroy(request)
    reporter = Reporter()
    with _sigterm_as_sigint(), asyncio.Runner() as loop:
        if request.action == "resume":
            context = _stored_run(request, reporter, loop)
            if context.record.status == DESTROYED:
                raise UsageError(f"the run in {request.outdir} was destroyed: nothing to resume")
            if "topology" not in context.record.steps:
                raise UsageError(f"the run in {request.outdir} stopped before its plan: nothing was "
                                 "reserved; run vm5k again")
            context.record.dry_run = False
            context.record.status = RUNNING
        else:
            context = _new_run(request, reporter, loop)
        return _execute(context)


def destroy(request: Request) -> int:
    """Remove the run's VMs, disks and service on every host, then end its reservation (unless
    ``--keep-job``), waiting until its jobs have left the waiting/launching/running states."""
    reporter = Reporter()
    with _sigterm_as_sigint(), asyncio.Runner() as loop:
        context = _stored_run(request, reporter, loop)
        topology = context.topology
        try:
            if topology.hosts() and "hosts" in context.record.reached:
                settings = RunSettings.from_dict(context.record.hypervisor)
                with reporter.step("destroy", "remove the run's VMs, disks and service from the hosts"):
                    topology = context.run_async(lambda ssh: destroy_run(topology, ssh, settings,
                                                                         reporter.hypervisor))
                context.save(topology)
            if request.keep_job:
                log.info("the reservation is kept (--keep-job)")
            else:
                with reporter.step("reservation", "end the reservation"):
                    topology = context.platform.destroy(topology)
            left = destroy_leftovers(topology)
            if left:  # the record must not claim a clean state: a second --destroy finishes the job
                context.record.status = FAILED
                context.record.message = f"destroy incomplete on {', '.join(sorted(left))}"
            else:
                context.record.status, context.record.message = DESTROYED, None
            context.save(topology)
        finally:
            context.close()
    if left:
        log.error("run %s is not fully destroyed: %s could not be cleaned (%s); vm5k --destroy %s again once "
                  "they answer", context.record.run_id, ", ".join(sorted(left)), "; ".join(left.values()),
                  request.outdir)
        return EXIT_FAILURE
    log.info("run %s destroyed", context.record.run_id)
    return EXIT_OK


def max_vms_hosts(request: Request) -> list[Host]:
    """The hosts ``vm5k_max_vms -j/-r`` counts on, with their hardware, from the platform."""
    name = choose_platform(request)
    if name == "testbed":
        site, nodes = testbed_size(request)
        info = ensure_testbed(site, nodes)
        platform = make_platform("testbed", api=info.api)
    else:
        platform = make_platform(name, api=request.api)
    hardware = getattr(platform, "hardware", None)
    if hardware is None:
        raise UsageError(f"vm5k_max_vms cannot read the hosts of the {name} platform")
    hosts: list[Host] = hardware(request)
    return hosts
