"""Changing a running fleet, at the level of its run: which VMs, whether the run allows it, what a dry run
says, and the record kept true before, during and after the hypervisor does the work.

Why apart from `vm5k.workflow`: the workflow builds and ends runs; these operations act on a run that is
deployed, through the `RunContext` that `workflow.stored_run` gives (the outdir locked). The host-side work
is `vm5k.hypervisor.operations`; this module only chooses, checks, records and reports.

The record: before the hosts are touched the run is saved ``running`` with the operation in its message
(a process that dies leaves an ``interrupted`` run whose ``--resume`` finishes the job); after, every VM's
state (``OK``, ``stopped``, ``KO`` with its reason) and every outdir file are written again, and the run is
``done`` when no VM is KO (stopped ones are not), else ``failed``.

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
from vm5k.errors import UsageError
from vm5k.hypervisor.operations import change_vms
from vm5k.runstate import DESTROYED, DONE, FAILED, RUNNING, RunRecord
from vm5k.topology import VM, VM_OK, VM_STOPPED, Topology, natural_key

log = logging.getLogger(__name__)

WHAT = {
    "stop": "shut down, forced off after {grace:.0f} s",
    "start": "start, wait until they answer SSH",
    "reboot": "shut down (forced off after {grace:.0f} s), start again, wait until they answer SSH",
    "reset": "force off, make a fresh disk from the backing file, start, wait until they answer SSH",
}
DEFAULT_GRACE = 60.0


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


def check_changeable(record: RunRecord, folder: Any, operation: str) -> None:
    """Refuse, in one line, to change a run that has no deployed fleet."""
    if record.status == DESTROYED:
        raise UsageError(f"the run in {folder} was destroyed: nothing to {operation}")
    if record.dry_run or "vms" not in record.reached:
        raise UsageError(f"the run in {folder} has no VMs yet: deploy it first (vm5k --resume {folder})")


def describe(operation: str, vms: list[VM], *, grace: float = DEFAULT_GRACE) -> str:
    """What the operation would do (the dry run's text)."""
    lines = [f"{operation} {len(vms)} VM{'s' * (len(vms) != 1)} ({WHAT[operation].format(grace=grace)}):"]
    lines += [f"  {vm.id} on {vm.host} ({vm.state})" for vm in vms]
    return "\n".join(lines)


def change(context: Any, operation: str, vms: Any, *, grace: float = DEFAULT_GRACE) -> list[VM]:
    """Do `operation` on the named VMs of the locked run in `context` (a `RunContext`), recording as it
    goes; returns the VMs it acted on, whose states say how it went."""
    record, folder = context.record, context.outdir
    check_changeable(record, folder, operation)
    topology: Topology = context.topology
    chosen = select_vms(topology, vms, operation)
    if not chosen:
        raise UsageError(f"{operation}: the run in {folder} has no VM")
    ids = [vm.id for vm in chosen]
    previous = record.status
    record.status, record.message = RUNNING, f"{operation} {', '.join(ids)}"
    context.save(topology)
    settings = context.hypervisor_settings(topology)
    start = time.monotonic()
    try:
        with context.reporter.step(operation, f"{operation} {len(ids)} VMs"):
            topology = context.run_async(
                lambda ssh: change_vms(topology, ssh, settings, operation, ids, grace))
    except KeyboardInterrupt:
        record.message = f"interrupted during {operation} of {', '.join(ids)}: run it again"
        context.save(topology)
        raise
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


__all__ = ["DEFAULT_GRACE", "change", "check_changeable", "check_grace", "describe",
           "failed_vms", "select_vms", "vm_names"]
