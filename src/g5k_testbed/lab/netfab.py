"""The testbed's network: namespaces, bridges, cables and routes, none of them in the machine's namespace.

    root namespace (the frontend: no route, no bridge, nothing of ours)
        │ ssh -F <state>/ssh_config  →  ProxyCommand nsenter --net=/run/netns/vtb-<id>-<site> nc <ip> 22
        ▼
    vtb-<id>-bb  backbone: one cable per site, routes to each site's routed networks
        │ 198.18.<i>.1/30 ── 198.18.<i>.2/30
        ▼
    vtb-<id>-<site>  site router: br-prod (production network gateway + VM range gateway, DNS, DHCP),
        │            br-kavlan-<N> (created on first use: gateway of vlan N; local vlans 1-3 not forwarded)
        │ veth <node uid> ── <primary adapter name> (reference IP and MAC)
        ▼
    vtb-<id>-<node uid>  the node (sshd, libvirtd, the VMs' taps and bridges vm5k creates)

A node moves between vlans by moving its cable end (`<node uid>` in the site namespace) to another bridge,
possibly in another site's namespace (a global vlan lives in its owning site's namespace), and by swapping
its address for the reference address it has in that vlan.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from pathlib import Path
from typing import Any

from g5k_testbed.lab.errors import LabError
from g5k_testbed.lab.layout import Layout
from g5k_testbed.lab.plan import DOMAIN, LabPlan, NodePlan, SitePlan, VlanNet
from g5k_testbed.lab.procs import in_netns, run
from g5k_testbed.lab.runtime import Runtime

DEFAULT_VLAN = "DEFAULT"
PROD_BRIDGE = "br-prod"
TRANSIT = ipaddress.IPv4Network("198.18.0.0/16")  # benchmarking range: never a Grid'5000 address
_bridges_lock = threading.Lock()


def vlan_bridge(vid: str) -> str:
    return f"br-kavlan-{vid}"


def ip(netns: str | None, *args: str, check: bool = True) -> str:
    argv = ["ip"] + (["-n", netns] if netns else []) + list(args)
    return run(argv, check=check).stdout


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def links(netns: str) -> dict[str, dict[str, Any]]:
    """The links of a namespace by name (`ip -j link`)."""
    out = ip(netns, "-j", "link", "show")
    return {link["ifname"]: link for link in json.loads(out or "[]")}


def ensure_netns(runtime: Runtime, name: str) -> None:
    """Create a named network namespace (recorded first) with its loopback up."""
    runtime.record(f"netns:{name}", "netns", name=name)
    if not netns_exists(name):
        run(["ip", "netns", "add", name])
    ip(name, "link", "set", "lo", "up")


def delete_netns(name: str) -> None:
    if netns_exists(name):
        run(["ip", "netns", "delete", name], check=False)


def sysctl(netns: str, *settings: str) -> None:
    run(in_netns(netns, ["sysctl", "-q", "-w", *settings]))


def transit_addresses(index: int) -> tuple[str, str]:
    """(backbone side, site side) of site number `index`'s cable, each a /30 of 198.18.0.0/16."""
    base = int(TRANSIT.network_address) + 4 * index
    return str(ipaddress.IPv4Address(base + 1)), str(ipaddress.IPv4Address(base + 2))


def routed_networks(site: SitePlan) -> list[str]:
    """The networks other sites reach through this site's router (never its local vlans)."""
    nets = [site.prod_network, site.subnet_network]
    nets += [vlan.network for vlan in site.vlans.values() if vlan.kind != "local"]
    return nets


