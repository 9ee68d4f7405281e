"""When and where to reserve: the earliest start at which everything a run needs is free. Pure.

The Grid'5000 API has no "find me a slot" endpoint: clients read OAR's status (every node, /22 subnet and
vlan with its running and scheduled jobs) and compute the slot themselves. This module does that, from
data only (no HTTP, no clock): the platform fetches the reference hardware (`Inventory`) and the status
(`Availability`, whose `now` is the API server's clock), states what the run asks for (`Demand`), and gets
a `Plan` back: the start time and, per site, exactly what to ask OAR for.

What a run may ask for (``-r``; counts add up, as OAR's ``+`` does)::

    -r grid5000:20          20 nodes anywhere, on as few sites as possible, biggest hosts first
    -r taurus:4,nancy:10    4 taurus nodes plus 10 more nodes of nancy (14 in nancy if taurus were there)
    -r rennes               no count: as few rennes hosts as the VMs need (VM-sized mode)
    -r grid5000             no count: as few hosts anywhere as the VMs need
    -i topology.xml         the hosts the file names, each of which must be free

Which nodes may be used: nodes whose ``supported_job_types.virtual`` is not false, that can be deployed,
that OAR does not report ``Absent``, ``Dead`` or ``Suspected``, in clusters of the run's queue (``default``
unless ``--queue``), and not exotic — unless the cluster or host is named in ``-r``: a named cluster
outside the queue, or one whose nodes cannot run VMs, is a UsageError; a named exotic one is fine (the
job then gets the ``exotic`` type). ``-b`` removes sites, clusters or hosts. Counts are always turned into
per-cluster counts (``{cluster='x'}/nodes=N``), so that what OAR gives is what was sized: each cluster is
counted at the capacity of its smallest eligible node, with the capacity rule of ``placement.py``.

Network: with subnets (the default), each site with hosts gets ``slash_22=K``, K = ⌈VMs that site's hosts
can hold / 1000⌉ (``slash_16`` when more than 32 /22s would be needed); with a KaVLAN (``-k``), one routed
vlan (``kavlan``, ids 4-9) when every host is on one site, else one ``kavlan-global`` vlan on one of them.

The algorithm is a sweep over time. A resource that must stay free for the walltime W may start at t when
no busy interval meets [t, t + W): its valid starts are a union of closed intervals, one per gap of at
least W between busy intervals (each busy interval is lengthened by a security margin, as OAR keeps one
between jobs). Sorting the ends of those intervals gives, in one pass, how many nodes of each cluster (and
subnets and vlans of each site) are free at every instant; counts only grow at the start of an interval,
so only those instants are candidates, and the first candidate where everything is satisfied is the
earliest slot. O(E log E) for E intervals, with O(1) work per event and a full allocation (O(clusters))
only where the cheap counters say it can succeed.

>>> from vm5k.request import Element
>>> from vm5k.topology import GIB, VM, Capacity
>>> node = lambda i: NodeSpec(f"taurus-{i}.lyon.grid5000.fr", "lyon", "taurus", Capacity(32 * GIB, 12, 24))
>>> inventory = Inventory([ClusterSpec("taurus", "lyon", tuple(node(i) for i in (1, 2, 3)))])
>>> busy = Usage(busy=((1000, 4600),))  # a job holds taurus-1 from 1000 for an hour
>>> availability = Availability(now=1000, sites={"lyon": SiteAvailability(
...     nodes={node(1).fqdn: busy, node(2).fqdn: busy, node(3).fqdn: Usage()},
...     subnets={"10.140.0.0/22": Usage()})})
>>> plan = plan_slot(inventory, availability, Demand(elements=(Element("taurus", 2),), walltime=3600,
...                                                  vms=tuple(VM(f"vm-{i}") for i in range(10))))
>>> plan.start
4600
>>> plan.sites["lyon"].resources(plan.walltime)
"{cluster='taurus'}/nodes=2+slash_22=1,walltime=1:00:00"
"""

from __future__ import annotations

from vm5k.platforms.grid5000.planning.availability import (
    Availability,
    SiteAvailability,
    Usage,
    is_free,
    merge,
    valid_starts,
)
from vm5k.platforms.grid5000.planning.common import (
    INFINITY,
    SECURITY_MARGIN,
    UNUSABLE_STATES,
    VLAN_GLOBAL,
    VLAN_LOCAL,
    VLAN_ROUTED,
    Interval,
    NoSlot,
)
from vm5k.platforms.grid5000.planning.demand import Demand, Plan, SitePlan, subnets_for, with_not_before
from vm5k.platforms.grid5000.planning.inventory import ClusterSpec, Inventory, NodeSpec
from vm5k.platforms.grid5000.planning.selection import select
from vm5k.platforms.grid5000.planning.slots import host_order, plan_slot

__all__ = [
    "INFINITY",
    "SECURITY_MARGIN",
    "UNUSABLE_STATES",
    "VLAN_GLOBAL",
    "VLAN_LOCAL",
    "VLAN_ROUTED",
    "Availability",
    "ClusterSpec",
    "Demand",
    "Interval",
    "Inventory",
    "NoSlot",
    "NodeSpec",
    "Plan",
    "SiteAvailability",
    "SitePlan",
    "Usage",
    "host_order",
    "is_free",
    "merge",
    "plan_slot",
    "select",
    "subnets_for",
    "valid_starts",
    "with_not_before",
]
