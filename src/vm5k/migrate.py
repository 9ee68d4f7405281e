"""Live migration of a run's VMs, at the level of the run: what is asked, whether it may be done, the record.

Every refusal comes before anything moves, in one line: an unknown VM or host, a VM not running, a
destination that is its own host, not OK, of another accelerator (TCG and KVM guests do not migrate into
each other), without a processor feature of a KVM guest's CPU (libvirt's host-model is the source's
processor), of another bridge name, or without room (memory after the hypervisor reserve, vCPUs within the
overcommit ratio, the VMs migrating there counted). The intent is saved before the hosts are touched
(``meta["migrations"]``); afterwards every outdir file shows the VMs' new hosts. The host-side work is
`vm5k.hypervisor.migration`.

>>> parse_moves("vm-3=paradoxe-2,vm-5=paradoxe-1")
{'vm-3': 'paradoxe-2', 'vm-5': 'paradoxe-1'}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vm5k import outdir
from vm5k.change import check_changeable, finished
from vm5k.errors import DeploymentError, UsageError
from vm5k.hypervisor.migration import KEY_COMMENT, Migrations, Move, make_key, settle
from vm5k.hypervisor.runtime import HostRuntime
from vm5k.placement import NotEnoughCapacity, place
from vm5k.runstate import RUNNING
from vm5k.topology import HOST_OK, VM, VM_OK, Host, Topology

log = logging.getLogger(__name__)

INTENT_KEY = "migrations"
KEY_FILE = "migration_key"
DEFAULT_PARALLEL = 2


def parse_moves(moves: Any) -> dict[str, str]:
    """``vm-3=paradoxe-2[,vm-5=...]`` or a mapping → VM id → host name."""
    if isinstance(moves, Mapping):
        pairs = [(str(vm.id if isinstance(vm, VM) else vm), str(host.id if isinstance(host, Host) else host))
                 for vm, host in moves.items()]
    elif isinstance(moves, str):
        pairs = []
        for item in moves.split(","):
            vm, sep, host = item.strip().partition("=")
            if not sep or not vm.strip() or not host.strip():
                raise UsageError(f"migrate: {item.strip()!r} is not VM=HOST (e.g. vm-3=paradoxe-2)")
            pairs.append((vm.strip(), host.strip()))
    else:
        raise UsageError("migrate: give VM=HOST pairs (vm-3=paradoxe-2) or a mapping {'vm-3': 'paradoxe-2'}")
    if not pairs:
        raise UsageError("migrate: no VM=HOST pair given")
    result: dict[str, str] = {}
    for vm, host in pairs:
        if vm in result:
            raise UsageError(f"migrate: {vm} is given twice")
        result[vm] = host
    return result


def find_host(topo: Topology, name: str) -> Host:
    """A run's host by id or short name (``paradoxe-2`` for ``paradoxe-2.rennes.grid5000.fr``)."""
    hosts = topo.hosts()
    for host in hosts:
        if host.id == name:
            return host
    short = [host for host in hosts if host.id.split(".")[0] == name]
    if len(short) == 1:
        return short[0]
    raise UsageError(f"migrate: {name} is not a host of this run (its hosts: "
                     f"{', '.join(host.id.split('.')[0] for host in hosts) or 'none'})")


def plan_moves(topo: Topology, moves: Any, policy: Any) -> list[Move]:
    """The checked moves (see the module docstring); pure: `UsageError` for anything refused."""
    asked = parse_moves(moves)
    trial = topo.copy()
    limits = policy.limits
    planned = []
    for vm_id, name in asked.items():
        vm = trial.find_vm(vm_id)
        if vm is None:
            raise UsageError(f"migrate: {vm_id} is not a VM of this run")
        dest = find_host(trial, name)
        source = trial.host(vm.host) if vm.host else None
        if vm.state != VM_OK or source is None:
            raise UsageError(f"migrate: {vm_id} is not running (state {vm.state}): only a VM that answers "
                             "migrates live")
        if source.id == dest.id:
            raise UsageError(f"migrate: {vm_id} is already on {dest.id}")
        if dest.state != HOST_OK:
            raise UsageError(f"migrate: {dest.id} is not a usable host of the run (state {dest.state})")
        facts_from, facts_to = HostRuntime.of(source), HostRuntime.of(dest)
        accel_from, accel_to = facts_from.accel, facts_to.accel
        if accel_from != accel_to:
            raise UsageError(f"migrate: {vm_id} runs under {accel_from} on {source.id}, {dest.id} offers "
                             f"{accel_to}: a guest does not migrate between accelerators")
        missing = facts_from.missing_cpu_flags(facts_to) if accel_from == "kvm" else []
        if missing:
            shown = " ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            raise UsageError(f"migrate: {vm_id}'s CPU is {source.id}'s ({facts_from.cpu_model or 'unknown'}"
                             f"), {dest.id} ({facts_to.cpu_model or 'unknown'}) lacks {shown}: the guest "
                             "would not start there")
        bridge_from, bridge_to = facts_from.bridge, facts_to.bridge
        if bridge_from and bridge_to and bridge_from != bridge_to:
            raise UsageError(f"migrate: {vm_id} is on bridge {bridge_from} of {source.id}, {dest.id} has "
                             f"{bridge_to}: the domain needs the same bridge name at the destination")
        probe = VM(f"{vm_id}-migrating", mem=vm.mem, n_cpu=vm.n_cpu, hdd=vm.hdd)
        try:
            place([probe], [dest], limits=limits)
        except NotEnoughCapacity as error:
            raise UsageError(f"migrate: no room for {vm_id} ({vm.mem} MiB, {vm.n_cpu} vCPU) on {dest.id}: "
                             f"{error}") from None
        planned.append(Move(vm_id, source.id, dest.id))
        trial.place(vm, dest.id)  # the next moves see it there
    return planned


