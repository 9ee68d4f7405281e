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

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vm5k.errors import PlatformError, UsageError
from vm5k.placement import Budget, Limits, NotEnoughCapacity, place
from vm5k.request import GRID5000, Element, format_walltime
from vm5k.topology import VM, Capacity, Host, natural_key, shown

Interval = tuple[int, int]
INFINITY = 1 << 62

SECURITY_MARGIN = 60  # seconds kept free after each job (OAR's own security time between jobs)
VMS_PER_SLASH22 = 1000  # a /22 has 1022 addresses; a few are kept spare
MAX_SLASH22 = 32  # beyond this many /22s on a site, ask for /16s (64 /22s each)
SLASH22_PER_SLASH16 = 64
UNUSABLE_STATES = frozenset({"absent", "dead", "suspected"})  # `hard` states never planned on
VLAN_ROUTED, VLAN_LOCAL, VLAN_GLOBAL = "kavlan", "kavlan-local", "kavlan-global"


class NoSlot(PlatformError):
    """No start time satisfies the request (resources that exist but can never be free together)."""


# ---------------------------------------------------------------------------------------------------
# inventory: the reference hardware


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One node of the reference API: its FQDN, where it is, its hardware and what it supports.

    `virtual` is ``supported_job_types.virtual`` ("ivt", "amd-v", "arm64"), None when it is false.
    """

    fqdn: str
    site: str
    cluster: str
    capacity: Capacity
    virtual: str | None = "ivt"
    deploy: bool = True
    queues: tuple[str, ...] | None = None  # the node's own queues, when they differ from its cluster's

    @property
    def uid(self) -> str:
        return self.fqdn.split(".", 1)[0]

    @property
    def usable_for_vms(self) -> bool:
        return bool(self.virtual) and self.deploy and self.capacity.virtual


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster: its nodes (in natural order), the OAR queues it is in, and whether it is exotic."""

    name: str
    site: str
    nodes: tuple[NodeSpec, ...]
    queues: tuple[str, ...] = ("admin", "default")
    exotic: bool = False


class Inventory:
    """The reference hardware of the sites vm5k may use, indexed for name lookups.

    >>> inv = Inventory([ClusterSpec("taurus", "lyon", ())])
    >>> inv.resolve("lyon"), inv.resolve("taurus"), inv.resolve("grid5000")
    (('site', 'lyon'), ('cluster', 'taurus'), ('grid5000', 'grid5000'))
    """

    def __init__(self, clusters: Iterable[ClusterSpec], sites: Iterable[str] = ()) -> None:
        self.sites: dict[str, list[ClusterSpec]] = {site: [] for site in sites}
        self.clusters: dict[str, ClusterSpec] = {}
        self.nodes: dict[str, NodeSpec] = {}
        self._short: dict[str, str] = {}
        for cluster in clusters:
            self.sites.setdefault(cluster.site, []).append(cluster)
            self.clusters[cluster.name] = cluster
            for node in cluster.nodes:
                self.nodes[node.fqdn] = node
                self._short.setdefault(node.uid, node.fqdn)
                self._short.setdefault(f"{node.uid}.{node.site}", node.fqdn)

    def node(self, name: str) -> NodeSpec | None:
        """A node by FQDN, ``uid.site`` or short uid (``taurus-3``)."""
        fqdn = name if name in self.nodes else self._short.get(name)
        return self.nodes.get(fqdn) if fqdn else None

    def resolve(self, name: str) -> tuple[str, str]:
        """``(kind, canonical name)`` of a ``-r``/``-b`` element; UsageError when unknown."""
        if name == GRID5000:
            return "grid5000", name
        if name in self.sites:
            return "site", name
        if name in self.clusters:
            return "cluster", name
        node = self.node(name)
        if node is not None:
            return "host", node.fqdn
        raise UsageError(f"unknown Grid'5000 element {shown(name)}: not a site, cluster or host of "
                         f"{_few(sorted(self.sites)) or 'the platform'}")


# ---------------------------------------------------------------------------------------------------
# availability: OAR status


@dataclass(frozen=True, slots=True)
class Usage:
    """One OAR resource: busy intervals [start, end) (sorted, merged) and whether OAR may use it."""

    busy: tuple[Interval, ...] = ()
    usable: bool = True
    state: str = "alive"


