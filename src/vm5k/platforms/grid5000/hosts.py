"""The topology's hosts on Grid'5000: named, predicted by a plan, or given by jobs; and their VMs.

Host ids are what SSH connects to: the node's FQDN, or ``<node>-kavlan-<N>.<site>.grid5000.fr`` once the
run uses KaVLAN N; ``host.extra["node"]`` keeps the FQDN for the API. Extra keys:

- ``named``: the host comes from a topology file (``-i``): it must be reserved as such;
- ``predicted``: a plan expects OAR to give this node (the dry run shows it; the job decides);
- ``job``: the job (``site:id``) that holds the host;
- ``replaces``: the named host OAR could not give, whose VMs this node took (``planning.remap``).

VMs stay where they are as long as their host stays; the others are placed with the run's distribution
on hosts that are not KO, counting what is already on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vm5k.errors import UsageError
from vm5k.platforms.grid5000.planning import Demand, Inventory, Plan
from vm5k.platforms.grid5000.planning.remap import Remap
from vm5k.request import Element
from vm5k.topology import HOST_PLANNED, VM, Host, Topology, natural_key

NODE, NAMED, PREDICTED, JOB, REPLACES = "node", "named", "predicted", "job", "replaces"


def kavlan_name(fqdn: str, vlan: str) -> str:
    """A node's name inside KaVLAN `vlan`.

    >>> kavlan_name("paravance-1.rennes.grid5000.fr", "4")
    'paravance-1-kavlan-4.rennes.grid5000.fr'
    """
    node, _, domain = fqdn.partition(".")
    return f"{node}-kavlan-{vlan}.{domain}"


def node_of(host: Host) -> str:
    """The node's FQDN behind a topology host (its id unless renamed for a vlan)."""
    return str(host.extra.get(NODE) or host.id)


def named_hosts(topology: Topology) -> list[Host]:
    """Hosts that come from a topology file (neither predicted by a plan nor given by a job)."""
    return [host for host in topology.hosts()
            if host.extra.get(NAMED) or not (host.extra.get(PREDICTED) or host.extra.get(JOB))]


def demand_for(topology: Topology, elements: tuple[Element, ...], inventory: Inventory,
               **options: Any) -> Demand:
    """What to plan for: the named hosts with their VMs, the other VMs, and ``-r`` when nothing is named."""
    named = named_hosts(topology)
    assigned: dict[str, tuple[VM, ...]] = {}
    hosts = []
    for host in named:
        node = inventory.node(node_of(host))
        if node is None:
            raise UsageError(f"unknown Grid'5000 host {host.id} in the topology")
        hosts.append(node.fqdn)
        assigned[node.fqdn] = tuple(host.vms)
    vms = [vm for host in topology.hosts() if host not in named for vm in host.vms] + list(topology.unplaced)
    return Demand(elements=elements, hosts=tuple(hosts), vms=tuple(vms), assigned=assigned, **options)


def substitute_hosts(topology: Topology, inventory: Inventory, remaps: Iterable[Remap]) -> None:
    """Rename each named host OAR cannot give into its substitute (same cluster), VMs and all.

    ``extra["replaces"]`` keeps the name the file gave, for the record and the final topology.
    """
    by_node = {remap.host: remap for remap in remaps}
    for host in named_hosts(topology):
        node = inventory.node(node_of(host))
        remap = by_node.get(node.fqdn) if node else None
        if remap is None:
            continue
        host.extra = {**host.extra, NAMED: True, NODE: remap.substitute, REPLACES: host.id}
        host.id = remap.substitute
        for vm in host.vms:
            vm.host = host.id


def apply_plan(topology: Topology, plan: Plan, inventory: Inventory) -> Topology:
    """The named hosts (under their real site and cluster) plus the predicted ones; other VMs unplaced."""
    out = Topology(meta=topology.meta, unplaced=[])
    named = {node_of(h): h for h in named_hosts(topology)}
    for host in topology.hosts():
        key = node_of(host)
        if key not in named:
            out.unplaced.extend(_detached(host.vms))
    for site in plan.sites.values():
        for fqdn in site.predicted:
            node = inventory.nodes[fqdn]
            old = named.get(fqdn) or next((h for k, h in named.items() if inventory.node(k) is node), None)
            if old is not None:
                host = Host(fqdn, node.capacity, HOST_PLANNED, None, _detached(old.vms),
                            {**old.extra, NAMED: True, NODE: fqdn})
            else:
                host = Host(fqdn, node.capacity, HOST_PLANNED, None, [], {PREDICTED: True, NODE: fqdn})
            out.add_host(node.site, node.cluster, host)
    out.unplaced.extend(_detached(topology.unplaced))
    return out


def apply_jobs(topology: Topology, nodes: Mapping[str, Iterable[str]], inventory: Inventory,
               vlan: str | None) -> Topology:
    """The hosts of the jobs (``{"site:id": [fqdn...]}``): kept if present, added if missing; hosts not in
    the jobs (predicted ones) are dropped and their VMs unplaced."""
    named = {node_of(h) for h in topology.hosts() if h.extra.get(NAMED)}

    def order(fqdn: str) -> tuple[Any, ...]:  # the order plans place VMs in (Plan.planned_hosts)
        node = inventory.nodes.get(fqdn)
        return (fqdn not in named, natural_key(node.cluster if node else ""), natural_key(fqdn))

    wanted: dict[str, str] = {}
    for label, fqdns in nodes.items():
        for fqdn in sorted(fqdns, key=order):
            wanted[fqdn] = label
    out = Topology(meta=topology.meta, unplaced=[])
    present: dict[str, Host] = {}
    for host in topology.hosts():
        if node_of(host) in wanted:
            present[node_of(host)] = host
        else:
            out.unplaced.extend(_detached(host.vms))
    for fqdn, label in wanted.items():
        node = inventory.nodes.get(fqdn)
        if node is None:
            raise UsageError(f"job {label} holds {fqdn}, which the reference API does not describe")
        kept = present.get(fqdn)
        name = kavlan_name(fqdn, vlan) if vlan else fqdn
        host = kept if kept is not None else Host(name, node.capacity, HOST_PLANNED, None, [], {})
        vms = _detached(host.vms)
        extra = {k: v for k, v in host.extra.items() if k != PREDICTED}
        extra.update({NODE: fqdn, JOB: label})
        out.add_host(node.site, node.cluster, Host(name, node.capacity, host.state, host.reason, vms, extra))
    out.unplaced.extend(_detached(topology.unplaced))
    return out


def _detached(vms: Iterable[VM]) -> list[VM]:
    out = []
    for vm in vms:
        vm.host = None
        out.append(vm)
    return out