def describe(moves: list[Move]) -> str:
    lines = [f"migrate {len(moves)} VM{'s' * (len(moves) != 1)} live (memory over TCP, overlay disk copied):"]
    lines += [f"  {move.vm}: {move.source} -> {move.dest}" for move in moves]
    return "\n".join(lines)


def run_key(folder: Path, run_id: str) -> tuple[bytes, str]:
    """The run's migration key pair, made once and kept in the outdir (private, 0600)."""
    private, public = folder / KEY_FILE, folder / f"{KEY_FILE}.pub"
    if not (private.exists() and public.exists()):
        data, line = make_key(KEY_COMMENT.format(run=run_id))
        outdir.write_atomic(private, data, mode=0o600)
        outdir.write_atomic(public, line + "\n")
    return private.read_bytes(), public.read_text().strip()


def migrate(context: Any, moves: Any, parallel: int = DEFAULT_PARALLEL) -> dict[str, str | None]:
    """Migrate VMs of the locked run of `context`; VM id → None (it runs on its new host) or why not."""
    record, folder = context.record, context.outdir
    topo: Topology = context.topology
    check_changeable(record, folder, "migrate", topo)
    planned = plan_moves(topo, moves, context.placement)
    previous = record.status
    topo.meta[INTENT_KEY] = {move.vm: {"from": move.source, "to": move.dest} for move in planned}
    record.status, record.message = RUNNING, "migrate " + ", ".join(f"{m.vm} to {m.dest}" for m in planned)
    context.save(topo)
    settings = context.hypervisor_settings(topo)
    key, public = run_key(folder, record.run_id)
    outcome: dict[str, str | None] = {}
    start = time.monotonic()

    async def work(ssh: Any) -> Topology:
        outcome.update(await Migrations(topo, ssh, settings, key, public, parallel).run(planned))
        return topo

    with context.reporter.step("migrate", f"migrate {len(planned)} VMs"):
        context.run_async(work)
    for move in planned:
        if outcome.get(move.vm) is None:
            topo.meta[INTENT_KEY].pop(move.vm, None)
    if not topo.meta[INTENT_KEY]:
        topo.meta.pop(INTENT_KEY)
    finished(context, topo, previous)
    log.info("migrations took %.1f s", time.monotonic() - start)
    failed = {vm: why for vm, why in outcome.items() if why is not None}
    for move in planned:
        if move.vm in failed:
            log.error("migrate %s to %s: %s", move.vm, move.dest, failed[move.vm])
        else:
            log.info("migrate %s: now on %s", move.vm, move.dest)
    if failed:
        raise DeploymentError("migration failed for "
                              + "; ".join(f"{vm}: {why}" for vm, why in failed.items()))
    return outcome


def settle_interrupted(context: Any) -> list[str]:
    """Before a resume: for each migration recorded as begun and not finished, ask both hosts where the
    VM runs, keep that one and clean the other (`vm5k.hypervisor.migration.settle`); saves the record.
    Returns the VMs settled."""
    topo: Topology = context.topology
    intents = dict(topo.meta.get(INTENT_KEY) or {})
    if not intents:
        return []
    settings = context.hypervisor_settings(topo)
    moves = [Move(vm, str(where["from"]), str(where["to"])) for vm, where in intents.items()
             if topo.find_vm(vm) is not None]

    async def work(ssh: Any) -> Topology:
        for move in moves:
            await settle(topo, ssh, settings, move)
            topo.meta[INTENT_KEY].pop(move.vm, None)
        return topo

    with context.reporter.step("migrate", f"settle {len(moves)} interrupted migrations"):
        context.run_async(work)
    topo.meta.pop(INTENT_KEY, None)
    context.save(topo)
    return [move.vm for move in moves]
