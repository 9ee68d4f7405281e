"""One run, end to end, as data: a Request in, a run context out, the outdir telling all.

The Python API (`vm5k.api`) and through it the command line build every run here: `new_run` for a
deployment or a dry run, `stored_run` for the run recorded in an outdir (resume, destroy, the changes of
a running fleet), then `execute` runs the steps not done yet (`vm5k.pipeline`) and `destroy` gives
everything back. Nothing here prints, exits or touches signals: results are returned, failures raised
(`Vm5kError`, `Interrupted` after Ctrl-C, `StopRequested` when a destroy asked the run to stop), and the
progress goes through `logging` and the `Reporter` the caller gives.

Every operation that changes a run holds its outdir's lock (`vm5k.ownership`) from the moment it reads or
writes the record until `RunContext.close`. The platform in use is always said first. Without a
Grid'5000 API configured (``--api``, ``VM5K_API``, ``~/.python-grid5000.yaml``, or a Grid'5000 frontend),
the run goes to the embedded testbed, started when it is not up.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from vm5k import __version__, outdir, ownership, render
from vm5k.errors import DeploymentError, Interrupted, UsageError, Vm5kError, go_on_hint
from vm5k.hypervisor import RunSettings, destroy_leftovers, destroy_run, ko_vms
from vm5k.hypervisor.settings import DEFAULT_BOOT_TIMEOUT
from vm5k.keys import ensure_run_key
from vm5k.log import add_file_handler
from vm5k.loop import LoopThread
from vm5k.pipeline import KNOWN_HOSTS, STEPS, RunContext, identity_files
from vm5k.placement import check, distribute
from vm5k.platforms import Services, choose_platform, platform_kind
from vm5k.progress import Reporter
from vm5k.remote import SshSettings
from vm5k.remote.settings import PARALLEL_INSIDE_GRID5000, PARALLEL_VIA_GATEWAY
from vm5k.request import Request, format_walltime
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
from vm5k.topology import VM_OK, VM_STOPPED, Host, Topology

log = logging.getLogger(__name__)

#: Grid'5000 keeps VM images under /grid5000/virt-images, shared by NFS with every node; the testbed
#: installs its default guest at the same path, so the default is the same everywhere.
DEFAULT_BACKING_FILE = "/grid5000/virt-images/debian12-x64-min.qcow2"


# -- building a run's context ------------------------------------------------------------------------------


def _context(folder: Path, record: RunRecord, topology: Topology, reporter: Reporter, loop: LoopThread,
             request: Request | None, lock: ownership.Lock) -> RunContext:
    """The platform, SSH settings and context of a run, from its record (new, resumed or destroyed)."""
    private, public = ensure_run_key(folder, f"vm5k-{record.run_id}")
    ssh = SshSettings(config_files=(Path(record.ssh_config),) if record.ssh_config else (),
                      identity_files=tuple(Path(p) for p in record.identity_files),
                      known_hosts=folder / KNOWN_HOSTS, record_new_host_keys=True, connect_timeout=30,
                      keepalive_interval=5, keepalive_count_max=3,  # a dropped host is noticed in 15 s
                      max_parallel=PARALLEL_VIA_GATEWAY if record.gateway else PARALLEL_INSIDE_GRID5000)
    loop.check = lock.check_stop  # a destroy's request to stop is seen inside the hypervisor steps too

    def pause(seconds: float) -> None:  # the platform's waits between API polls, watching for a stop
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            lock.check_stop()
            time.sleep(min(left, 0.5))
        lock.check_stop()

    context = RunContext(outdir=folder, record=record, topology=topology, ssh=ssh, reporter=reporter,
                         loop=loop, request=request, lock=lock)
    services = Services(ssh=ssh, public_key=public, progress=reporter.platform, checkpoint=context.save,
                        sleep=pause, placement=request.placement if request else record.placement)
    context.platform = platform_kind(record.platform).build(record.access, services)
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


def new_run(request: Request, reporter: Reporter, loop: LoopThread) -> RunContext:
    """A new run (a deployment, or a dry run with a platform): its outdir made and locked, its record saved.

    Raises `UsageError` (nothing touched) when the outdir holds a run that may still own something, or is
    held by another vm5k.
    """
    name = choose_platform(request)
    platform_kind(name).validate(request)  # refused before anything is made
    folder = outdir.make_outdir(request.outdir)
    lock = ownership.hold(folder, "dry run" if request.dry_run else "deploy")
    try:
        check_outdir_reusable(folder)
        add_file_handler(folder)
        access = platform_kind(name).prepare(request)
        record = RunRecord(run_id=new_run_id(), platform=name, start_dir=os.getcwd(),
                           program=request.program, plot=request.plot, dry_run=request.dry_run)
        record.set_access(access)
        topology = request.topology.copy()
        backing = request.vm_backing_file or access.image or DEFAULT_BACKING_FILE
        record.identity_files = identity_files(folder)
        for vm in topology.vms():
            if vm.backing_file is None:
                vm.backing_file = backing
        log.info("run %s, outdir %s", record.run_id, folder)
        record.holder = ownership.Holder.me(lock.holder.operation).describe()
        context = _context(folder, record, topology, reporter, loop, request, lock)
        context.save(topology)
        return context
    except BaseException:
        lock.release()
        raise


def stored_run(folder: Path, operation: str, reporter: Reporter, loop: LoopThread, *, api: str | None = None,
               ssh_config: str | None = None, take_over: bool = False) -> RunContext:
    """The context of the run recorded in `folder`, locked for `operation` (``resume``, ``destroy``...).

    `api` and `ssh_config`, when given, say where the run's platform is now. With `take_over` (destroy), a
    holder of the run is asked to stop and waited for; otherwise a held run is refused at once. A record
    left ``running`` by a process that died is an interrupted run.
    """
    if not (folder / outdir.STATE_FILE).exists():
        raise UsageError(f"{folder} holds no vm5k run (no {outdir.STATE_FILE})")
    lock = ownership.take_over(folder, operation) if take_over else ownership.hold(folder, operation)
    try:
        topology = outdir.read_state(folder)
        record = RunRecord.load(topology)
        if record.status == RUNNING:  # we hold the lock: whoever wrote "running" is gone
            record.status = INTERRUPTED
            record.message = record.message or f"its process ({record.holder or 'unknown'}) ended without " \
                                               "saying why"
        add_file_handler(folder)
        _reach_again(record, api, ssh_config)
        where = f" (API {record.api})" if record.api else ""
        log.debug("platform: %s%s; run %s, outdir %s", record.platform, where, record.run_id, folder)
        record.holder = lock.holder.describe()
        return _context(folder, record, topology, reporter, loop, None, lock)
    except BaseException:
        lock.release()
        raise


def _reach_again(record: RunRecord, api: str | None, ssh_config: str | None) -> None:
    """Where the run's platform is now (its kind says: a testbed restarted since the run has a new API
    port); ``--api``/``--ssh-config`` given again win."""
    record.set_access(platform_kind(record.platform).reach_again(record.access, api, ssh_config))


# -- running ----------------------------------------------------------------------------------------------


def _steps_to_run(context: RunContext) -> list[Any]:
    done = context.record.steps
    if context.record.dry_run:
        return [STEPS[0]] if STEPS[0].name not in done else []
    if "vms" in done and any(vm.state not in (VM_OK, VM_STOPPED) for vm in context.topology.vms()):
        # a resumed run gives its KO VMs another chance (the step skips VMs that answer)
        done.pop("vms", None)
        done.pop("program", None)
    return [step for step in STEPS if step.name not in done]


def check_resumable(context: RunContext) -> None:
    """Refuse, in one line and before anything is touched, to resume a run that cannot go on: destroyed,
    stopped before its plan, or whose reservation is over (asked of the platform's API)."""
    record, folder = context.record, context.outdir
    if record.status == DESTROYED:
        raise UsageError(f"the run in {folder} was destroyed: nothing to resume")
    if "topology" not in record.steps:
        raise UsageError(f"the run in {folder} stopped before its plan: nothing was reserved; run vm5k again")
    if record.planned and "reservation" in record.reached and not record.dry_run:
        over = context.platform.reservation_over(context.topology)
        if over:
            raise DeploymentError(f"the reservation of the run in {folder} is over ({over}): its hosts are "
                                  f"no longer the run's; start a new run, or vm5k --destroy {folder} "
                                  "to close its record")


def execute(context: RunContext) -> RunContext:
    """Run the steps of `context`'s run not done yet, saving the state after each; returns the context
    with its record's final status (``done``, or ``failed`` with KO VMs or a failed program).

    Raises `Interrupted` after Ctrl-C (state saved, `hint` says how to go on), `StopRequested` when a
    destroy asked the run to stop, and the `Vm5kError` of a failed step (state saved as ``failed``).
    """
    record = context.record
    current = "start"
    try:
        for step in _steps_to_run(context):
            current = step.name
            context.check_stop()
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
            hint = go_on_hint(context.outdir)
            message = f"interrupted during the {current} step; the state is saved in {context.outdir}"
            raise Interrupted(message, hint) from None
        raise Interrupted(f"interrupted during the {current} step, before anything was reserved or started: "
                          f"run the same command again (-o {context.outdir} can be reused)") from None
    except ownership.StopRequested as stop:
        record.status, record.message = INTERRUPTED, f"stopped during {current}: {stop}"
        _save(context, context.topology, quiet=True)
        log.warning("the %s step stopped: %s", current, stop)
        raise
    except Vm5kError as error:
        record.status, record.message = FAILED, f"{current}: {error}"
        partial = error.topology if isinstance(error, DeploymentError) else None
        _save(context, partial if partial is not None else context.topology, quiet=True)
        if record.planned and not record.dry_run:
            log.error("the %s step failed; the state is saved in %s: fix the cause and vm5k --resume %s, or "
                      "vm5k --destroy %s", current, context.outdir, context.outdir, context.outdir)
        raise


def _save(context: RunContext, topology: Topology, *, quiet: bool = False) -> None:
    """Save the state; with `quiet` (on the way out after a failure), a save that fails is only logged:
    the error that stopped the run is the one to report."""
    try:
        context.save(topology)
    except Vm5kError as error:
        if not quiet:
            raise
        log.error("%s", error)


def _finish(context: RunContext) -> RunContext:
    record, topology = context.record, context.topology
    if record.dry_run:
        record.status = DONE
        _save(context, topology)
        return context
    vms = topology.vms()
    ko = [vm for vm in vms if vm.state not in (VM_OK, VM_STOPPED)]  # stopped on purpose is not KO
    program_status = topology.meta.get("program_status")
    record.status = DONE if not ko and not program_status else FAILED
    record.message = f"{len(ko)} VMs KO" if ko else (f"program exited with {program_status}"
                                                      if program_status else None)
    _save(context, topology)
    summary = context.reporter.summary()
    if summary:
        log.info("step durations:\n%s", summary)
    hosts = [host for host in topology.hosts() if host.vms]
    stopped = sum(1 for vm in vms if vm.state == VM_STOPPED)
    log.info("%d of %d VMs answer SSH%s, on %d hosts; files in %s", len(vms) - len(ko) - stopped, len(vms),
             f" ({stopped} stopped)" if stopped else "", len(hosts), context.outdir)
    for vm in ko:
        log.error("VM %s (host %s) is KO: %s", vm.id, vm.host, vm.reason or vm.state)
    if not ko:
        first = min(vms, key=lambda vm: vm.id).id if vms else "vm-1"
        log.info("reach a VM with: ssh -F %s %s", context.outdir / outdir.SSH_CONFIG, first)
    return context


def destroy(context: RunContext, *, keep_job: bool = False) -> None:
    """Remove the run's VMs, disks and service on every host, then end its reservation (unless
    `keep_job`), waiting until its jobs have left the waiting/launching/running states.

    A run whose reservation is already over is only closed: its hosts are not contacted (on Grid'5000
    they have been rebooted, or belong to someone else now). Raises `DeploymentError` when some hosts
    could not be cleaned (the record then says so, and a second destroy finishes the work).
    """
    record, reporter = context.record, context.reporter
    topology = context.topology
    over = None
    if "reservation" in record.reached and not record.dry_run and not record.reservation_ended:
        over = context.platform.reservation_over(topology)  # ended outside vm5k: the hosts are not ours
    left: dict[str, str] = {}
    if over:
        log.warning("the reservation of run %s was already over (%s): its hosts are not contacted",
                    record.run_id, over)
    elif record.status == DESTROYED:  # destroyed before with keep_job: only the reservation is left to end
        log.info("run %s holds nothing on its hosts any more: only its reservation is ended", record.run_id)
    else:
        if topology.hosts() and "hosts" in record.reached:
            settings = RunSettings.from_dict(record.hypervisor)
            with reporter.step("destroy", "remove the run's VMs, disks and service from the hosts"):
                topology = context.run_async(lambda ssh: destroy_run(topology, ssh, settings,
                                                                     reporter.hypervisor))
            context.save(topology)
        left = destroy_leftovers(topology)
    if keep_job:
        log.info("the reservation is kept (--keep-job)")
    else:
        with reporter.step("reservation", "end the reservation"):
            topology = context.platform.destroy(topology)
        record.reservation_ended = True
    if left:  # the record must not claim a clean state: a second destroy finishes the job
        record.status = FAILED
        record.message = f"destroy incomplete on {', '.join(sorted(left))}"
    else:
        record.status, record.message = DESTROYED, None
    context.save(topology)
    if left:
        names = ", ".join(sorted(left))
        raise DeploymentError(f"run {record.run_id} is not fully destroyed: {names} could not be cleaned "
                              f"({'; '.join(left.values())}); destroy it again once they answer")
    log.info("run %s destroyed", record.run_id)


def plan_file(request: Request) -> tuple[Topology, str, list[Path]]:
    """``--dry-run -i FILE`` without a platform: the plan from the file alone (the capacity it gives, the
    distribution of its unplaced VMs), written to the outdir as the initial topology. Returns the
    topology, the plan's text and the files written."""
    topo = request.topology.copy()
    warnings: list[str] = []
    notes: list[str] = []
    skipped: list[str] = []
    if topo.unplaced:
        placement = distribute(topo, request.placement)
        warnings += placement.warnings
    unchecked = check(topo, request.placement.limits)
    if unchecked:
        skipped.append(f"capacity (RAM, vCPUs) of {len(unchecked)} of {len(topo.hosts())} hosts: the file "
                       "gives no ram/cores for them and no platform was asked "
                       "(add --api to check against Grid'5000)")
    else:
        notes.append(f"capacity checked from the file: {request.placement.limits.describe()}")
    skipped.append("availability of the hosts and the reservation slot: no platform was contacted")
    topo.meta.update({
        "vm5k_version": __version__, "dry_run": True, "infile": request.infile, "platform": None,
        "walltime": request.walltime, **request.placement.to_dict(),
    })
    folder = outdir.make_outdir(request.outdir)
    with ownership.hold(folder, "dry run"):
        check_outdir_reusable(folder)
        add_file_handler(folder)
        for warning in warnings:
            log.warning("%s", warning)
        for note in notes:
            log.info("%s", note)
        written = outdir.write_initial(folder, topo)
    walltime = format_walltime(request.walltime) if request.walltime else None
    text = render.plan_text(topo, walltime=walltime, source=request.infile, skipped=skipped)
    log.info("dry run of %s: %d hosts, %d VMs; initial topology in %s", request.infile, len(topo.hosts()),
             len(topo.vms()), folder)
    for line in skipped:
        log.info("skipped check: %s", line)
    return topo, text, list(written)


def max_vms_hosts(request: Request) -> list[Host]:
    """The hosts ``vm5k_max_vms -j/-r`` counts on, with their hardware, from the platform."""
    return platform_kind(choose_platform(request)).hardware(request)
