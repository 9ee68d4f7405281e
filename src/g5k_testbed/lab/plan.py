"""Which real Grid'5000 nodes a testbed materialises, and the networks they sit on (pure: no I/O).

`--site rennes:3,nancy:2` takes, on each site, nodes of a cluster that can host VMs the way vm5k needs
(hardware virtualisation, KaVLAN, `default` queue, not exotic, x86_64), in the reference data's natural
order (`paradoxe-1`, `paradoxe-2`, ...). Every address comes from the reference data: the node's primary
adapter (the mounted Ethernet one) on the site's production network, its KaVLAN addresses, the site's
VM range (`g5ksubnet`), so the testbed answers with the addresses Grid'5000 would.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from g5k_testbed.lab.errors import UsageError
from g5k_testbed.lab.layout import interface_name

DOMAIN = "grid5000.fr"
DEFAULT_SITE = "rennes"
DEFAULT_NODES = 3
MAX_NODES = 64


@dataclass(frozen=True)
class SiteRequest:
    site: str
    cluster: str | None
    count: int


def parse_site_spec(spec: str | None, nodes: int | None) -> list[SiteRequest]:
    """`rennes:3,nancy:2` (or `rennes`, `rennes:paradoxe:2`) and `--nodes N` into per-site requests.

    >>> [(r.site, r.cluster, r.count) for r in parse_site_spec("rennes:3,nancy:gros:2", None)]
    [('rennes', None, 3), ('nancy', 'gros', 2)]
    >>> [(r.site, r.count) for r in parse_site_spec("rennes,nancy", 2)]
    [('rennes', 2), ('nancy', 2)]
    """
    if nodes is not None and not 1 <= nodes <= MAX_NODES:
        raise UsageError(f"--nodes {nodes}: give a number of nodes between 1 and {MAX_NODES}")
    if spec is not None and not spec.strip():
        raise UsageError("--site: empty (expected SITE[:CLUSTER][:N] items separated by commas)")
    requests: list[SiteRequest] = []
    for item in (spec or DEFAULT_SITE).split(","):
        parts = item.strip().split(":")
        if not parts[0] or not re.fullmatch(r"[a-z][a-z0-9-]*", parts[0]) or len(parts) > 3:
            raise UsageError(f"--site {spec!r}: expected SITE[:CLUSTER][:N] items separated by commas")
        site, cluster, count = parts[0], None, None
        for part in parts[1:]:
            if part.isdigit():
                if count is not None:
                    raise UsageError(f"--site {item!r}: two node counts")
                count = int(part)
            elif re.fullmatch(r"[a-z][a-z0-9-]*", part) and cluster is None:
                cluster = part
            else:
                raise UsageError(f"--site {item!r}: {part!r} is neither a cluster name nor a node count")
        if count is not None and nodes is not None and count != nodes:
            raise UsageError(f"--site {item!r} asks for {count} nodes but --nodes says {nodes}")
        count = count if count is not None else (nodes if nodes is not None else DEFAULT_NODES)
        if not 1 <= count <= MAX_NODES:
            raise UsageError(f"--site {item!r}: give between 1 and {MAX_NODES} nodes")
        if any(r.site == site for r in requests):
            raise UsageError(f"--site {spec!r}: site {site} appears twice")
        requests.append(SiteRequest(site, cluster, count))
    if sum(r.count for r in requests) > MAX_NODES:
        raise UsageError(f"--site {spec!r}: at most {MAX_NODES} nodes in total")
    return requests


@dataclass(frozen=True)
class VlanNet:
    """One KaVLAN: its id, kind (local, routed, global), network and gateway, and the site that routes it."""

    vid: str
    kind: str
    network: str
    gateway: str
    owner: str


@dataclass
class SitePlan:
    name: str
    prod_network: str  # the production network (kavlans.default)
    prod_gateway: str
    subnet_network: str  # the VM range g5k-subnets carve /22s from (g5ksubnet.network)
    subnet_gateway: str
    global_vlan: str | None
    vlans: dict[str, VlanNet] = field(default_factory=dict)  # the vlans this site routes (own ones)

    @property
    def domain(self) -> str:
        return f"{self.name}.{DOMAIN}"

    @property
    def prod_prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.prod_network).prefixlen

    @property
    def subnet_prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet_network).prefixlen


@dataclass
class NodePlan:
    fqdn: str
    uid: str
    site: str
    cluster: str
    ip: str
    mac: str
    iface: str  # the primary adapter's name inside the node (predictable name, e.g. ens10f0np0)
    device: str  # its legacy name (eth0), the key of the reference `kavlan` map
    kavlan: dict[str, str]  # vlan id -> the node's address in that vlan
    ram: int
    cores: int

    @property
    def short(self) -> str:
        return self.uid

    def kavlan_fqdn(self, vid: str) -> str:
        return f"{self.uid}-kavlan-{vid}.{self.site}.{DOMAIN}"

    @property
    def peer(self) -> str:
        """The name of the node's cable end on the bridge it is plugged into."""
        return interface_name(self.uid)


@dataclass
class LabPlan:
    sites: dict[str, SitePlan]
    nodes: list[NodePlan]

    def node(self, fqdn: str) -> NodePlan | None:
        for node in self.nodes:
            if node.fqdn == fqdn:
                return node
        return None

    def vlan(self, vid: str, site: str) -> VlanNet | None:
        """The vlan `vid` as seen from `site`: its own local/routed vlan, or a global vlan of any site."""
        own = self.sites[site].vlans.get(vid)
        if own is not None:
            return own
        for other in self.sites.values():
            found = other.vlans.get(vid)
            if found is not None and found.kind == "global":
                return found
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"sites": {name: asdict(site) for name, site in self.sites.items()},
                "nodes": [asdict(node) for node in self.nodes]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabPlan:
        sites = {}
        for name, raw in data["sites"].items():
            vlans = {vid: VlanNet(**vlan) for vid, vlan in raw.get("vlans", {}).items()}
            sites[name] = SitePlan(**{**raw, "vlans": vlans})
        return cls(sites, [NodePlan(**raw) for raw in data["nodes"]])


