"""Reference documents the vendored snapshot lacks: a site's `servers` and `pdus`, made from what it has.

The real reference repository has `sites/<site>/servers/*.json` and `sites/<site>/pdus/*.json`; the
snapshot (data/README.md) dropped both. Clients read them on paths of their own (EnOSlib's
`servers["dns"].network_adapters["default"]["ip"]` gives its VMs a DNS server), so the testbed serves
documents of the real shape whose values are the testbed's truth:

- `dns`: the site's resolver, at the production gateway's address, which is where the testbed's dnsmasq
  answers (the nodes' `resolv.conf` names it too);
- `frontend`: the site's `frontend_ip` (reference data only: no frontend host runs in the testbed);
- one PDU per cluster, `<cluster>-pdu1`, one outlet per node in the reference order.

Every document carries `"synthetic": true` so that nobody mistakes it for vendored data.

The same goes for whole nodes: `with_synthetic_nodes` extends clusters with nodes of their own description
(benchmarks/simulate_scale.py needs 1,000 VM-capable hosts; the snapshot has 472 in the default queue).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from g5k_testbed.reference import Reference, SiteData, natural_key, node_info


def _server(uid: str, ip: str, alias: list[str], description: str) -> dict[str, Any]:
    return {
        "uid": uid,
        "type": "server",
        "kind": "virtual",
        "alias": alias,
        "description": description,
        "network_adapters": {"default": {"ip": ip, "mounted": True, "interface": "Ethernet"}},
        "synthetic": True,
    }


def site_servers(site: SiteData) -> list[dict[str, Any]]:
    """The site's servers, by uid order."""
    doc = site.doc
    gateway = ((doc.get("kavlans") or {}).get("default") or {}).get("gateway")
    servers = []
    if gateway:
        servers.append(_server("dns", gateway, ["dns", f"dns.{site.uid}"], f"DNS resolver of {site.uid}"))
    if doc.get("frontend_ip"):
        servers.append(_server("frontend", doc["frontend_ip"], [f"f{site.uid}", f"frontend.{site.uid}"],
                               f"Frontend of {site.uid} (reference data only)"))
    return sorted(servers, key=lambda s: s["uid"])


def site_pdus(site: SiteData) -> list[dict[str, Any]]:
    """One PDU per cluster: its outlets feed the cluster's nodes, in the reference order."""
    pdus = []
    for cluster, nodes in site.nodes.items():
        pdus.append({
            "uid": f"{cluster}-pdu1",
            "type": "pdu",
            "vendor": "vm5k-testbed",
            "model": "synthetic",
            "ports": {str(port): node["uid"] for port, node in enumerate(nodes, start=1)},
            "sensors": [{"power": {"per_outlets": True, "snmp": {"available": False}}}],
            "synthetic": True,
        })
    return sorted(pdus, key=lambda p: p["uid"])


# -- synthetic nodes ---------------------------------------------------------------------------------------

#: Node document keys that name one physical machine's addresses: dropped from synthetic copies, so that no
#: synthetic node claims a real node's IP, MAC or KaVLAN addresses.
_ADDRESS_KEYS = ("ip", "ip6", "mac")


def synthetic_node(template: dict[str, Any], uid: str) -> dict[str, Any]:
    """A node document of `template`'s hardware named `uid`, marked ``"synthetic": true``.

    Why not a plain copy: a node's document also says where it is on the network (IPs, MACs, its KaVLAN
    addresses, its switch port). A synthetic node keeps the hardware (what planning and placement read) and
    its adapters' names, renamed after `uid`; it has no IP, MAC, KaVLAN address nor switch port of its own,
    so a KaVLAN run cannot use it (subnet runs can: VM addresses come from the site's /22s).

    >>> doc = {"uid": "gros-1", "main_memory": {"ram_size": 1}, "kavlan": {"eth0": {"kavlan-4": "10.0.0.1"}},
    ...        "network_adapters": [{"device": "eth0", "ip": "172.16.1.1", "mac": "aa:bb:cc:dd:ee:ff",
    ...                              "switch": "sw-1", "network_address": "gros-1.nancy.grid5000.fr"}]}
    >>> node = synthetic_node(doc, "gros-200")
    >>> node["uid"], node["synthetic"], "kavlan" in node
    ('gros-200', True, False)
    >>> node["network_adapters"]
    [{'device': 'eth0', 'network_address': 'gros-200.nancy.grid5000.fr'}]
    """
    node = copy.deepcopy(template)
    old = str(template["uid"])
    node["uid"] = uid
    node.pop("kavlan", None)
    adapters = []
    for adapter in node.get("network_adapters") or []:
        adapter = {k: v for k, v in adapter.items() if k not in (*_ADDRESS_KEYS, "switch", "switch_port")}
        address = adapter.get("network_address")
        if isinstance(address, str) and address.split(".", 1)[0].startswith(old):
            first, _, rest = address.partition(".")
            adapter["network_address"] = f"{uid}{first[len(old):]}.{rest}" if rest else uid + first[len(old):]
        adapters.append(adapter)
    node["network_adapters"] = adapters
    node["synthetic"] = True
    return node


def with_synthetic_nodes(reference: Reference, counts: Mapping[tuple[str, str], int]) -> Reference:
    """A new `Reference`: `reference` plus, for each (site, cluster) of `counts`, that many synthetic nodes
    of the cluster's description (its last node's document, see `synthetic_node`), numbered after its highest
    node (``gros-125``, ``gros-126``... for a cluster whose highest node is ``gros-124``).

    Why: the vendored snapshot has 939 nodes, 472 of them VM-capable in the default queue; simulating
    vm5k's control plane on 1,000 hosts needs more nodes of real clusters' shapes. `reference` is left
    untouched (loads are cached and shared); the cluster documents are shared with it (read-only).

    >>> base = Reference.load(["nancy"])
    >>> more = with_synthetic_nodes(base, {("nancy", "gros"): 2})
    >>> len(more.sites["nancy"].nodes["gros"]) - len(base.sites["nancy"].nodes["gros"])
    2
    >>> more.sites["nancy"].nodes["gros"][-1]["uid"], more.nodes_by_fqdn["gros-126.nancy.grid5000.fr"].cores
    ('gros-126', 18)
    """
    sites = dict(reference.sites)
    for (site_uid, cluster), count in counts.items():
        if count < 0:
            raise ValueError(f"{site_uid}/{cluster}: a negative count of synthetic nodes ({count})")
        site = sites.get(site_uid)
        if site is None or cluster not in site.clusters:
            raise ValueError(f"unknown cluster {site_uid}/{cluster}")
        existing = site.nodes[cluster]
        if not existing:
            raise ValueError(f"{site_uid}/{cluster} has no node to copy")
        template = existing[-1]
        last = max(int(re.sub(r"^.*-", "", str(n["uid"]))) for n in existing)
        added = [synthetic_node(template, f"{cluster}-{last + i}") for i in range(1, count + 1)]
        nodes = {**site.nodes, cluster: [*existing, *added]}
        infos = dict(site.node_info)
        for doc in added:
            info = node_info(site_uid, site.clusters[cluster], doc)
            infos[info.fqdn] = info
        ordered = {fqdn: infos[fqdn] for fqdn in sorted(infos, key=natural_key)}
        sites[site_uid] = replace(site, nodes=nodes, node_info=ordered)
    return Reference(sites, reference.backbone, reference.environments)
