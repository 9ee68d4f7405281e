"""The sweep over time that finds the earliest slot, and the allocation of nodes, subnets and vlans in it.

Part of the pure planner (see ``vm5k.platforms.grid5000.planning``): no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from vm5k.errors import UsageError
from vm5k.placement import Budget, NotEnoughCapacity
from vm5k.platforms.grid5000.planning.availability import Availability, valid_starts
from vm5k.platforms.grid5000.planning.common import INFINITY, VLAN_GLOBAL, VLAN_ROUTED, Interval, NoSlot
from vm5k.platforms.grid5000.planning.demand import Demand, Plan, SitePlan, subnets_for
from vm5k.platforms.grid5000.planning.inventory import Inventory
from vm5k.platforms.grid5000.planning.selection import Selection, Want, select
from vm5k.topology import VM, Capacity, Host, natural_key

# ---------------------------------------------------------------------------------------------------
# the sweep


class _Counters:
    """Free resources at the current instant, updated event by event."""

    def __init__(self, clusters: int, sites: int) -> None:
        self.cluster = [0] * clusters
        self.site_nodes = [0] * sites
        self.total = 0
        self.vm_capacity = 0  # Σ VMs per free host (VM-sized quick check)
        self.mem = 0  # Σ MiB offered by free hosts
        self.vcpus = 0  # Σ vCPUs offered by free hosts
        self.subnets = [0] * sites
        self.slash16: list[dict[str, int]] = [{} for _ in range(sites)]
        self.vlans: list[dict[str, int]] = [{} for _ in range(sites)]


@dataclass
class _Resource:
    kind: str  # node | subnet | vlan
    site: int
    name: str
    cluster: int = -1
    weight: int = 0  # VMs per host (nodes)
    mem: int = 0  # MiB the node offers to VMs
    vcpus: int = 0
    group: str = ""  # /16 of a subnet, kind of a vlan
    starts: list[Interval] = field(default_factory=list)


def plan_slot(inventory: Inventory, availability: Availability, demand: Demand) -> Plan:
    """The earliest `Plan` for `demand` (see the module docstring).

    Raises UsageError when the request can never be met with the eligible nodes (too many nodes asked,
    VMs too big), NoSlot when network resources are missing, NotEnoughCapacity never (the caller checks
    the placement of counted hosts itself).
    """
    if demand.walltime <= 0:
        raise UsageError("the walltime must be longer than zero")
    sel = select(inventory, demand)
    site_names = list(dict.fromkeys(
        inventory.clusters[c].site for c in sel.eligible))
    site_index = {name: i for i, name in enumerate(site_names)}
    cluster_names = list(sel.eligible)
    cluster_index = {name: i for i, name in enumerate(cluster_names)}
    t0 = max(availability.now, demand.not_before or 0)
    length = demand.walltime
    probe = min((*demand.vms, *(vm for vms in demand.assigned.values() for vm in vms)),
                key=lambda vm: (vm.mem, vm.n_cpu), default=None)

    resources: list[_Resource] = []
    node_resource: dict[str, int] = {}
    limits = demand.placement.limits
    for name in cluster_names:
        cluster = inventory.clusters[name]
        status = availability.sites.get(cluster.site)
        budget = limits.budget(sel.capacity.get(name)) if name in sel.capacity else Budget(0, 0)
        weight = (budget.count(probe) or 0) if probe is not None else 0
        for node in sel.eligible[name]:
            usage = status.nodes.get(node.fqdn) if status else None
            if usage is None or not usage.usable:
                continue
            node_resource[node.fqdn] = len(resources)
            resources.append(_Resource("node", site_index[cluster.site], node.fqdn, cluster_index[name],
                                       weight, budget.mem or 0, budget.vcpus or 0,
                                       starts=valid_starts(usage.busy, length, t0)))
    _check_possible(sel, inventory, node_resource, demand)
    for site in site_names:
        status = availability.sites.get(site)
        if status is None:
            continue
        if not demand.kavlan:
            for cidr, usage in status.subnets.items():
                resources.append(_Resource("subnet", site_index[site], cidr, group=_slash16(cidr),
                                           starts=valid_starts(usage.busy, length, t0)))
        else:
            for vid, (kind, usage) in status.vlans.items():
                if kind in (VLAN_ROUTED, VLAN_GLOBAL) and usage.usable:
                    resources.append(_Resource("vlan", site_index[site], vid, group=kind,
                                               starts=valid_starts(usage.busy, length, t0)))

    events: list[tuple[int, int, int]] = []  # (time, +1/-1, resource)
    for index, resource in enumerate(resources):
        for start, end in resource.starts:
            events.append((start, 1, index))
            if end < INFINITY:
                events.append((end + 1, -1, index))
    events.sort()

    counters = _Counters(len(cluster_names), len(site_names))
    free = [False] * len(resources)
    allocator = _Allocator(inventory, sel, demand, site_names, cluster_names, counters, free, node_resource,
                           resources)
    position = 0
    while position < len(events):
        instant = events[position][0]
        grew = False
        while position < len(events) and events[position][0] == instant:
            _, delta, index = events[position]
            _apply(counters, resources[index], delta)
            free[index] = delta > 0
            grew = grew or delta > 0
            position += 1
        if not grew or instant < t0:
            continue
        if not allocator.quick():
            continue
        allocation = allocator.allocate()
        if allocation is not None:
            return _finish(allocation, instant, availability.now, demand, sel, inventory, resources, free)
    raise NoSlot(allocator.why_never())


def _apply(counters: _Counters, resource: _Resource, delta: int) -> None:
    if resource.kind == "node":
        counters.cluster[resource.cluster] += delta
        counters.site_nodes[resource.site] += delta
        counters.total += delta
        counters.vm_capacity += delta * resource.weight
        counters.mem += delta * resource.mem
        counters.vcpus += delta * resource.vcpus
    elif resource.kind == "subnet":
        counters.subnets[resource.site] += delta
        groups = counters.slash16[resource.site]
        groups[resource.group] = groups.get(resource.group, 0) + delta
    else:
        vlans = counters.vlans[resource.site]
        vlans[resource.group] = vlans.get(resource.group, 0) + delta


def _check_possible(sel: Selection, inventory: Inventory, node_resource: Mapping[str, int],
                    demand: Demand) -> None:
    """Fail at once when even a completely free platform could not satisfy the counts."""
    usable: dict[str, int] = {name: sum(1 for n in nodes if n.fqdn in node_resource)
                              for name, nodes in sel.eligible.items()}
    taken: dict[str, int] = {}
    for want in sel.wants:
        if want.kind == "host":
            if want.name not in node_resource:
                raise UsageError(f"host {want.name} cannot be planned: OAR reports it "
                                 "absent, dead or suspected")
            taken[want.clusters[0]] = taken.get(want.clusters[0], 0) + 1
            continue
        room = sum(usable[c] - taken.get(c, 0) for c in want.clusters)
        if room < want.count:
            where = "Grid'5000" if want.kind == "grid5000" else f"{want.kind} {want.name}"
            raise UsageError(f"-r asks for {want.count} nodes on {where}: only {max(room, 0)} usable nodes "
                             f"can run VMs there ({demand.queue} queue, without blacklisted, exotic, absent, "
                             "dead or suspected nodes)")
        remaining = want.count
        for cluster in want.clusters:
            take = min(remaining, usable[cluster] - taken.get(cluster, 0))
            taken[cluster] = taken.get(cluster, 0) + take
            remaining -= take
    if sel.pool and demand.vms:
        if not any(usable[c] for c in sel.pool):
            raise UsageError("no usable node to host the VMs (all absent, dead, suspected or blacklisted)")
        named = [w.name for w in sel.wants if w.kind == "host"]
        everything = host_order(inventory, named, {c: n for c, n in usable.items() if n}, sel.capacity,
                                demand.assigned)
        sizes = {(vm.mem, vm.n_cpu) for vm in demand.vms}
        if len(sizes) == 1 and demand.placement.distribution != "n_by_hosts" and not demand.assigned:
            # VMs of one size, first fit: counting them is exact, and much cheaper than placing them
            probe = demand.vms[0]
            limits = demand.placement.limits
            if sum(limits.budget(h.capacity).count(probe) or 0 for h in everything) >= len(demand.vms):
                return
        try:
            demand.placement.place(demand.vms, everything)
        except NotEnoughCapacity as error:
            raise NotEnoughCapacity(f"even every usable node would not do: {error}", error.needed,
                                    error.available, error.limits, error.max_vms) from None


@dataclass
class _SiteAllocation:
    """What one site gives at an instant: nodes counted per cluster, the named hosts, and the network."""

    clusters: dict[str, int] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)
    subnets: tuple[int, int] | None = None  # (22 or 16, count)
    vlan: str | None = None  # kavlan kind


#: An allocation: per site, what it gives.
_Allocation = dict[str, _SiteAllocation]

#: Adds `count` nodes of `cluster` to the allocation being drawn (and takes them from the free ones).
_Take = Callable[[str, int], None]


class _Allocator:
    """Turns the free counts of one instant into per-site, per-cluster node counts (or None)."""

    def __init__(self, inventory: Inventory, sel: Selection, demand: Demand, site_names: list[str],
                 cluster_names: list[str], counters: _Counters, free: list[bool],
                 node_resource: Mapping[str, int], resources: list[_Resource]) -> None:
        self.inventory, self.sel, self.demand = inventory, sel, demand
        self.site_names, self.cluster_names = site_names, cluster_names
        self.cluster_index = {name: i for i, name in enumerate(cluster_names)}
        self.counters, self.free, self.node_resource = counters, free, node_resource
        self.resources = resources
        self.fixed = sum(want.count for want in sel.wants)
        all_vms = (*demand.vms, *(vm for vms in demand.assigned.values() for vm in vms))
        self.vm_total = len(all_vms)
        self.need_mem = sum(vm.mem for vm in all_vms)
        self.need_cpu = sum(vm.n_cpu for vm in all_vms)
        self.sizing = bool(sel.pool and demand.vms)
        self.uniform = len({(vm.mem, vm.n_cpu) for vm in all_vms}) <= 1
        self.host_wants = [want for want in sel.wants if want.kind == "host"]
        self.slash16_size: dict[tuple[int, str], int] = {}
        for resource in resources:
            if resource.kind == "subnet":
                key = (resource.site, resource.group)
                self.slash16_size[key] = self.slash16_size.get(key, 0) + 1
        self._memo: dict[tuple[int, ...], tuple[dict[str, int], list[str]] | None] = {}
        self.last_failure = ""

    def quick(self) -> bool:
        """Cheap necessary conditions from the counters."""
        counters = self.counters
        if counters.total < self.fixed:
            return False
        for want in self.host_wants:
            if not self.free[self.node_resource[want.name]]:
                return False
        if self.sizing:
            if counters.mem < self.need_mem or counters.vcpus < self.need_cpu:
                return False
            if self.uniform and counters.vm_capacity < self.vm_total:
                return False
        return True

    def allocate(self) -> _Allocation | None:
        """Per site: the node counts per cluster, the named hosts and the network; None if short.

        The node part depends only on the free count of each cluster: it is remembered per count vector,
        so instants where only subnets or vlans changed cost no new sizing.
        """
        key = tuple(self.counters.cluster)
        if key not in self._memo:
            if len(self._memo) > 4096:
                self._memo.clear()
            self._memo[key] = self._nodes()
        nodes = self._memo[key]
        if nodes is None:
            return None
        chosen, hosts = nodes
        return self._network(chosen, hosts)

    def _nodes(self) -> tuple[dict[str, int], list[str]] | None:
        free = {name: self.counters.cluster[i] for i, name in enumerate(self.cluster_names)}
        chosen: dict[str, int] = {}
        hosts: list[str] = []

        def take(cluster: str, count: int) -> None:
            chosen[cluster] = chosen.get(cluster, 0) + count
            free[cluster] -= count

        for want in self.sel.wants:
            if want.kind == "host":
                hosts.append(want.name)
                free[want.clusters[0]] -= 1
            elif want.kind in ("cluster", "site"):
                if not self._draw(want.clusters, want.count, free, take):
                    self.last_failure = f"not enough free nodes on {want.kind} {want.name}"
                    return None
            elif not self._draw_grid(want, free, take):
                self.last_failure = "not enough free nodes on Grid'5000"
                return None
        if self.sizing and not self._size(chosen, hosts, free, take):
            self.last_failure = "not enough free hosts for the VMs"
            return None
        return chosen, hosts

    @staticmethod
    def _draw(clusters: Sequence[str], count: int, free: dict[str, int], take: _Take) -> bool:
        if sum(max(0, free[c]) for c in clusters) < count:
            return False
        for cluster in clusters:
            if count == 0:
                break
            got = min(count, max(0, free[cluster]))
            if got:
                take(cluster, got)
                count -= got
        return True

    def _draw_grid(self, want: Want, free: dict[str, int], take: _Take) -> bool:
        """Fewest sites first: the sites with the most free nodes, each filled biggest hosts first."""
        by_site: dict[str, list[str]] = {}
        for cluster in want.clusters:
            by_site.setdefault(self.inventory.clusters[cluster].site, []).append(cluster)
        order = sorted(by_site, key=lambda s: (-sum(max(0, free[c]) for c in by_site[s]),
                                               self.site_names.index(s) if s in self.site_names else 0))
        remaining = want.count
        if sum(max(0, free[c]) for c in want.clusters) < remaining:
            return False
        for site in order:
            room = sum(max(0, free[c]) for c in by_site[site])
            got = min(room, remaining)
            if got:
                self._draw(by_site[site], got, free, take)
                remaining -= got
            if remaining == 0:
                break
        return remaining == 0

    def _hosts_for(self, chosen: Mapping[str, int], hosts: Sequence[str]) -> list[Host]:
        """Hosts at their counted capacity, in the order of `Plan.planned_hosts` (sites in inventory
        order; named hosts, then clusters in natural order): placement of VMs of mixed sizes depends on
        the order, and the run places them in this order too."""
        return host_order(self.inventory, hosts, chosen, self.sel.capacity, self.demand.assigned)

    def _fits(self, hosts: list[Host]) -> bool:
        if not hosts:
            return not self.demand.vms
        try:
            self.demand.placement.place(self.demand.vms, hosts)
        except NotEnoughCapacity:
            return False
        return True

    def _size(self, chosen: dict[str, int], hosts: list[str], free: dict[str, int], take: _Take) -> bool:
        """VM-sized mode: add the fewest pool hosts (biggest first) so that the VMs fit.

        A lower bound comes first (VM counts for VMs of one size, memory and vCPUs otherwise), then hosts
        are added one at a time until placement (the run's distribution) agrees.
        """
        limits, vms = self.demand.placement.limits, self.demand.vms
        base = self._hosts_for(chosen, hosts)
        if self._fits(base):
            return True
        probe = min(vms, key=lambda vm: (vm.mem, vm.n_cpu))
        rooms = [_room(limits.budget(host.capacity), host.vms) for host in base]
        if self.uniform:
            need = [len(vms) - sum(room.count(probe) or 0 for room in rooms)]
        else:
            need = [sum(vm.mem for vm in vms) - sum(room.mem or 0 for room in rooms),
                    sum(vm.n_cpu for vm in vms) - sum(room.vcpus or 0 for room in rooms)]
        added: dict[str, int] = {}
        order = [c for c in self.sel.pool if free.get(c, 0) > 0]
        for cluster in order:
            budget = limits.budget(self.sel.capacity.get(cluster))
            if not budget.count(probe):
                continue
            gain = [budget.count(probe) or 0] if self.uniform else [budget.mem or 0, budget.vcpus or 0]
            while free[cluster] - added.get(cluster, 0) > 0 and any(n > 0 for n in need):
                added[cluster] = added.get(cluster, 0) + 1
                need = [n - g for n, g in zip(need, gain, strict=True)]
        if any(n > 0 for n in need):
            return False
        trial = dict(chosen)
        for cluster, count in added.items():
            trial[cluster] = trial.get(cluster, 0) + count
        while not self._fits(self._hosts_for(trial, hosts)):
            spare = next((c for c in order if free[c] - added.get(c, 0) > 0), None)
            if spare is None:
                return False
            added[spare] = added.get(spare, 0) + 1
            trial[spare] = trial.get(spare, 0) + 1
        for cluster, count in added.items():
            take(cluster, count)
        return True

    def _site_vm_bound(self, site: str, chosen: Mapping[str, int], hosts: Sequence[str]) -> int:
        """At most how many VMs the site's hosts can hold (for its subnet count)."""
        vms = (*self.demand.vms, *(vm for group in self.demand.assigned.values() for vm in group))
        if not vms:
            return 0
        probe = min(vms, key=lambda vm: (vm.mem, vm.n_cpu))
        bound = 0
        for fqdn in hosts:
            if self.inventory.nodes[fqdn].site == site:
                bound += self.demand.placement.limits.budget(self.sel.capacity[fqdn]).count(probe) or 0
        for cluster, count in chosen.items():
            if self.inventory.clusters[cluster].site == site:
                budget = self.demand.placement.limits.budget(self.sel.capacity[cluster])
                bound += count * (budget.count(probe) or 0)
        return min(len(vms), bound)

    def _network(self, chosen: dict[str, int], hosts: list[str]) -> _Allocation | None:
        sites: _Allocation = {}
        for fqdn in hosts:
            site = self.inventory.nodes[fqdn].site
            sites.setdefault(site, _SiteAllocation()).hosts.append(fqdn)
        for cluster, count in chosen.items():
            if count:
                site = self.inventory.clusters[cluster].site
                sites.setdefault(site, _SiteAllocation()).clusters[cluster] = count
        if not sites:
            self.last_failure = "nothing to reserve"
            return None
        index = {name: i for i, name in enumerate(self.site_names)}
        if self.demand.kavlan:
            kinds = (VLAN_ROUTED, VLAN_GLOBAL) if len(sites) == 1 else (VLAN_GLOBAL,)
            ranked = sorted(sites, key=lambda s: -(len(sites[s].hosts) + sum(sites[s].clusters.values())))
            holder = next(((s, kind) for kind in kinds for s in ranked
                           if self.counters.vlans[index[s]].get(kind, 0) > 0), None)
            if holder is None:
                self.last_failure = f"no free {' or '.join(kinds)} vlan"
                return None
            sites[holder[0]].vlan = holder[1]
        else:
            for site, entry in sites.items():
                prefix, count = subnets_for(self._site_vm_bound(site, entry.clusters, entry.hosts))
                i = index[site]
                if prefix == 22:
                    available = self.counters.subnets[i]
                else:
                    available = sum(1 for block, n in self.counters.slash16[i].items()
                                    if n == self.slash16_size[(i, block)])
                if available < count:
                    self.last_failure = f"not enough free /{prefix} subnets on {site}"
                    return None
                entry.subnets = (prefix, count)
        return sites

    def why_never(self) -> str:
        reason = self.last_failure or "the resources are never free together"
        return f"no start time satisfies the request: {reason}"


def _finish(allocation: _Allocation, start: int, now: int, demand: Demand, sel: Selection,
            inventory: Inventory, resources: list[_Resource], free: list[bool]) -> Plan:
    """The `Plan` of an allocation, with the nodes expected (free at the start, natural order)."""
    free_nodes = {r.name for r, now_free in zip(resources, free, strict=True)
                  if now_free and r.kind == "node"}
    sites: dict[str, SitePlan] = {}
    order = {name: index for index, name in enumerate(inventory.sites)}
    for site in sorted(allocation, key=lambda s: order.get(s, 0)):
        entry = allocation[site]
        hosts = tuple(entry.hosts)
        predicted = list(hosts)
        taken = set(hosts)
        clusters = {c: entry.clusters[c] for c in sorted(entry.clusters, key=natural_key)}
        for cluster, count in clusters.items():
            names = [n.fqdn for n in sel.eligible[cluster] if n.fqdn in free_nodes and n.fqdn not in taken]
            predicted += names[:count]
            taken.update(names[:count])
        sites[site] = SitePlan(
            site, clusters, hosts, {c: sel.excluded[c] for c in clusters if sel.excluded.get(c)},
            entry.subnets, entry.vlan,
            any(c in sel.exotic for c in clusters) or any(inventory.nodes[h].cluster in sel.exotic
                                                          for h in hosts),
            tuple(predicted))
    capacities = {name: cap for name, cap in sel.capacity.items()}
    return Plan(now, start, demand.walltime, sites, capacities)


def host_order(inventory: Inventory, hosts: Sequence[str], chosen: Mapping[str, int],
               capacity: Mapping[str, Capacity], assigned: Mapping[str, Sequence[VM]]) -> list[Host]:
    """Planned hosts grouped by site (inventory order), named hosts first, then clusters (natural order)."""
    order = {site: index for index, site in enumerate(inventory.sites)}
    by_site: dict[str, list[Host]] = {}
    for fqdn in hosts:
        site = inventory.nodes[fqdn].site
        by_site.setdefault(site, []).append(Host(fqdn, capacity[fqdn], vms=list(assigned.get(fqdn, ()))))
    for cluster in sorted(chosen, key=natural_key):
        site = inventory.clusters[cluster].site
        by_site.setdefault(site, []).extend(Host(f"{cluster}-planned-{i}", capacity[cluster])
                                            for i in range(chosen[cluster]))
    return [host for site in sorted(by_site, key=lambda s: order.get(s, 0)) for host in by_site[site]]


def _room(budget: Budget, vms: Sequence[VM]) -> Budget:
    """What a host's budget leaves after the VMs already on it."""
    if budget.mem is None or budget.vcpus is None:
        return budget
    return Budget(max(0, budget.mem - sum(vm.mem for vm in vms)),
                  max(0, budget.vcpus - sum(vm.n_cpu for vm in vms)))


def _slash16(cidr: str) -> str:
    """The /16 a /22 belongs to, from its text (``10.158.4.0/22`` → ``10.158``)."""
    return ".".join(cidr.split("/")[0].split(".")[:2])
