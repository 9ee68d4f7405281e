"""More or fewer VMs in a running fleet: placed by the run's policy on its hosts, named by its service.

Why apart from `vm5k.change`: adding VMs is a small deployment (ids, placement, addresses, the service's
names, the VMs step) and removing them gives all of that back; stop/start/reboot/reset only act on VMs
that exist. Both act on the locked run of a `RunContext` (`workflow.stored_run`) and keep its record true
the same way (`change.finished`).

- ids are never reused: ``meta["last_vm_number"]`` remembers the highest ``vm-N`` the run ever had;
- added VMs take the run's template (or the one given, on the run's backing file when it names none),
  are placed on the run's OK hosts by its distribution and capacity rule (no room: `NotEnoughCapacity`
  before anything starts), get the first free addresses of the run's pool, and are created by the VMs
  step, which keeps the running VMs as they are;
- removed VMs lose their domain and files on every host that holds them, their address (free for the next
  VM) and their name in the run's dnsmasq, and their line in the outdir's ``known_hosts``.

>>> from vm5k.topology import Topology
>>> topo = Topology.from_xml('<vm5k><site id="s"><cluster id="c"><host id="h1">'
...                          '<vm id="vm-1"/><vm id="vm-4"/></host></cluster></site></vm5k>')
>>> new_ids(topo, 2)
['vm-5', 'vm-6']
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from vm5k.addresses import POOL_KEY, AddressPool, assign
from vm5k.change import PENDING_KEY, begin, check_changeable, finished, interrupted, select_vms
from vm5k.errors import DeploymentError, UsageError
from vm5k.hypervisor import deploy_vms, setup_service
from vm5k.hypervisor.operations import remove_vms
from vm5k.hypervisor.readiness import forget_host_key
from vm5k.hypervisor.state import mark_vm_ko, meta
from vm5k.runstate import RUNNING
from vm5k.topology import HOST_OK, VM, Topology, VMTemplate, natural_key

log = logging.getLogger(__name__)

LAST_NUMBER_KEY = "last_vm_number"
_NUMBERED = re.compile(r"vm-(\d+)")


def _last_number(topo: Topology) -> int:
    numbers = [int(match.group(1)) for vm in topo.vms() if (match := _NUMBERED.fullmatch(vm.id))]
    return max([int(topo.meta.get(LAST_NUMBER_KEY, 0)), *numbers])


def new_ids(topo: Topology, count: int) -> list[str]:
    """The ids of `count` new VMs: after every id the run ever had."""
    last = _last_number(topo)
    return [f"vm-{last + index}" for index in range(1, count + 1)]


def check_count(n_vm: Any) -> int:
    if isinstance(n_vm, bool) or not isinstance(n_vm, (int, str)) or not str(n_vm).strip().isdigit():
        raise UsageError(f"n_vm: {n_vm!r} is not a number of VMs")
    count = int(n_vm)
    if count < 1:
        raise UsageError("n_vm: add at least one VM")
    return count


def planned_additions(topo: Topology, count: int, template: VMTemplate | None, policy: Any) -> Topology:
    """A copy of the run's topology with `count` new VMs placed and addressed; pure, nothing touched.

    Raises `UsageError` (`NotEnoughCapacity` when the run's hosts have no room) before anything starts."""
    result = topo.copy()
    existing = sorted(result.vms(), key=lambda vm: natural_key(vm.id))
    base = template or (existing[0].template if existing else VMTemplate())
    backing = base.backing_file or next((vm.backing_file for vm in existing if vm.backing_file), None)
    images = meta(result).get("images", {})
    if backing not in images:
        raise UsageError(f"the backing file {backing} is not on the run's hosts (its VMs use "
                         f"{', '.join(sorted(images)) or 'none'}): add VMs on the run's image")
    hosts = [host for host in result.hosts() if host.state == HOST_OK]
    if not hosts:
        raise UsageError("the run has no host in state OK to add VMs on")
    vms = []
    for vm_id in new_ids(result, count):
        vm = base.make_vm(vm_id)
        vm.backing_file = backing
        result.add_vm(vm)
        vms.append(vm)
    placement = policy.place(vms, hosts)  # NotEnoughCapacity (a UsageError) when they do not fit
    result.assign(placement.assignment)
    try:
        assign(result, AddressPool.from_dict(result.meta.get(POOL_KEY)))
    except DeploymentError as error:
        raise UsageError(f"no address for the new VMs: {error}") from None
    result.meta[LAST_NUMBER_KEY] = _last_number(result)
    return result


def describe_additions(before: Topology, after: Topology) -> str:
    known = {vm.id for vm in before.vms()}
    added = sorted((vm for vm in after.vms() if vm.id not in known), key=lambda vm: natural_key(vm.id))
    lines = [f"add {len(added)} VM{'s' * (len(added) != 1)} (create, start, wait until they answer SSH):"]
    lines += [f"  {vm.id} on {vm.host} ({vm.ip}, {vm.mem} MiB, {vm.n_cpu} vCPU)" for vm in added]
    return "\n".join(lines)


def describe_removal(vms: list[VM]) -> str:
    lines = [f"remove {len(vms)} VM{'s' * (len(vms) != 1)} (domain, disks, address and name freed):"]
    lines += [f"  {vm.id} on {vm.host} ({vm.ip})" for vm in vms]
    return "\n".join(lines)


def add(context: Any, count: int, template: VMTemplate | None) -> list[VM]:
    """Add `count` VMs to the locked run of `context`; returns them (their states say how it went)."""
    record, folder = context.record, context.outdir
    check_changeable(record, folder, "add VMs to", context.topology)
    topo = planned_additions(context.topology, count, template, context.placement)
    known = {vm.id for vm in context.topology.vms()}
    added = [vm.id for vm in topo.vms() if vm.id not in known]
    previous = record.status
    record.status, record.message = RUNNING, f"add {', '.join(added)}"
    context.save(topo)  # the intent: an interrupted add is finished by --resume (the VMs step)
    settings = context.hypervisor_settings(topo)
    start = time.monotonic()
    with context.reporter.step("add", f"add {len(added)} VMs"):
        topo = context.run_async(lambda ssh: setup_service(topo, ssh, settings, context.reporter.hypervisor))
        context.save(topo)
        topo = context.run_async(lambda ssh: deploy_vms(topo, ssh, settings, context.reporter.hypervisor))
    finished(context, topo, previous)
    log.info("added %d VMs in %.1f s", len(added), time.monotonic() - start)
    return [vm for vm in topo.vms() if vm.id in set(added)]


def remove(context: Any, vms: Any, *, finishing: bool = False) -> list[str]:
    """Remove the named VMs from the locked run of `context`; returns the ids removed. `finishing`: a
    resume doing again the removal that did not end (`vm5k.change.finish_pending`)."""
    record, folder = context.record, context.outdir
    topo: Topology = context.topology
    check_changeable(record, folder, "remove VMs from", None if finishing else topo)
    if vms is None:
        raise UsageError("remove: name the VMs to remove (vm-7,vm-8); vm5k --destroy removes a whole run")
    chosen = select_vms(topo, vms, "remove")
    ids = [vm.id for vm in chosen]
    previous = record.status
    topo.meta[LAST_NUMBER_KEY] = _last_number(topo)  # before they go: their ids are never given again
    begin(context, topo, "remove", ids)
    settings = context.hypervisor_settings(topo)
    with context.reporter.step("remove", f"remove {len(ids)} VMs"):
        outcome: dict[str, str | None] = {}

        async def work(ssh: Any) -> Topology:
            outcome.update(await remove_vms(topo, ssh, settings, ids))
            return topo

        try:
            context.run_async(work)
        except KeyboardInterrupt:
            raise interrupted(context, topo, "remove", ids) from None
        gone = []
        for vm in chosen:
            why = outcome.get(vm.id)
            if why is not None:
                mark_vm_ko(vm, f"remove: {why}")
                continue
            topo.unplace(vm)
            topo.unplaced = [other for other in topo.unplaced if other.id != vm.id]
            if vm.ip:
                forget_host_key(context.outdir / "known_hosts", vm.ip)
            gone.append(vm.id)
        topo.meta.pop(PENDING_KEY, None)  # the domains and disks are gone: the record is true again
        context.save(topo)
        if gone:  # the names go with them
            topo = context.run_async(
                lambda ssh: setup_service(topo, ssh, settings, context.reporter.hypervisor))
    finished(context, topo, previous)
    for vm_id in ids:
        if vm_id in gone:
            log.info("remove %s: gone", vm_id)
        else:
            log.error("remove %s: %s", vm_id, outcome.get(vm_id))
    return gone

