"""Which nodes a demand may use: eligibility, queues, exotic clusters, blacklists, named hosts.

Part of the pure planner (see ``vm5k.platforms.grid5000.planning``): no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vm5k.errors import UsageError
from vm5k.platforms.grid5000.planning.demand import Demand
from vm5k.platforms.grid5000.planning.inventory import ClusterSpec, Inventory, NodeSpec
from vm5k.request import Element
from vm5k.topology import VM, Capacity, natural_key, shown

# ---------------------------------------------------------------------------------------------------
# which nodes may be used


@dataclass
class Want:
    kind: str  # host | cluster | site | grid5000
    name: str
    count: int
    clusters: tuple[str, ...]  # clusters it may draw from (ranked, biggest hosts first)


@dataclass
class Selection:
    """The demand resolved against the inventory: eligible nodes per cluster and what to allocate."""

    eligible: dict[str, list[NodeSpec]]  # cluster -> nodes that may be used (natural order)
    excluded: dict[str, tuple[str, ...]]  # cluster -> its nodes OAR must not pick
    wants: list[Want]  # counted: hosts, clusters, sites, grid5000 (specific first)
    pool: tuple[str, ...]  # clusters for VM-sized mode (ranked)
    capacity: dict[str, Capacity]  # cluster -> smallest eligible node
    exotic: set[str]  # exotic clusters in use (named)


def _why_not(node: NodeSpec) -> str | None:
    if not node.virtual or not node.capacity.virtual:
        return "supported_job_types.virtual is false"
    if not node.deploy:
        return "it cannot be deployed"
    return None


def select(inventory: Inventory, demand: Demand) -> Selection:
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

    wants: list[Want] = []
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
        wants.append(Want("host", node.fqdn, 1, (node.cluster,)))
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
            wants.append(Want(kind, name, element.count, names))

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
    return Selection(eligible, excluded, wants, tuple(sorted(pool, key=ranked)), capacity, exotic)


def _queue_hint(queues: Sequence[str]) -> str:
    return next((q for q in queues if q not in ("admin", "default")), queues[0] if queues else "default")


def _ranker(capacity: Mapping[str, Capacity], demand: Demand, inventory: Inventory) -> Any:
    """Sort key of clusters: most VMs per host first (the biggest hosts), then site and name order."""
    smallest = min(demand.vms, key=lambda vm: (vm.mem, vm.n_cpu), default=VM("probe"))
    site_order = {site: index for index, site in enumerate(inventory.sites)}

    def key(name: str) -> tuple[Any, ...]:
        budget = demand.placement.limits.budget(capacity.get(name))
        fits = budget.count(smallest) or 0
        cluster = inventory.clusters[name]
        return (-fits, -(budget.mem or 0), site_order.get(cluster.site, 0), natural_key(name))

    return key
