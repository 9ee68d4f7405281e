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
"""

from __future__ import annotations

from typing import Any

from g5k_testbed.reference import SiteData


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
