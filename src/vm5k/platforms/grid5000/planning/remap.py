"""Named hosts that OAR will never give, and the nodes that take their VMs instead. Pure.

A topology file (``-i``) names its hosts, and vm5k reserves exactly those. But a file written last month
may name a node that OAR now reports ``Absent``, ``Dead`` or ``Suspected``: waiting for it would wait
forever. The original vm5k then moved the VMs of such a host onto another reserved host; vm5k does the
same, and only there (a named host that is merely busy is waited for, since it will be free): each
unavailable host gives its VMs, as a group, to another node of the same cluster (the same hardware, so the
file's placement still holds), and the run says so.

The substitute is a node the run could use anyway (VM-capable, in the run's queue, not blacklisted, not
named by the file, not already a substitute), able to hold the group's VMs, and free the soonest for the
walltime on the API's clock (ties in natural order). No such node is a UsageError naming the host.

>>> from vm5k.platforms.grid5000.planning import (Availability, ClusterSpec, Demand, Inventory, NodeSpec,
...                                               SiteAvailability, Usage)
>>> from vm5k.topology import GIB, VM, Capacity
>>> node = lambda i: NodeSpec(f"taurus-{i}.lyon.grid5000.fr", "lyon", "taurus", Capacity(32 * GIB, 12, 24))
>>> inventory = Inventory([ClusterSpec("taurus", "lyon", tuple(node(i) for i in (1, 2, 3)))])
>>> availability = Availability(now=0, sites={"lyon": SiteAvailability(nodes={
...     node(1).fqdn: Usage(usable=False, state="dead"), node(2).fqdn: Usage(busy=((0, 7200),)),
...     node(3).fqdn: Usage()})})
>>> demand = Demand(hosts=(node(1).fqdn,), assigned={node(1).fqdn: (VM("a"),)}, walltime=3600)
>>> [(r.host, r.state, r.substitute) for r in substitutes(inventory, availability, demand)]
[('taurus-1.lyon.grid5000.fr', 'dead', 'taurus-3.lyon.grid5000.fr')]
"""

from __future__ import annotations

from dataclasses import dataclass

from vm5k.errors import UsageError
from vm5k.platforms.grid5000.planning.availability import Availability, valid_starts
from vm5k.platforms.grid5000.planning.demand import Demand
from vm5k.platforms.grid5000.planning.inventory import Inventory
from vm5k.platforms.grid5000.planning.selection import select
from vm5k.topology import natural_key


@dataclass(frozen=True)
class Remap:
    """A named host OAR reports unavailable (`state`), and the node that takes its VMs."""

    host: str
    state: str
    substitute: str
    vms: int


def substitutes(inventory: Inventory, availability: Availability, demand: Demand) -> list[Remap]:
    """One `Remap` per named host of `demand` that OAR reports absent, dead or suspected (see above)."""
    unavailable = []
    for fqdn in demand.hosts:
        node = inventory.nodes.get(fqdn)
        status = availability.sites.get(node.site) if node else None
        usage = status.nodes.get(fqdn) if status else None
        if node is not None and usage is not None and not usage.usable:
            unavailable.append((node, usage.state))
    if not unavailable:
        return []
    eligible = select(inventory, demand).eligible  # VM-capable, in the queue, not blacklisted
    taken = set(demand.hosts)
    t0 = max(availability.now, demand.not_before or 0)
    remaps = []
    for node, state in unavailable:
        vms = demand.assigned.get(node.fqdn, ())
        need_mem, need_cpu = sum(vm.mem for vm in vms), sum(vm.n_cpu for vm in vms)
        site = availability.sites[node.site].nodes
        starts: dict[str, int] = {}  # candidate -> when it is free for the walltime
        for other in eligible.get(node.cluster, ()):
            usage = site.get(other.fqdn)
            if other.fqdn in taken or usage is None or not usage.usable:
                continue
            budget = demand.placement.limits.budget(other.capacity)
            if budget.known and ((budget.mem or 0) < need_mem or (budget.vcpus or 0) < need_cpu):
                continue
            starts[other.fqdn] = valid_starts(usage.busy, demand.walltime, t0)[0][0]
        if not starts:
            raise UsageError(f"host {node.fqdn} is {state} in OAR and no other node of cluster "
                             f"{node.cluster} can take its {len(vms)} VMs: name another host in the "
                             "topology file")
        best = min(starts, key=lambda fqdn: (starts[fqdn], natural_key(fqdn)))
        taken.add(best)
        remaps.append(Remap(node.fqdn, state, best, len(vms)))
    return remaps