def build_fabric(layout: Layout, runtime: Runtime, plan: LabPlan) -> None:
    """The backbone and every site's router with its production bridge (idempotent)."""
    ensure_netns(runtime, layout.backbone_netns)
    sysctl(layout.backbone_netns, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0")
    # Cable numbers follow the site names, so that every `up` gives each site the same addresses.
    for index, site in enumerate(sorted(plan.sites.values(), key=lambda site: site.name)):
        site_ns = layout.site_netns(site.name)
        ensure_netns(runtime, site_ns)
        sysctl(site_ns, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0",
               "net.ipv4.conf.default.send_redirects=0")
        bb_addr, site_addr = transit_addresses(index)
        bb_link = f"s-{site.name}"[:15]
        if bb_link not in links(layout.backbone_netns):
            ip(layout.backbone_netns, "link", "add", bb_link, "type", "veth", "peer", "name", "bb",
               "netns", site_ns)
        ip(layout.backbone_netns, "addr", "replace", f"{bb_addr}/30", "dev", bb_link)
        ip(layout.backbone_netns, "link", "set", bb_link, "up")
        ip(site_ns, "addr", "replace", f"{site_addr}/30", "dev", "bb")
        ip(site_ns, "link", "set", "bb", "up")
        ip(site_ns, "route", "replace", "default", "via", bb_addr)
        for network in routed_networks(site):
            ip(layout.backbone_netns, "route", "replace", network, "via", site_addr)
        if PROD_BRIDGE not in links(site_ns):
            ip(site_ns, "link", "add", PROD_BRIDGE, "type", "bridge")
        ip(site_ns, "addr", "replace", f"{site.prod_gateway}/{site.prod_prefixlen}", "dev", PROD_BRIDGE)
        ip(site_ns, "addr", "replace", f"{site.subnet_gateway}/{site.subnet_prefixlen}", "dev", PROD_BRIDGE)
        ip(site_ns, "link", "set", PROD_BRIDGE, "up")


def ensure_vlan_bridge(layout: Layout, vlan: VlanNet) -> tuple[str, str]:
    """The (namespace, bridge) of a vlan, created with its gateway on first use.

    A local vlan (1-3) is isolated as on Grid'5000: its bridge holds an address (the testbed reaches its
    nodes for SSH, and they reach the site's DNS) but nothing received from it is forwarded.
    """
    netns = layout.site_netns(vlan.owner)
    bridge = vlan_bridge(vlan.vid)
    with _bridges_lock:  # deployments of several nodes into one vlan run in parallel threads
        if bridge not in links(netns):
            ip(netns, "link", "add", bridge, "type", "bridge", check=False)
            if bridge not in links(netns):
                raise LabError(f"cannot create bridge {bridge} in {netns}")
    prefix = ipaddress.IPv4Network(vlan.network).prefixlen
    ip(netns, "addr", "replace", f"{vlan.gateway}/{prefix}", "dev", bridge)
    ip(netns, "link", "set", bridge, "up")
    if vlan.kind == "local":
        sysctl(netns, f"net.ipv4.conf.{bridge}.forwarding=0")
    return netns, bridge


def attachment(layout: Layout, plan: LabPlan, node: NodePlan, vid: str) -> tuple[str, str, str, int, str]:
    """Where a node is plugged in `vid`: (namespace, bridge, node address, prefix length, gateway)."""
    site = plan.sites[node.site]
    if vid == DEFAULT_VLAN:
        return layout.site_netns(site.name), PROD_BRIDGE, node.ip, site.prod_prefixlen, site.prod_gateway
    vlan = plan.vlan(vid, node.site)
    address = node.kavlan.get(vid)
    if vlan is None or address is None:
        raise LabError(f"{node.fqdn}: vlan {vid} is not reachable from {node.site} in this testbed")
    netns, bridge = ensure_vlan_bridge(layout, vlan)
    return netns, bridge, address, ipaddress.IPv4Network(vlan.network).prefixlen, vlan.gateway


def cut_cable(bridge_ns: str, node: NodePlan) -> None:
    """Delete the node's cable end in `bridge_ns` (and so both ends), if it is there.

    Deleting a node's namespace does not free its cable at once: the kernel dismantles a namespace only
    when nothing refers to it any more, and an orphaned TCP connection of the killed sshd (FIN_WAIT,
    retransmitting to a peer that is gone) can hold it for minutes. The veth's end in the bridge's
    namespace then keeps the node's link name, and the next `link add` fails with "File exists".
    """
    if netns_exists(bridge_ns) and node.peer in links(bridge_ns):
        ip(bridge_ns, "link", "del", node.peer, check=False)


def plug_node(layout: Layout, plan: LabPlan, node: NodePlan, vid: str) -> None:
    """Cable a freshly created node namespace into vlan `vid` with its reference address and MAC."""
    node_ns = layout.node_netns(node.uid)
    bridge_ns, bridge, address, prefix, gateway = attachment(layout, plan, node, vid)
    if node.iface not in links(node_ns):
        cut_cable(bridge_ns, node)  # the cable of the node's previous life, if the kernel still holds it
        ip(bridge_ns, "link", "add", node.peer, "type", "veth", "peer", "name", node.iface, "netns", node_ns)
    if node.mac and _unicast(node.mac):
        ip(node_ns, "link", "set", node.iface, "address", node.mac)
    ip(node_ns, "addr", "replace", f"{address}/{prefix}", "dev", node.iface)
    ip(node_ns, "link", "set", node.iface, "up")
    ip(node_ns, "route", "replace", "default", "via", gateway)
    ip(bridge_ns, "link", "set", node.peer, "master", bridge)
    ip(bridge_ns, "link", "set", node.peer, "up")


def replug_node(layout: Layout, plan: LabPlan, node: NodePlan, old: str, new: str) -> None:
    """Move a running node from vlan `old` to vlan `new`: its cable end and its address.

    The address is swapped wherever it lives now (vm5k may have moved it onto a bridge `br0`).
    """
    node_ns = layout.node_netns(node.uid)
    old_ns, _, old_address, old_prefix, _ = attachment(layout, plan, node, old)
    new_ns, bridge, address, prefix, gateway = attachment(layout, plan, node, new)
    if node.peer not in links(old_ns):
        raise LabError(f"{node.fqdn}: its cable is not where the testbed left it ({old_ns})")
    if new_ns != old_ns:
        ip(old_ns, "link", "set", node.peer, "netns", new_ns)
    ip(new_ns, "link", "set", node.peer, "master", bridge)
    ip(new_ns, "link", "set", node.peer, "up")
    holder = node.iface
    for entry in json.loads(ip(node_ns, "-j", "-4", "addr", "show") or "[]"):
        if any(info.get("local") == old_address for info in entry.get("addr_info", [])):
            holder = entry["ifname"]
            ip(node_ns, "addr", "del", f"{old_address}/{old_prefix}", "dev", holder)
    ip(node_ns, "addr", "replace", f"{address}/{prefix}", "dev", holder)
    ip(node_ns, "route", "replace", "default", "via", gateway)


def _unicast(mac: str) -> bool:
    try:
        first = int(mac.split(":")[0], 16)
    except ValueError:
        return False
    return len(mac.split(":")) == 6 and not first & 1


def node_names(node: NodePlan) -> list[tuple[str, str, str | None]]:
    """(name, address, vlan id or None) for every DNS name of a node: production, then each KaVLAN."""
    names: list[tuple[str, str, str | None]] = [(node.fqdn, node.ip, None)]
    for vid, address in sorted(node.kavlan.items(), key=lambda kv: int(kv[0])):
        names.append((node.kavlan_fqdn(vid), address, vid))
    return names


def site_of_domain(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) >= 3 and name.endswith("." + DOMAIN) else None