# ---------------------------------------------------------------------------------------------- choice
def vm_cluster(cluster: dict[str, Any], nodes: list[dict[str, Any]]) -> bool:
    """A cluster vm5k can use on the default queue: VMs (hardware virtualisation), KaVLAN, not exotic."""
    if not nodes or cluster.get("exotic") or not cluster.get("kavlan"):
        return False
    if "default" not in (cluster.get("queues") or []):
        return False
    first = nodes[0]
    return bool(first.get("supported_job_types", {}).get("virtual")) and \
        first.get("architecture", {}).get("platform_type") == "x86_64"


def primary_adapter(node: dict[str, Any]) -> dict[str, Any]:
    adapter: dict[str, Any]
    for adapter in node.get("network_adapters", []):
        ethernet = adapter.get("interface") == "Ethernet"
        if adapter.get("mounted") and ethernet and not adapter.get("management"):
            return adapter
    raise UsageError(f"node {node.get('uid')}: no primary Ethernet adapter in the reference data")


def site_plan(doc: dict[str, Any], global_owner: dict[str, str]) -> SitePlan:
    """The networks of one site from its reference document."""
    name = doc["uid"]
    kavlans = doc.get("kavlans") or {}
    default = kavlans.get("default")
    subnet = doc.get("g5ksubnet") or {}
    if not default or not subnet.get("network"):
        raise UsageError(f"site {name}: the reference data has no production network or VM range")
    global_vlan = (doc.get("ipv6") or {}).get("site_global_kavlan")
    global_vlan = str(global_vlan) if global_vlan is not None else None
    vlans: dict[str, VlanNet] = {}
    for vid, net in kavlans.items():
        if not vid.isdigit():
            continue
        number = int(vid)
        kind = "local" if number <= 3 else "routed" if number <= 9 else None
        kind = "global" if kind is None and vid == global_vlan else kind
        if kind is None or global_owner.get(vid, name) != name:
            continue
        vlans[vid] = VlanNet(vid, kind, net["network"], net["gateway"], name)
    return SitePlan(name, default["network"], default["gateway"], subnet["network"], subnet["gateway"],
                    global_vlan, vlans)


def choose(reference: Any, requests: list[SiteRequest]) -> LabPlan:
    """The plan for `requests`, read from a `g5k_testbed.reference.Reference` holding their sites."""
    global_owner: dict[str, str] = {}
    for uid, data in reference.sites.items():
        vid = (data.doc.get("ipv6") or {}).get("site_global_kavlan")
        if vid is not None and str(vid) in (data.doc.get("kavlans") or {}):
            global_owner[str(vid)] = uid
    sites: dict[str, SitePlan] = {}
    nodes: list[NodePlan] = []
    for request in requests:
        data = reference.sites.get(request.site)
        if data is None:
            raise UsageError(f"--site: unknown site {request.site!r}")
        sites[request.site] = site_plan(data.doc, global_owner)
        if request.cluster is not None:
            if request.cluster not in data.clusters:
                raise UsageError(f"--site: site {request.site} has no cluster {request.cluster!r}")
            if not vm_cluster(data.clusters[request.cluster], data.nodes[request.cluster]):
                raise UsageError(f"--site: cluster {request.cluster} cannot host vm5k's VMs "
                                 "(needs virtualisation, KaVLAN, the default queue, not exotic, x86_64)")
            candidates = [request.cluster]
        else:
            eligible = [c for c in data.clusters if vm_cluster(data.clusters[c], data.nodes[c])]
            # The biggest cluster first: room for scale tests; the reference order breaks ties.
            candidates = sorted(eligible, key=lambda c: -len(data.nodes[c]))
        picked = [(c, n) for c in candidates for n in data.nodes[c]][:request.count]
        if len(picked) < request.count:
            raise UsageError(f"--site: {request.site} has only {len(picked)} suitable nodes, "
                             f"{request.count} asked")
        site = sites[request.site]
        for cluster, doc in picked:
            nodes.append(node_plan(request.site, cluster, doc, site))
    return LabPlan(sites, nodes)


def node_plan(site: str, cluster: str, doc: dict[str, Any], site_plan_: SitePlan) -> NodePlan:
    adapter = primary_adapter(doc)
    ip = adapter.get("ip")
    if not ip or ipaddress.IPv4Address(ip) not in ipaddress.IPv4Network(site_plan_.prod_network):
        raise UsageError(f"node {doc['uid']}: address {ip} outside {site}'s production network")
    device = adapter.get("device") or "eth0"
    kavlan = {name.removeprefix("kavlan-"): address
              for name, address in (doc.get("kavlan") or {}).get(device, {}).items()}
    return NodePlan(
        fqdn=f"{doc['uid']}.{site}.{DOMAIN}", uid=doc["uid"], site=site, cluster=cluster, ip=ip,
        mac=(adapter.get("mac") or "").lower(), iface=interface_name(adapter.get("name") or device),
        device=device, kavlan=kavlan, ram=int(doc.get("main_memory", {}).get("ram_size") or 0),
        cores=int(doc.get("architecture", {}).get("nb_cores") or 1),
    )
