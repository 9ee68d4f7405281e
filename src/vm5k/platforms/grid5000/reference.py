"""The reference API: the hardware of each node, per node (clusters are not always homogeneous).

One ``GET /sites/{site}?deep=true`` per site brings the site document, its clusters and all their nodes
(11 calls for the whole of Grid'5000 instead of ~170), fetched in parallel. From it:

- a `planning.ClusterSpec` per cluster (queues, exotic flag) with a `planning.NodeSpec` per node:
  RAM ``main_memory.ram_size`` (bytes), ``architecture.nb_cores`` and ``nb_threads``,
  ``supported_job_types.virtual`` (a string such as "ivt", or false: no VMs there) and ``deploy``;
- the site's network facts for the address pools (`addresses.SiteNetwork`): the VM range
  ``virt_ip_range`` and its gateway, the KaVLAN networks, and the nodes' own addresses in each vlan.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from vm5k.addresses import SiteNetwork
from vm5k.platforms.grid5000.api import ApiClient
from vm5k.platforms.grid5000.planning import ClusterSpec, Inventory, NodeSpec
from vm5k.topology import Capacity, natural_key

log = logging.getLogger(__name__)
DOMAIN = "grid5000.fr"
PARALLEL_SITES = 8


@dataclass
class Reference:
    """What the reference API says about some sites: hardware for planning, networks for addresses."""

    inventory: Inventory
    networks: dict[str, SiteNetwork]


def list_sites(api: ApiClient) -> list[str]:
    """Every site of the API (``GET /sites``), in the API's order."""
    return [str(item["uid"]) for item in api.get("/sites").get("items", [])]


def fetch_reference(api: ApiClient, sites: Sequence[str]) -> Reference:
    """The reference data of `sites`, fetched in parallel (one deep GET per site)."""
    with ThreadPoolExecutor(max_workers=max(1, min(PARALLEL_SITES, len(sites)))) as pool:
        docs = list(pool.map(lambda site: api.get(f"/sites/{site}", deep="true"), sites))
    return reference_from_docs({site: _items(doc) for site, doc in zip(sites, docs, strict=True)})


def _items(doc: Any) -> Mapping[str, Any]:
    """A deep reply wraps the tree in ``items`` (an object, not a list)."""
    if isinstance(doc, Mapping) and isinstance(items := doc.get("items"), Mapping):
        return items
    return doc if isinstance(doc, Mapping) else {}


def reference_from_docs(site_docs: Mapping[str, Mapping[str, Any]]) -> Reference:
    """Build the `Reference` from deep site documents (pure).

    >>> doc = {"uid": "lyon", "clusters": {"taurus": {"uid": "taurus", "queues": ["default"], "nodes": [
    ...     {"uid": "taurus-1", "main_memory": {"ram_size": 34359738368},
    ...      "architecture": {"nb_cores": 12, "nb_threads": 24},
    ...      "supported_job_types": {"virtual": "ivt", "deploy": True}}]}}}
    >>> ref = reference_from_docs({"lyon": doc})
    >>> ref.inventory.nodes["taurus-1.lyon.grid5000.fr"].capacity
    Capacity(ram=34359738368, cores=12, threads=24, virtual=True)
    """
    clusters: list[ClusterSpec] = []
    networks: dict[str, SiteNetwork] = {}
    for site, doc in site_docs.items():
        cluster_docs = doc.get("clusters") or {}
        if isinstance(cluster_docs, Mapping):
            cluster_docs = list(cluster_docs.values())
        vlan_ips: dict[str, list[str]] = {}
        for cluster_doc in sorted(cluster_docs, key=lambda c: natural_key(str(c.get("uid", "")))):
            nodes = tuple(node_spec(site, str(cluster_doc["uid"]), node)
                          for node in sorted(cluster_doc.get("nodes") or (),
                                             key=lambda n: natural_key(str(n.get("uid", "")))))
            for node in cluster_doc.get("nodes") or ():
                for addresses in (node.get("kavlan") or {}).values():
                    for name, ip in (addresses or {}).items():
                        vlan_ips.setdefault(str(name).removeprefix("kavlan-"), []).append(str(ip))
            queues = cluster_doc.get("queues") or ["admin", "default"]
            clusters.append(ClusterSpec(str(cluster_doc["uid"]), site, nodes, tuple(str(q) for q in queues),
                                        bool(cluster_doc.get("exotic"))))
        networks[site] = site_network(site, doc, vlan_ips)
    return Reference(Inventory(clusters, sites=site_docs), networks)


def node_spec(site: str, cluster: str, doc: Mapping[str, Any]) -> NodeSpec:
    """A node's hardware from its reference document."""
    arch = doc.get("architecture") or {}
    memory = doc.get("main_memory") or {}
    jobs = doc.get("supported_job_types") or {}
    virtual = jobs.get("virtual")
    cores = int(arch.get("nb_cores") or 0)
    threads = arch.get("nb_threads")
    capacity = Capacity(int(memory.get("ram_size") or 0), cores,
                        int(threads) if threads is not None else None, virtual=bool(virtual))
    queues = jobs.get("queues")
    return NodeSpec(f"{doc['uid']}.{site}.{DOMAIN}", site, cluster, capacity,
                    str(virtual) if virtual else None, bool(jobs.get("deploy", True)),
                    tuple(str(q) for q in queues) if queues else None)


def site_network(site: str, doc: Mapping[str, Any], vlan_ips: Mapping[str, Iterable[str]]) -> SiteNetwork:
    subnet = doc.get("g5ksubnet") or {}
    kavlans = {str(vid): (str(net["network"]), str(net.get("gateway") or ""))
               for vid, net in (doc.get("kavlans") or {}).items()
               if isinstance(net, Mapping) and net.get("network") and str(vid).isdigit()}
    global_vlan = (doc.get("ipv6") or {}).get("site_global_kavlan")
    return SiteNetwork(site, doc.get("virt_ip_range") or subnet.get("network"), subnet.get("gateway"),
                       kavlans, {vid: frozenset(ips) for vid, ips in vlan_ips.items()},
                       str(global_vlan) if global_vlan is not None else None)
