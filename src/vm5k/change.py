"""Changing a running fleet, at the level of its run: which VMs, whether the run allows it, what a dry run
says, and the record kept true before, during and after the hypervisor does the work.

Why apart from `vm5k.workflow`: the workflow builds and ends runs; these operations act on a run that is
deployed, through the `RunContext` that `workflow.stored_run` gives (the outdir locked). The host-side work
is `vm5k.hypervisor.operations`; this module only chooses, checks, records and reports.

The record: before the hosts are touched the run is saved ``running`` with the operation and its VMs in
``meta["pending"]``. Until the operation ends, the VMs' recorded states may be untrue (a reboot cut
between its shutdown and its start leaves VMs shut off that the record calls OK), so while it is pending
no other change is accepted, and ``--resume`` does the operation again before anything else (the
operations are idempotent); Ctrl-C saves the run ``interrupted`` and says so. Once the operation ended,
every VM's state (``OK``, ``stopped``, ``KO`` with its reason) and every outdir file are written again,
and the run is ``done`` when no VM is KO (stopped ones are not), else ``failed``.

>>> from vm5k.topology import Topology
>>> topo = Topology.from_xml('<vm5k><site id="s"><cluster id="c"><host id="h1">'
...                          '<vm id="vm-1" state="OK"/><vm id="vm-2" state="stopped"/></host>'
...                          '</cluster></site></vm5k>')
>>> [vm.id for vm in select_vms(topo, "vm-2,vm-1", "stop")]
['vm-1', 'vm-2']
>>> print(describe("stop", select_vms(topo, None, "stop"), grace=30))
stop 2 VMs (shut down, forced off after 30 s):
  vm-1 on h1 (OK)
  vm-2 on h1 (stopped)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from vm5k import outdir
from vm5k.errors import Interrupted, UsageError, go_on_hint
from vm5k.hypervisor.operations import change_vms
from vm5k.runstate import DESTROYED, DONE, FAILED, INTERRUPTED, RUNNING, RunRecord
from vm5k.topology import VM, VM_OK, VM_STOPPED, Topology, natural_key

log = logging.getLogger(__name__)

WHAT = {
    "stop": "shut down, forced off after {grace:.0f} s",
    "start": "start, wait until they answer SSH",
    "reboot": "shut down (forced off after {grace:.0f} s), start again, wait until they answer SSH",
    "reset": "force off, make a fresh disk from the backing file, start, wait until they answer SSH",
}
DEFAULT_GRACE = 60.0
PENDING_KEY = "pending"  # topology.meta: the change begun and not ended (operation, vms, grace)


def vm_names(vms: Any) -> list[str] | None:
    """The VMs the caller named: a comma separated text, VM objects or ids; None for every VM."""
    if vms is None:
        return None
    items = vms.split(",") if isinstance(vms, str) else [vms] if isinstance(vms, VM) else list(vms)
    names = [item.id if isinstance(item, VM) else item for item in items]
    names = [name.strip() if isinstance(name, str) else name for name in names]
    if not names or any(not isinstance(name, str) or not name for name in names):
        raise UsageError(f"no VM named in {vms!r}: give VM ids such as vm-1,vm-2")
    return list(dict.fromkeys(names))


def select_vms(topo: Topology, vms: Any, operation: str) -> list[VM]:
    """The run's VMs named by `vms` (every VM when None), in id order; `UsageError` for an unknown one."""
    known = {vm.id: vm for vm in topo.vms()}
    names = vm_names(vms)
    if names is None:
        names = list(known)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(f"{operation}: {unknown[0]} is not a VM of this run "
                         f"(its VMs: {', '.join(sorted(known, key=natural_key)) or 'none'})")
    return sorted((known[name] for name in names), key=lambda vm: natural_key(vm.id))


