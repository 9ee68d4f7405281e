"""Where each VM goes: the four distributions of the original vm5k, the capacity rule, and how many VMs fit.

Capacity rule (the same everywhere: placement, dry-run checks, ``vm5k_max_vms``):

- **memory is never overcommitted**: a host offers its RAM minus a hypervisor reserve (default
  1024 MiB, ``--host-reserve``) for the host OS, libvirt and QEMU's own overhead; the VMs' ``mem`` must
  fit in what is left;
- **vCPUs may be overcommitted**: a host offers ``floor(hardware threads × ratio)`` vCPUs (default ratio
  2.0, ``--cpu-overcommit``; threads = cores when the hardware has no SMT). CPU time is shared, so mostly
  idle VMs are fine at 2 vCPUs per thread; use ``--cpu-overcommit 1`` for performance experiments.
- a host that cannot run VMs (``Capacity.virtual`` false) offers nothing; a host whose capacity is unknown
  is not checked (the result says which hosts were not checked).

Distributions (hosts are used in the order given, which is the topology's document order):

- ``round-robin`` (default; ``distributed`` is the old name): one VM per host in turn, skipping hosts
  that cannot hold the next VM;
- ``concentrated``: fill the first host, then the next (first fit in host order);
- ``random``: a host drawn at random among those that can still hold the VM, from a seeded generator
  (the same seed, hosts and VMs give the same placement);
- ``n_by_hosts``: the same number of VMs on every host. When the count does not divide, nothing is
  dropped (unlike the original, which silently truncated): every host gets ``V // H`` VMs and the first
  ``V % H`` hosts one more, and a warning says so. A host that cannot hold its share is an error.

When the VMs do not fit, `NotEnoughCapacity` (a UsageError: exit status 2, nothing reserved) carries a
table of needed versus available resources.

This module is pure: no I/O. It places 10,000 VMs on 904 hosts in a few milliseconds (benchmarks/).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vm5k.errors import UsageError
from vm5k.topology import HOST_KO, MIB, VM, Capacity, Host, Topology, VMTemplate

DEFAULT_HOST_RESERVE_MIB = 1024
DEFAULT_CPU_OVERCOMMIT = 2.0

DEFAULT_DISTRIBUTION = "round-robin"
DISTRIBUTIONS = (DEFAULT_DISTRIBUTION, "n_by_hosts", "concentrated", "random")
_ALIASES = {"distributed": "round-robin", "round_robin": "round-robin", "roundrobin": "round-robin",
            "n-by-hosts": "n_by_hosts"}


def normalize_distribution(name: str) -> str:
    """The canonical name of a distribution (accepting the original vm5k's spellings), else UsageError."""
    canonical = _ALIASES.get(name, name)
    if canonical not in DISTRIBUTIONS:
        raise UsageError(f"unknown distribution {name!r}: choose from {', '.join(DISTRIBUTIONS)}")
    return canonical


@dataclass(frozen=True)
class Limits:
    """How much of a host VMs may use (see the module docstring)."""

    host_reserve_mib: int = DEFAULT_HOST_RESERVE_MIB
    cpu_overcommit: float = DEFAULT_CPU_OVERCOMMIT

    def __post_init__(self) -> None:
        if not isinstance(self.host_reserve_mib, int) or self.host_reserve_mib < 0:
            raise UsageError(f"host reserve must be a whole number of MiB ≥ 0, not {self.host_reserve_mib!r}")
        if not (isinstance(self.cpu_overcommit, int | float) and math.isfinite(self.cpu_overcommit)
                and 0 < self.cpu_overcommit <= 64):
            raise UsageError(f"CPU overcommit must be a ratio in (0, 64], not {self.cpu_overcommit!r}")

    def budget(self, capacity: Capacity | None) -> Budget:
        """What a host with this hardware offers to VMs (unlimited when unknown)."""
        if capacity is None:
            return Budget(None, None)
        if not capacity.virtual:
            return Budget(0, 0)
        mem = max(0, capacity.ram // MIB - self.host_reserve_mib)
        vcpus = math.floor(capacity.hw_threads * self.cpu_overcommit + 1e-9)
        return Budget(mem, vcpus)

    def describe(self) -> str:
        return (f"{self.host_reserve_mib} MiB of each host kept for the hypervisor, "
                f"{self.cpu_overcommit:g} vCPU per hardware thread")


@dataclass(frozen=True)
class PlacementPolicy:
    """How the user asked VMs to be placed: the distribution, the seed of ``random``, the capacity limits.

    Why one value: the request, the planner, every platform and the run record all place VMs (the plan,
    then again when hosts fail or are replaced), and must all place them the same way.

    >>> policy = PlacementPolicy("distributed", seed=7)
    >>> policy.distribution
    'round-robin'
    >>> PlacementPolicy.from_dict(policy.to_dict()) == policy
    True
    """

    distribution: str = DEFAULT_DISTRIBUTION
    seed: int | None = None
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        object.__setattr__(self, "distribution", normalize_distribution(self.distribution))

    def place(self, vms: Sequence[VM], hosts: Sequence[Host]) -> Placement:
        """`place` with this policy."""
        return place(vms, hosts, self.distribution, limits=self.limits, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        """JSON values, as the run records and ``--dry-run`` keep them."""
        return {"distribution": self.distribution, "seed": self.seed,
                "limits": {"host_reserve_mib": self.limits.host_reserve_mib,
                           "cpu_overcommit": self.limits.cpu_overcommit}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlacementPolicy:
        """The inverse of `to_dict` (the limits may also stand at the top level, as older runs kept them)."""
        limits = data.get("limits") or data
        return cls(str(data.get("distribution") or DEFAULT_DISTRIBUTION), data.get("seed"),
                   Limits(int(limits.get("host_reserve_mib", DEFAULT_HOST_RESERVE_MIB)),
                          float(limits.get("cpu_overcommit", DEFAULT_CPU_OVERCOMMIT))))


@dataclass(frozen=True)
class Budget:
    """Memory (MiB) and vCPUs a host offers to VMs; None means unknown (not checked)."""

    mem: int | None
    vcpus: int | None

    @property
    def known(self) -> bool:
        return self.mem is not None

    def count(self, template: VMTemplate | VM) -> int | None:
        """How many VMs of `template` fit in this budget (None when unknown)."""
        if self.mem is None or self.vcpus is None:
            return None
        return max(0, min(self.mem // template.mem, self.vcpus // template.n_cpu))


class NotEnoughCapacity(UsageError):
    """The VMs do not fit on the hosts. The message is one line; `table()` shows needed vs available."""

    def __init__(self, message: str, needed: tuple[int, int, int], available: tuple[int, int, int],
                 limits: Limits, max_vms: int | None = None) -> None:
        super().__init__(message)
        self.needed = needed  # VMs, MiB, vCPUs
        self.available = available
        self.limits = limits
        self.max_vms = max_vms

    def table(self) -> str:
        rows = [("", "VMs", "RAM (MiB)", "vCPUs"),
                ("needed", *map(str, self.needed)),
                ("available", str(self.max_vms) if self.max_vms is not None else "-",
                 *map(str, self.available[1:]))]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                           for i, cell in enumerate(row)).rstrip() for row in rows]
        lines.append(f"(available: {self.limits.describe()}; 'VMs' is how many VMs of this size fit)")
        return "\n".join(lines)


@dataclass
class Placement:
    """The result of `place`: VM id → host id in VM order, plus what the user should be told."""

    assignment: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    unchecked_hosts: list[str] = field(default_factory=list)  # hosts of unknown capacity

    def by_host(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for vm_id, host_id in self.assignment.items():
            result.setdefault(host_id, []).append(vm_id)
        return result


class _Slot:
    """A host's remaining budget while placing (unknown capacity: infinite)."""

    __slots__ = ("host", "mem", "vcpus")

    def __init__(self, host: Host, limits: Limits) -> None:
        budget = limits.budget(host.capacity)
        self.host = host.id
        self.mem = math.inf if budget.mem is None else budget.mem
        self.vcpus = math.inf if budget.vcpus is None else budget.vcpus
        for vm in host.vms:  # VMs already there use their share
            self.mem -= vm.mem
            self.vcpus -= vm.n_cpu

    def fits(self, vm: VM) -> bool:
        return vm.mem <= self.mem and vm.n_cpu <= self.vcpus

    def take(self, vm: VM) -> None:
        self.mem -= vm.mem
        self.vcpus -= vm.n_cpu


def place(vms: Sequence[VM], hosts: Sequence[Host], distribution: str = DEFAULT_DISTRIBUTION, *,
          limits: Limits | None = None, seed: int | None = None) -> Placement:
    """Choose a host for each VM; VMs already on `hosts` count as used. Pure: nothing is modified.

    Raises `NotEnoughCapacity` when the VMs do not fit, UsageError for a bad distribution or no host.

    >>> from vm5k.topology import GIB
    >>> hosts = [Host("a", Capacity(ram=5 * GIB, cores=4)), Host("b", Capacity(ram=3 * GIB, cores=4))]
    >>> place([VM(f"vm-{i}") for i in range(1, 7)], hosts).by_host()
    {'a': ['vm-1', 'vm-3', 'vm-5', 'vm-6'], 'b': ['vm-2', 'vm-4']}
    """
    limits = limits or Limits()
    distribution = normalize_distribution(distribution)
    if not vms:
        return Placement()
    if not hosts:
        raise UsageError(f"no host to place {len(vms)} VMs on")
    slots = [_Slot(host, limits) for host in hosts]
    result = Placement(unchecked_hosts=[host.id for host in hosts if host.capacity is None])
    if distribution == "concentrated" and result.unchecked_hosts:
        raise UsageError(f"the concentrated distribution needs the hosts' capacity, unknown for "
                         f"{_few(result.unchecked_hosts)}")
    try:
        if distribution == "n_by_hosts":
            _n_by_hosts(vms, slots, result)
        else:
            _first_fit(vms, slots, result, distribution, seed)
    except _NoRoom as no_room:
        error = not_enough_capacity(vms, hosts, limits, no_room.vm)
        if no_room.host is not None:  # n_by_hosts: the total may fit, one host's share does not
            host = next(host for host in hosts if host.id == no_room.host)
            holds = _count(_Slot(host, limits), no_room.vm)
            error = NotEnoughCapacity(
                f"n_by_hosts: host {host.id} cannot hold its {no_room.share} VMs (it holds {holds} of "
                f"{no_room.vm.mem} MiB/{no_room.vm.n_cpu} vCPU); use fewer VMs, other hosts or another "
                "distribution", error.needed, error.available, limits, error.max_vms)
        raise error from None
    return result


def distribute(topology: Topology, policy: PlacementPolicy | None = None) -> Placement:
    """Place the topology's unplaced VMs on its hosts (in document order) and move them there."""
    placement = (policy or PlacementPolicy()).place(topology.unplaced, topology.hosts())
    topology.assign(placement.assignment)
    return placement


class _NoRoom(Exception):
    def __init__(self, vm: VM, host: str | None = None, share: int = 0) -> None:
        self.vm = vm
        self.host = host  # n_by_hosts: the host that cannot hold its share
        self.share = share


def _first_fit(vms: Sequence[VM], slots: list[_Slot], result: Placement, distribution: str,
               seed: int | None) -> None:
    """Round-robin, concentrated and random share one loop: they differ in where the search starts.

    A host that cannot hold the smallest VM still to place (in memory or in vCPUs) leaves the ring for
    good, so with VMs of one size each VM costs O(1) and the whole run O(V + H).
    """
    min_mem, min_cpu = _suffix_minima(vms)
    rng = random.Random(seed)
    ring = list(slots)
    cursor = 0
    for index, vm in enumerate(vms):
        if distribution == "random" and ring:
            cursor = rng.randrange(len(ring))
        elif distribution == "concentrated":
            cursor = 0
        chosen = None
        tried = 0
        while ring and tried < len(ring):
            cursor %= len(ring)
            slot = ring[cursor]
            if slot.fits(vm):
                chosen = slot
                break
            if slot.mem < min_mem[index] or slot.vcpus < min_cpu[index]:
                del ring[cursor]  # full for every VM still to come
            else:
                cursor += 1
                tried += 1
        if chosen is None:
            raise _NoRoom(vm)
        chosen.take(vm)
        result.assignment[vm.id] = chosen.host
        if distribution == "round-robin":
            cursor += 1


def _n_by_hosts(vms: Sequence[VM], slots: list[_Slot], result: Placement) -> None:
    share, extra = divmod(len(vms), len(slots))
    if extra:
        if share == 0:
            result.warnings.append(f"n_by_hosts: {len(vms)} VMs for {len(slots)} hosts: {extra} hosts get "
                                   f"1 VM, {len(slots) - extra} get none")
        else:
            result.warnings.append(f"n_by_hosts: {len(vms)} VMs do not divide among {len(slots)} hosts: "
                                   f"{extra} hosts get {share + 1} VMs, {len(slots) - extra} get {share}")
    position = 0
    for number, slot in enumerate(slots):
        count = share + (1 if number < extra else 0)
        for vm in vms[position:position + count]:
            if not slot.fits(vm):
                raise _NoRoom(vm, slot.host, count)
            slot.take(vm)
            result.assignment[vm.id] = slot.host
        position += count


def _suffix_minima(vms: Sequence[VM]) -> tuple[list[float], list[float]]:
    """For each position, the smallest memory and vCPU count among the VMs from there on."""
    min_mem: list[float] = [math.inf] * (len(vms) + 1)
    min_cpu: list[float] = [math.inf] * (len(vms) + 1)
    for index in range(len(vms) - 1, -1, -1):
        min_mem[index] = min(min_mem[index + 1], vms[index].mem)
        min_cpu[index] = min(min_cpu[index + 1], vms[index].n_cpu)
    return min_mem, min_cpu


def not_enough_capacity(vms: Sequence[VM], hosts: Sequence[Host], limits: Limits,
                        failing: VM) -> NotEnoughCapacity:
    """The error for VMs that do not fit on `hosts`: one line, plus a needed-vs-available table."""
    fresh = [_Slot(host, limits) for host in hosts]
    known = [slot for slot in fresh if not math.isinf(slot.mem)]
    needed = (len(vms), sum(vm.mem for vm in vms), sum(vm.n_cpu for vm in vms))
    avail_mem = sum(max(0, int(slot.mem)) for slot in known)
    avail_cpu = sum(max(0, int(slot.vcpus)) for slot in known)
    fit = sum(_count(slot, failing) for slot in known)
    size = f"{failing.mem} MiB/{failing.n_cpu} vCPU"
    if not any(slot.fits(failing) for slot in fresh):
        biggest = max(known, key=lambda slot: (slot.mem, slot.vcpus))
        message = (f"VM {failing.id} ({size}) fits on no host: the largest offers "
                   f"{max(0, int(biggest.mem))} MiB and {max(0, int(biggest.vcpus))} vCPUs "
                   f"({limits.describe()})")
    else:
        message = (f"not enough capacity: {needed[0]} VMs need {needed[1]} MiB and {needed[2]} vCPUs, the "
                   f"{len(hosts)} hosts offer {avail_mem} MiB and {avail_cpu} vCPUs: at most {fit} VMs of "
                   f"{size} fit")
    return NotEnoughCapacity(message, needed, (fit, avail_mem, avail_cpu), limits, fit)


def _count(slot: _Slot, vm: VM) -> int:
    if slot.mem < 0 or slot.vcpus < 0:
        return 0
    return int(min(slot.mem // vm.mem, slot.vcpus // vm.n_cpu))


# -- how many VMs fit (vm5k_max_vms) ---------------------------------------------------------------------


@dataclass
class MaxVms:
    """How many VMs of one template fit: per host (None when its capacity is unknown) and in total."""

    template: VMTemplate
    per_host: dict[str, int | None]
    total: int
    unknown: list[str]


def max_vms(hosts: Sequence[Host], template: VMTemplate, limits: Limits | None = None) -> MaxVms:
    """Per host and in total, how many VMs of `template` fit, counting VMs already on the hosts.

    >>> from vm5k.topology import GIB
    >>> host = Host("a", Capacity(ram=9 * GIB, cores=2, threads=4))
    >>> result = max_vms([host], VMTemplate(mem=2048, n_cpu=2))
    >>> result.per_host, result.total
    ({'a': 4}, 4)
    """
    limits = limits or Limits()
    per_host: dict[str, int | None] = {}
    for host in hosts:
        slot = _Slot(host, limits)
        per_host[host.id] = None if math.isinf(slot.mem) else _count(slot, template.make_vm("probe"))
    unknown = [host_id for host_id, count in per_host.items() if count is None]
    return MaxVms(template, per_host, sum(count or 0 for count in per_host.values()), unknown)


@dataclass(frozen=True)
class CountedFit:
    """What ``-r NAME:COUNT`` can hold: OAR gives `count` of the `candidates` hosts, and which ones decides
    between `fewest` VMs (the hosts that hold the least) and `most` (those that hold the most)."""

    element: str
    count: int
    candidates: int
    fewest: int
    most: int


def counted_fit(result: MaxVms, members: Sequence[str], element: str, count: int) -> CountedFit:
    """The range of VMs that `count` hosts among `members` hold (hosts of unknown capacity are left out).

    >>> result = MaxVms(VMTemplate(mem=512), {"a": 4, "b": 10, "c": 7}, 21, [])
    >>> counted_fit(result, ["a", "b", "c"], "cluster", 2)
    CountedFit(element='cluster', count=2, candidates=3, fewest=11, most=17)
    """
    known = sorted(n for host in members if (n := result.per_host.get(host)) is not None)
    take = min(count, len(known))
    return CountedFit(element, count, len(members), sum(known[:take]), sum(known[len(known) - take:]))


def check(topology: Topology, limits: Limits | None = None) -> list[str]:
    """Check the VMs already placed (e.g. from ``-i``) against their hosts; returns the hosts not checked.

    Raises NotEnoughCapacity naming the first overloaded host.
    """
    limits = limits or Limits()
    unchecked = []
    for host in topology.hosts():
        if host.capacity is None:
            unchecked.append(host.id)
            continue
        if not host.vms:
            continue
        slot = _Slot(host, limits)
        if slot.mem < 0 or slot.vcpus < 0:
            budget = limits.budget(host.capacity)
            needed = (len(host.vms), sum(vm.mem for vm in host.vms), sum(vm.n_cpu for vm in host.vms))
            fit = _count(_Slot(Host(host.id, host.capacity), limits), host.vms[0])
            raise NotEnoughCapacity(
                f"host {host.id} cannot hold its {len(host.vms)} VMs: they need {needed[1]} MiB and "
                f"{needed[2]} vCPUs, it offers {budget.mem} MiB and {budget.vcpus} vCPUs",
                needed, (fit, budget.mem or 0, budget.vcpus or 0), limits, fit)
    return unchecked


def _few(names: Sequence[str], limit: int = 3) -> str:
    listed = ", ".join(names[:limit])
    return listed + (f" and {len(names) - limit} more" if len(names) > limit else "")


def place_unplaced(topology: Topology, policy: PlacementPolicy) -> list[str]:
    """Place the unplaced VMs on the hosts that are not KO; returns placement warnings.

    NotEnoughCapacity (a UsageError naming what is missing) when they do not fit.
    """
    limits = policy.limits
    if not topology.unplaced:
        return []
    hosts = [host for host in topology.hosts() if host.state != HOST_KO]
    if not hosts:
        raise NotEnoughCapacity(f"no host left for {len(topology.unplaced)} VMs",
                                (len(topology.unplaced), 0, 0), (0, 0, 0), limits, 0)
    try:
        placement = policy.place(topology.unplaced, hosts)
    except NotEnoughCapacity:
        # VMs of mixed sizes can fragment in one host order and fit in another: biggest hosts first
        biggest = sorted(hosts, key=lambda h: -(limits.budget(h.capacity).mem or 0))
        if biggest == hosts:
            raise
        placement = policy.place(topology.unplaced, biggest)
    topology.assign(placement.assignment)
    return placement.warnings


def evacuate(topology: Topology, failed: Sequence[Host], policy: PlacementPolicy) -> list[str]:
    """Move the VMs of the `failed` hosts (KO, in `topology`) onto the hosts left; returns placement warnings.

    Why one routine: hosts fail at deployment (Kadeploy) and at set-up (SSH, libvirt); either way the fleet
    must stay as large as asked, placed the way the user asked. `NotEnoughCapacity` when the VMs do not
    fit: they are then left unplaced in `topology`, for the record. Any other exception is a bug.

    >>> from vm5k.topology import GIB
    >>> topo = Topology()
    >>> failed = topo.add_host("s", "c", Host("a", Capacity(8 * GIB, 4), HOST_KO, vms=[VM("vm-1")]))
    >>> _ = topo.add_host("s", "c", Host("b", Capacity(8 * GIB, 4)))
    >>> evacuate(topo, [failed], PlacementPolicy())
    []
    >>> [(vm.id, vm.host) for vm in topo.vms()]
    [('vm-1', 'b')]
    """
    for vm in [vm for host in failed for vm in list(host.vms)]:
        topology.unplace(vm)
    return place_unplaced(topology, policy)