@dataclass
class SiteAvailability:
    """A site's status: nodes by FQDN, /22 subnets by CIDR, vlans by id as ``(kind, usage)``."""

    nodes: dict[str, Usage] = field(default_factory=dict)
    subnets: dict[str, Usage] = field(default_factory=dict)
    vlans: dict[str, tuple[str, Usage]] = field(default_factory=dict)


@dataclass
class Availability:
    """The status of every site, read at `now` (epoch seconds on the API server's clock)."""

    now: int
    sites: dict[str, SiteAvailability] = field(default_factory=dict)


def merge(spans: Iterable[Interval]) -> tuple[Interval, ...]:
    """Sorted, overlapping or touching intervals joined.

    >>> merge([(5, 8), (1, 3), (3, 4), (7, 9)])
    ((1, 4), (5, 9))
    """
    out: list[Interval] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return tuple(out)


def valid_starts(busy: Sequence[Interval], length: int, not_before: int) -> list[Interval]:
    """The closed intervals of start times t ≥ `not_before` at which [t, t + length) meets no busy span.

    >>> valid_starts(((100, 200), (260, 400)), 50, 0)
    [(0, 50), (200, 210), (400, 4611686018427387904)]
    """
    out = []
    gap_start = not_before
    for start, end in busy:
        if end <= not_before:
            continue
        if start - length >= gap_start:
            out.append((gap_start, start - length))
        gap_start = max(gap_start, end)
    out.append((gap_start, INFINITY))
    return out


def is_free(busy: Sequence[Interval], start: int, length: int) -> bool:
    """True when [start, start + length) meets none of the sorted busy intervals."""
    index = bisect.bisect_right(busy, (start, INFINITY))
    if index and busy[index - 1][1] > start:
        return False
    return index >= len(busy) or busy[index][0] >= start + length


# ---------------------------------------------------------------------------------------------------
# demand and plan


@dataclass(frozen=True)
class Demand:
    """What to plan for.

    elements: ``-r`` (with or without counts); ignored for hosts named in `hosts`.
    hosts: hosts named by a topology file (FQDN or short name): each must be free at the start.
    vms: the VMs that still need a host; `assigned` the VMs already on named hosts (host → VMs).
    kavlan: a KaVLAN instead of subnets. queue: the OAR queue. not_before: earliest start (epoch).
    seed: of the random distribution, so that sizing checks the placement the run will make.
    """

    elements: tuple[Element, ...] = (Element(GRID5000),)
    hosts: tuple[str, ...] = ()
    blacklist: tuple[str, ...] = ()
    walltime: int = 3600
    vms: tuple[VM, ...] = ()
    assigned: Mapping[str, tuple[VM, ...]] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    distribution: str = "round-robin"
    seed: int | None = None
    kavlan: bool = False
    queue: str = "default"
    not_before: int | None = None

    @property
    def vm_count(self) -> int:
        return len(self.vms) + sum(len(vms) for vms in self.assigned.values())


@dataclass
class SitePlan:
    """What one site's OAR job asks for, and the nodes expected (free at the start, in OAR's order)."""

    site: str
    clusters: dict[str, int] = field(default_factory=dict)
    hosts: tuple[str, ...] = ()
    excluded: dict[str, tuple[str, ...]] = field(default_factory=dict)
    subnets: tuple[int, int] | None = None  # (22 or 16, count)
    vlan: str | None = None  # kavlan kind
    exotic: bool = False
    predicted: tuple[str, ...] = ()

    @property
    def node_count(self) -> int:
        return len(self.hosts) + sum(self.clusters.values())

    def resources(self, walltime: int) -> str:
        """The OAR resource string (``oarsub -l``), walltime included.

        >>> SitePlan("lyon", {"taurus": 2}, excluded={"taurus": ("taurus-3.lyon.grid5000.fr",)},
        ...          vlan="kavlan").resources(5400).split("+")  # doctest: +NORMALIZE_WHITESPACE
        ["{cluster='taurus' and host not in ('taurus-3.lyon.grid5000.fr')}/nodes=2",
         "{type='kavlan'}/vlan=1,walltime=1:30:00"]
        """
        parts = []
        if self.hosts:
            names = ", ".join(f"'{host}'" for host in self.hosts)
            parts.append(f"{{network_address in ({names})}}/nodes={len(self.hosts)}")
        for cluster, count in self.clusters.items():
            condition = f"cluster='{cluster}'"
            excluded = self.excluded.get(cluster)
            if excluded:
                condition += " and host not in (" + ", ".join(f"'{host}'" for host in excluded) + ")"
            parts.append(f"{{{condition}}}/nodes={count}")
        if self.subnets:
            prefix, count = self.subnets
            parts.append(f"slash_{prefix}={count}")
        if self.vlan:
            parts.append(f"{{type='{self.vlan}'}}/vlan=1")
        return "+".join(parts) + f",walltime={format_walltime(walltime)}"

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "clusters": dict(self.clusters), "hosts": list(self.hosts),
                "excluded": {c: list(h) for c, h in self.excluded.items()},
                "subnets": list(self.subnets) if self.subnets else None, "vlan": self.vlan,
                "exotic": self.exotic, "predicted": list(self.predicted)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SitePlan:
        subnets = data.get("subnets")
        return cls(str(data["site"]), {str(c): int(n) for c, n in (data.get("clusters") or {}).items()},
                   tuple(data.get("hosts") or ()),
                   {str(c): tuple(h) for c, h in (data.get("excluded") or {}).items()},
                   (int(subnets[0]), int(subnets[1])) if subnets else None, data.get("vlan"),
                   bool(data.get("exotic")), tuple(data.get("predicted") or ()))