def check_grace(grace: Any) -> float:
    try:
        value = float(grace)
    except (TypeError, ValueError):
        raise UsageError(f"--grace: {grace!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:
        raise UsageError(f"--grace: {grace!r} must be between 0 and 86400 seconds")
    return value


def check_changeable(record: RunRecord, folder: Any, operation: str, topology: Topology | None) -> None:
    """Refuse, in one line, to change a run that has no deployed fleet, or (given its `topology`; None
    when a resume finishes that very change) one whose last change did not end: its record is not true
    until ``--resume`` has done that change again."""
    if record.status == DESTROYED:
        raise UsageError(f"the run in {folder} was destroyed: nothing to {operation}")
    if record.dry_run or "vms" not in record.reached:
        raise UsageError(f"the run in {folder} has no VMs yet: deploy it first (vm5k --resume {folder})")
    pending = pending_change(topology) if topology is not None else None
    if pending is not None:
        raise UsageError(f"the {pending['operation']} of {', '.join(pending['vms'])} in {folder} did not "
                         f"end: vm5k --resume {folder} finishes it first")


def pending_change(topology: Topology) -> dict[str, Any] | None:
    """The change begun and not ended (``operation``, ``vms``, ``grace``), if any."""
    pending = topology.meta.get(PENDING_KEY)
    return pending if isinstance(pending, dict) and pending.get("vms") else None


def begin(context: Any, topology: Topology, operation: str, ids: list[str],
          grace: float = DEFAULT_GRACE) -> None:
    """Save the intent before any host is touched: the run ``running``, the change pending."""
    topology.meta[PENDING_KEY] = {"operation": operation, "vms": ids, "grace": grace}
    context.record.status, context.record.message = RUNNING, f"{operation} {', '.join(ids)}"
    context.save(topology)


def interrupted(context: Any, topology: Topology, operation: str, ids: list[str]) -> Interrupted:
    """Ctrl-C during a change: the run saved ``interrupted`` (the change still pending), and the error
    that says how to go on."""
    what = f"{operation} of {', '.join(ids)}"
    context.record.status, context.record.message = INTERRUPTED, f"interrupted during the {what}"
    context.save(topology)
    return Interrupted(f"interrupted during the {what}; the state is saved in {context.outdir}",
                       go_on_hint(context.outdir, "finish it"))


def finish_pending(context: Any) -> None:
    """Before a resume: the change that did not end, done again on its VMs (those still in the run)."""
    topology: Topology = context.topology
    pending = pending_change(topology)
    if pending is None:
        topology.meta.pop(PENDING_KEY, None)
        return
    operation = str(pending["operation"])
    ids = [vm for vm in pending["vms"] if topology.find_vm(vm) is not None]
    log.info("resume: the %s of %s did not end: doing it again", operation, ", ".join(ids))
    if not ids:
        topology.meta.pop(PENDING_KEY, None)
    elif operation == "remove":
        from vm5k.resize import remove

        remove(context, ids, finishing=True)
    else:
        change(context, operation, ids, grace=float(pending.get("grace", DEFAULT_GRACE)), finishing=True)


def describe(operation: str, vms: list[VM], *, grace: float = DEFAULT_GRACE) -> str:
    """What the operation would do (the dry run's text)."""
    lines = [f"{operation} {len(vms)} VM{'s' * (len(vms) != 1)} ({WHAT[operation].format(grace=grace)}):"]
    lines += [f"  {vm.id} on {vm.host} ({vm.state})" for vm in vms]
    return "\n".join(lines)


def change(context: Any, operation: str, vms: Any, *, grace: float = DEFAULT_GRACE,
           finishing: bool = False) -> list[VM]:
    """Do `operation` on the named VMs of the locked run in `context` (a `RunContext`), recording as it
    goes; returns the VMs it acted on, whose states say how it went. `finishing`: a resume doing again
    the change that did not end (`finish_pending`)."""
    record, folder = context.record, context.outdir
    topology: Topology = context.topology
    check_changeable(record, folder, operation, None if finishing else topology)
    chosen = select_vms(topology, vms, operation)
    if not chosen:
        raise UsageError(f"{operation}: the run in {folder} has no VM")
    ids = [vm.id for vm in chosen]
    previous = record.status
    begin(context, topology, operation, ids, grace)
    settings = context.hypervisor_settings(topology)
    start = time.monotonic()
    try:
        with context.reporter.step(operation, f"{operation} {len(ids)} VMs"):
            topology = context.run_async(
                lambda ssh: change_vms(topology, ssh, settings, operation, ids, grace))
    except KeyboardInterrupt:
        raise interrupted(context, topology, operation, ids) from None
    topology.meta.pop(PENDING_KEY, None)
    finished(context, topology, previous)
    log.info("%s of %d VMs took %.1f s", operation, len(ids), time.monotonic() - start)
    acted = [vm for vm in topology.vms() if vm.id in set(ids)]
    for vm in sorted(acted, key=lambda vm: natural_key(vm.id)):
        if vm.state in (VM_OK, VM_STOPPED):
            log.info("%s %s: %s on %s", operation, vm.id, vm.state, vm.host)
        else:
            log.error("%s %s: KO on %s: %s", operation, vm.id, vm.host, vm.reason)
    return acted


def finished(context: Any, topology: Topology, previous: str) -> None:
    """Save the run's new truth: its status from its VMs, every outdir file, the final XML."""
    record = context.record
    ko = [vm for vm in topology.vms() if vm.state not in (VM_OK, VM_STOPPED)]
    program_failed = previous == FAILED and topology.meta.get("program_status")
    record.status = FAILED if ko or program_failed else DONE
    record.message = f"{len(ko)} VMs KO" if ko else (f"program exited with {topology.meta['program_status']}"
                                                      if program_failed else None)
    context.save(topology)
    outdir.write_atomic(context.outdir / outdir.FINAL_XML, topology.to_xml())


def failed_vms(vms: Iterable[VM]) -> dict[str, str]:
    """VM id → reason, for the VMs an operation left KO."""
    return {vm.id: vm.reason or vm.state for vm in vms if vm.state not in (VM_OK, VM_STOPPED)}


__all__ = ["DEFAULT_GRACE", "PENDING_KEY", "begin", "change", "check_changeable", "check_grace", "describe",
           "failed_vms", "finish_pending", "interrupted", "pending_change", "select_vms", "vm_names"]