@dataclass
class Plan:
    """The earliest slot: its start (epoch, server clock), the walltime, and one `SitePlan` per site.

    `capacities` is the capacity each cluster was counted at (its smallest eligible node).
    """

    now: int
    start: int
    walltime: int
    sites: dict[str, SitePlan]
    capacities: dict[str, Capacity] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.start + self.walltime

    def planned_hosts(self) -> list[Host]:
        """One host per reserved node at its counted capacity (what placement can rely on), in the order
        the run places VMs: sites in plan order, named hosts first, then clusters in natural order."""
        hosts: list[Host] = []
        for site in self.sites.values():
            hosts += [Host(fqdn, self.capacities.get(fqdn)) for fqdn in site.hosts]
            for cluster in sorted(site.clusters, key=natural_key):
                hosts += [Host(f"{cluster}-planned-{i}", self.capacities.get(cluster))
                          for i in range(site.clusters[cluster])]
        return hosts

    def to_dict(self) -> dict[str, Any]:
        return {"now": self.now, "start": self.start, "walltime": self.walltime,
                "sites": {name: site.to_dict() for name, site in self.sites.items()},
                "capacities": {name: {"ram": c.ram, "cores": c.cores, "threads": c.threads}
                               for name, c in self.capacities.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        return cls(int(data["now"]), int(data["start"]), int(data["walltime"]),
                   {str(n): SitePlan.from_dict(s) for n, s in (data.get("sites") or {}).items()},
                   {str(n): Capacity(int(c["ram"]), int(c["cores"]), c.get("threads"))
                    for n, c in (data.get("capacities") or {}).items()})


def subnets_for(vm_count: int) -> tuple[int, int]:
    """``(prefix, count)`` of the subnets that hold `vm_count` VMs: /22s, or /16s beyond 32 /22s.

    >>> subnets_for(100), subnets_for(1001), subnets_for(40_000)
    ((22, 1), (22, 2), (16, 1))
    """
    blocks = max(1, math.ceil(vm_count / VMS_PER_SLASH22))
    if blocks <= MAX_SLASH22:
        return 22, blocks
    return 16, math.ceil(blocks / SLASH22_PER_SLASH16)


# ---------------------------------------------------------------------------------------------------
# which nodes may be used


@dataclass
class _Want:
    kind: str  # host | cluster | site | grid5000
    name: str
    count: int
    clusters: tuple[str, ...]  # clusters it may draw from (ranked, biggest hosts first)


@dataclass
class _Selection:
    """The demand resolved against the inventory: eligible nodes per cluster and what to allocate."""

    eligible: dict[str, list[NodeSpec]]  # cluster -> nodes that may be used (natural order)
    excluded: dict[str, tuple[str, ...]]  # cluster -> its nodes OAR must not pick
    wants: list[_Want]  # counted: hosts, clusters, sites, grid5000 (specific first)
    pool: tuple[str, ...]  # clusters for VM-sized mode (ranked)
    capacity: dict[str, Capacity]  # cluster -> smallest eligible node
    exotic: set[str]  # exotic clusters in use (named)


def _why_not(node: NodeSpec) -> str | None:
    if not node.virtual or not node.capacity.virtual:
        return "supported_job_types.virtual is false"
    if not node.deploy:
        return "it cannot be deployed"
    return None


def select(inventory: Inventory, demand: Demand) -> _Selection:
    """Resolve ``-r``, ``-b`` and named hosts into eligible nodes (UsageError on an unusable name)."""
    blacklist = {inventory.resolve(name) for name in demand.blacklist}
    banned_sites = {name for kind, name in blacklist if kind == "site"}
    banned_clusters = {name for kind, name in blacklist if kind == "cluster"}
    banned_hosts = {name for kind, name in blacklist if kind == "host"}
    if any(kind == "grid5000" for kind, _ in blacklist):
        raise UsageError("-b: grid5000 cannot be blacklisted (that leaves nothing)")

    def allowed(cluster: ClusterSpec) -> bool:
        return cluster.site not in banned_sites and cluster.name not in banned_clusters

    def auto(cluster: ClusterSpec) -> bool:  # usable when vm5k chooses among many clusters
        return (allowed(cluster) and not cluster.exotic and demand.queue in cluster.queues
                and any(node.usable_for_vms and node.fqdn not in banned_hosts for node in cluster.nodes))

    def named_cluster(cluster: ClusterSpec) -> None:
        if not allowed(cluster):
            raise UsageError(f"cluster {cluster.name} is named in -r and blacklisted by -b")
        if demand.queue not in cluster.queues:
            raise UsageError(f"cluster {cluster.name} is not in the {demand.queue} queue (its queues: "
                             f"{', '.join(cluster.queues)}): add --queue {_queue_hint(cluster.queues)}")
        reasons = {_why_not(node) for node in cluster.nodes}
        if all(_why_not(node) for node in cluster.nodes):
            reason = "; ".join(sorted(r for r in reasons if r)) or "it has no node"
            raise UsageError(f"cluster {cluster.name} cannot run VMs ({reason} on its nodes)")

    wants: list[_Want] = []
    pool: list[str] = []
    named: set[str] = set()
    used_clusters: set[str] = set()
    hosts = [(name, None) for name in demand.hosts] + [
        (element.name, element.count) for element in demand.elements
        if inventory.resolve(element.name)[0] == "host"]
    host_fqdns: list[str] = []
    for name, count in hosts:
        node = inventory.node(name)
        if node is None:
            raise UsageError(f"unknown Grid'5000 host {shown(name)}")
        if count not in (None, 1):
            raise UsageError(f"-r: {name} is a host: its count can only be 1")
        cluster = inventory.clusters[node.cluster]
        if node.fqdn in banned_hosts or not allowed(cluster):
            raise UsageError(f"host {node.fqdn} is asked for and blacklisted by -b")
        reason = _why_not(node)
        if reason:
            raise UsageError(f"host {node.fqdn} cannot run VMs ({reason})")
        if demand.queue not in cluster.queues:
            raise UsageError(f"host {node.fqdn} is not in the {demand.queue} queue (its cluster's queues: "
                             f"{', '.join(cluster.queues)}): add --queue {_queue_hint(cluster.queues)}")
        if node.fqdn in host_fqdns:
            raise UsageError(f"host {node.fqdn} is asked for twice")
        host_fqdns.append(node.fqdn)
        wants.append(_Want("host", node.fqdn, 1, (node.cluster,)))
        named.add(node.cluster)
        used_clusters.add(node.cluster)
    if demand.hosts:
        elements: tuple[Element, ...] = ()  # a topology file names its hosts: -r does not apply
    else:
        elements = tuple(e for e in demand.elements if inventory.resolve(e.name)[0] != "host")
    for element in elements:
        kind, name = inventory.resolve(element.name)
        if kind == "cluster":
            cluster = inventory.clusters[name]
            named_cluster(cluster)
            candidates: list[ClusterSpec] = [cluster]
            named.add(name)
        elif kind == "site":
            if name in banned_sites:
                raise UsageError(f"site {name} is named in -r and blacklisted by -b")
            candidates = [c for c in inventory.sites.get(name, []) if auto(c)]
            if not candidates:
                raise UsageError(f"site {name} has no cluster that can run VMs in the {demand.queue} queue "
                                 "(exotic clusters are used only when named)")
        else:
            candidates = [c for clusters in inventory.sites.values() for c in clusters if auto(c)]
            if not candidates:
                raise UsageError(f"no Grid'5000 cluster can run VMs in the {demand.queue} queue")
        names = tuple(c.name for c in candidates)
        used_clusters.update(names)
        if element.count is None:
            pool.extend(n for n in names if n not in pool)
        else:
            wants.append(_Want(kind, name, element.count, names))

    eligible: dict[str, list[NodeSpec]] = {}
    excluded: dict[str, tuple[str, ...]] = {}
    capacity: dict[str, Capacity] = {}
    for name in used_clusters:
        cluster = inventory.clusters[name]
        nodes = [n for n in cluster.nodes if n.usable_for_vms and n.fqdn not in banned_hosts
                 and demand.queue in (n.queues or cluster.queues)]
        eligible[name] = nodes
        kept = {n.fqdn for n in nodes}
        excluded[name] = tuple(n.fqdn for n in cluster.nodes if n.fqdn not in kept)
        if nodes:
            capacity[name] = Capacity(min(n.capacity.ram for n in nodes),
                                      min(n.capacity.cores for n in nodes),
                                      min(n.capacity.hw_threads for n in nodes))
    for node_name in host_fqdns:
        node = inventory.nodes[node_name]
        capacity[node_name] = node.capacity
    ranked = _ranker(capacity, demand, inventory)
    for want in wants:
        if want.kind in ("site", "grid5000"):
            want.clusters = tuple(sorted(want.clusters, key=ranked))
    order = {"host": 0, "cluster": 1, "site": 2, "grid5000": 3}
    wants.sort(key=lambda want: order[want.kind])
    exotic = {name for name in named if inventory.clusters[name].exotic}
    return _Selection(eligible, excluded, wants, tuple(sorted(pool, key=ranked)), capacity, exotic)


def _queue_hint(queues: Sequence[str]) -> str:
    return next((q for q in queues if q not in ("admin", "default")), queues[0] if queues else "default")


def _ranker(capacity: Mapping[str, Capacity], demand: Demand, inventory: Inventory) -> Any:
    """Sort key of clusters: most VMs per host first (the biggest hosts), then site and name order."""
    smallest = min(demand.vms, key=lambda vm: (vm.mem, vm.n_cpu), default=VM("probe"))
    site_order = {site: index for index, site in enumerate(inventory.sites)}

    def key(name: str) -> tuple[Any, ...]:
        budget = demand.limits.budget(capacity.get(name))
        fits = budget.count(smallest) or 0
        cluster = inventory.clusters[name]
        return (-fits, -(budget.mem or 0), site_order.get(cluster.site, 0), natural_key(name))

    return key


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
    for name in cluster_names:
        cluster = inventory.clusters[name]
        status = availability.sites.get(cluster.site)
        budget = demand.limits.budget(sel.capacity.get(name)) if name in sel.capacity else Budget(0, 0)
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


def _check_possible(sel: _Selection, inventory: Inventory, node_resource: Mapping[str, int],
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
        if len(sizes) == 1 and demand.distribution != "n_by_hosts" and not demand.assigned:
            # VMs of one size, first fit: counting them is exact, and much cheaper than placing them
            probe = demand.vms[0]
            if sum(demand.limits.budget(h.capacity).count(probe) or 0 for h in everything) >= len(demand.vms):
                return
        try:
            place(demand.vms, everything, demand.distribution, limits=demand.limits, seed=demand.seed)
        except NotEnoughCapacity as error:
            raise NotEnoughCapacity(f"even every usable node would not do: {error}", error.needed,
                                    error.available, error.limits, error.max_vms) from None


class _Allocator:
    """Turns the free counts of one instant into per-site, per-cluster node counts (or None)."""

    def __init__(self, inventory: Inventory, sel: _Selection, demand: Demand, site_names: list[str],
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

    def allocate(self) -> dict[str, dict[str, Any]] | None:
        """Per site: {"clusters": {cluster: count}, "hosts": [fqdn]}, plus the network; None if short.

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
    def _draw(clusters: Sequence[str], count: int, free: dict[str, int], take: Any) -> bool:
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

    def _draw_grid(self, want: _Want, free: dict[str, int], take: Any) -> bool:
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
            place(self.demand.vms, hosts, self.demand.distribution, limits=self.demand.limits,
                  seed=self.demand.seed)
        except NotEnoughCapacity:
            return False
        return True

    def _size(self, chosen: dict[str, int], hosts: list[str], free: dict[str, int], take: Any) -> bool:
        """VM-sized mode: add the fewest pool hosts (biggest first) so that the VMs fit.

        A lower bound comes first (VM counts for VMs of one size, memory and vCPUs otherwise), then hosts
        are added one at a time until placement (the run's distribution) agrees.
        """
        limits, vms = self.demand.limits, self.demand.vms
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
                bound += self.demand.limits.budget(self.sel.capacity[fqdn]).count(probe) or 0
        for cluster, count in chosen.items():
            if self.inventory.clusters[cluster].site == site:
                bound += count * (self.demand.limits.budget(self.sel.capacity[cluster]).count(probe) or 0)
        return min(len(vms), bound)

    def _network(self, chosen: dict[str, int], hosts: list[str]) -> dict[str, dict[str, Any]] | None:
        sites: dict[str, dict[str, Any]] = {}
        for fqdn in hosts:
            site = self.inventory.nodes[fqdn].site
            sites.setdefault(site, {"clusters": {}, "hosts": []})["hosts"].append(fqdn)
        for cluster, count in chosen.items():
            if count:
                site = self.inventory.clusters[cluster].site
                sites.setdefault(site, {"clusters": {}, "hosts": []})["clusters"][cluster] = count
        if not sites:
            self.last_failure = "nothing to reserve"
            return None
        index = {name: i for i, name in enumerate(self.site_names)}
        if self.demand.kavlan:
            kinds = (VLAN_ROUTED, VLAN_GLOBAL) if len(sites) == 1 else (VLAN_GLOBAL,)
            ranked = sorted(sites, key=lambda s: -(len(sites[s]["hosts"])
                                                   + sum(sites[s]["clusters"].values())))
            holder = next(((s, kind) for kind in kinds for s in ranked
                           if self.counters.vlans[index[s]].get(kind, 0) > 0), None)
            if holder is None:
                self.last_failure = f"no free {' or '.join(kinds)} vlan"
                return None
            sites[holder[0]]["vlan"] = holder[1]
        else:
            for site, entry in sites.items():
                prefix, count = subnets_for(self._site_vm_bound(site, entry["clusters"], entry["hosts"]))
                i = index[site]
                if prefix == 22:
                    available = self.counters.subnets[i]
                else:
                    available = sum(1 for block, n in self.counters.slash16[i].items()
                                    if n == self.slash16_size[(i, block)])
                if available < count:
                    self.last_failure = f"not enough free /{prefix} subnets on {site}"
                    return None
                entry["subnets"] = (prefix, count)
        return sites

    def why_never(self) -> str:
        reason = self.last_failure or "the resources are never free together"
        return f"no start time satisfies the request: {reason}"


def _finish(allocation: dict[str, dict[str, Any]], start: int, now: int, demand: Demand, sel: _Selection,
            inventory: Inventory, resources: list[_Resource], free: list[bool]) -> Plan:
    """The `Plan` of an allocation, with the nodes expected (free at the start, natural order)."""
    free_nodes = {r.name for r, now_free in zip(resources, free, strict=True)
                  if now_free and r.kind == "node"}
    sites: dict[str, SitePlan] = {}
    order = {name: index for index, name in enumerate(inventory.sites)}
    for site in sorted(allocation, key=lambda s: order.get(s, 0)):
        entry = allocation[site]
        hosts = tuple(entry["hosts"])
        predicted = list(hosts)
        taken = set(hosts)
        clusters = {c: entry["clusters"][c] for c in sorted(entry["clusters"], key=natural_key)}
        for cluster, count in clusters.items():
            names = [n.fqdn for n in sel.eligible[cluster] if n.fqdn in free_nodes and n.fqdn not in taken]
            predicted += names[:count]
            taken.update(names[:count])
        sites[site] = SitePlan(
            site, clusters, hosts, {c: sel.excluded[c] for c in clusters if sel.excluded.get(c)},
            entry.get("subnets"), entry.get("vlan"),
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


def _few(names: Sequence[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def with_not_before(demand: Demand, epoch: int) -> Demand:
    """The same demand, starting no earlier than `epoch` (OAR's "could run at" answer)."""
    return replace(demand, not_before=max(epoch, demand.not_before or 0))


__all__ = [
    "INFINITY", "SECURITY_MARGIN", "Availability", "ClusterSpec", "Demand",
    "Inventory", "NoSlot", "NodeSpec", "Plan", "SiteAvailability", "SitePlan", "Usage",
    "is_free", "merge", "plan_slot", "select", "subnets_for",
    "valid_starts", "with_not_before",
]
