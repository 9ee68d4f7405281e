"""IP/MAC pairs for the VMs: Grid'5000 subnets, KaVLAN ranges, and a stable assignment. Pure.

Two kinds of ranges:

- **subnets** (the default): the /22s a job reserved (``slash_22``/``slash_16``). Every address of a /22
  but its network and broadcast addresses is usable, with Grid'5000's MAC rule ``00:16:3E:`` + the 2nd,
  3rd and 4th octets in hex (``10.132.8.1`` → ``00:16:3E:84:08:01``); Grid'5000's DHCP already serves
  those pairs. VMs live on the site's /14 (its netmask and the ``g5ksubnet`` gateway). MACs are compared
  case-insensitively (`same_mac`).
- **KaVLAN** (``-k``): the vlan's network from the reference API, minus every /24 that holds a node's
  address in that vlan (from the nodes' reference documents), the first /24 and the one holding the
  gateway (infrastructure). MACs are ``02:56:`` + the four IP octets in hex: ``02`` makes them locally
  administered unicast addresses, which no vendor (and not Grid'5000's ``00:16:3E``) ever uses, so they
  cannot collide; vm5k's own dnsmasq serves them.

A VM keeps its pair across resumes: `assign` keeps every VM's current pair when it still belongs to the
range of its host's site and no other VM holds it, and gives the others the first free pairs in range
order. The pool itself is data (`AddressPool.to_dict`), saved in the topology's ``meta``.

>>> pool = AddressPool((subnet_range("rennes", ["10.156.4.0/22"], "10.156.0.0/14", "10.159.255.254"),))
>>> next(pool.ranges[0].pairs())
('10.156.4.1', '00:16:3E:9C:04:01')
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vm5k.errors import DeploymentError
from vm5k.topology import Topology, natural_key

GRID5000_MAC_PREFIX = "00:16:3E"
#: Where a run keeps its pool (`AddressPool.to_dict`) and its DNS/DHCP address in ``topology.meta``: the
#: platforms write them, the network and VMs steps read them.
POOL_KEY = "address_pool"
SERVICE_KEY = "service_address"  # the run's DNS/DHCP address, kept out of the VMs' pairs
KAVLAN_MAC_PREFIX = "02:56"  # locally administered, unicast: never a vendor's (nor Grid'5000's) MAC
SUBNET, KAVLAN = "subnet", "kavlan"


def grid5000_mac(ip: str) -> str:
    """Grid'5000's MAC for a subnet address: ``00:16:3E:`` + hex of octets 2-4 (upper case).

    >>> grid5000_mac("10.132.8.1")
    '00:16:3E:84:08:01'
    """
    octets = ipaddress.IPv4Address(ip).packed
    return f"{GRID5000_MAC_PREFIX}:{octets[1]:02X}:{octets[2]:02X}:{octets[3]:02X}"


def kavlan_mac(ip: str) -> str:
    """vm5k's MAC for a KaVLAN address: ``02:56:`` + hex of the four octets.

    >>> kavlan_mac("10.24.33.7")
    '02:56:0A:18:21:07'
    """
    octets = ipaddress.IPv4Address(ip).packed
    return KAVLAN_MAC_PREFIX + "".join(f":{octet:02X}" for octet in octets)


def same_mac(a: str | None, b: str | None) -> bool:
    """MACs compared as Grid'5000 does, case-insensitively (``00:16:3e`` is ``00:16:3E``)."""
    return a is not None and b is not None and a.lower() == b.lower()


def is_grid5000_mac(mac: str) -> bool:
    return mac.lower().startswith(GRID5000_MAC_PREFIX.lower() + ":")


@dataclass(frozen=True)
class SiteNetwork:
    """A site's network facts from the reference API.

    virt_ip_range: the /14 for VMs (``virt_ip_range`` or ``g5ksubnet.network``), subnet_gateway its gateway;
    kavlans: vlan id → (network, gateway); node_ips: vlan id → the nodes' own addresses in that vlan;
    global_vlan: the id of the site's global vlan.
    """

    site: str
    virt_ip_range: str | None = None
    subnet_gateway: str | None = None
    kavlans: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    node_ips: Mapping[str, frozenset[str]] = field(default_factory=dict)
    global_vlan: str | None = None


@dataclass(frozen=True)
class AddressRange:
    """Where the VMs of some sites take their addresses.

    blocks: the CIDRs addresses are drawn from, in order; network/netmask/gateway/broadcast: what the VMs
    are configured with; dhcp: who serves the pairs ("grid5000" for subnets, "vm5k" for a vlan);
    reserved: addresses no VM gets (the gateway never does either).
    """

    kind: str
    sites: tuple[str, ...]
    blocks: tuple[str, ...]
    network: str
    gateway: str | None
    vlan: str | None = None
    dhcp: str = "grid5000"
    reserved: tuple[str, ...] = ()  # addresses of the blocks kept out of the VMs' pairs (the run's DNS)

    @property
    def netmask(self) -> str:
        return str(ipaddress.IPv4Network(self.network, strict=False).netmask)

    @property
    def broadcast(self) -> str:
        return str(ipaddress.IPv4Network(self.network, strict=False).broadcast_address)

    def mac_for(self, ip: str) -> str:
        return grid5000_mac(ip) if self.kind == SUBNET else kavlan_mac(ip)

    def pairs(self) -> Iterator[tuple[str, str]]:
        """Every (IP, MAC) of the range, block by block, without network, broadcast and gateway."""
        for block in self.blocks:
            for address in ipaddress.IPv4Network(block, strict=False).hosts():
                ip = str(address)
                if ip != self.gateway and ip not in self.reserved:
                    yield ip, self.mac_for(ip)

    @property
    def size(self) -> int:
        total = sum(max(0, ipaddress.IPv4Network(b, strict=False).num_addresses - 2) for b in self.blocks)
        for ip in {self.gateway, *self.reserved} - {None}:
            if any(self._inside(str(ip), block) for block in self.blocks):
                total -= 1
        return total

    @staticmethod
    def _inside(ip: str, block: str) -> bool:
        network = ipaddress.IPv4Network(block, strict=False)
        address = ipaddress.IPv4Address(ip)
        return address in network and address not in (network.network_address, network.broadcast_address)

    def holds(self, ip: str) -> bool:
        """True when `ip` is an address of the range's blocks (reserved ones too; never the gateway)."""
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            return False
        return ip != self.gateway and any(self._inside(ip, block) for block in self.blocks)

    def valid(self, ip: str | None, mac: str | None) -> bool:
        """True when (ip, mac) is one of the VMs' pairs of this range (MAC compared case-insensitively)."""
        return (ip is not None and ip not in self.reserved and self.holds(ip)
                and same_mac(mac, self.mac_for(ip)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "sites": list(self.sites), "blocks": list(self.blocks),
                "network": self.network, "netmask": self.netmask, "gateway": self.gateway,
                "broadcast": self.broadcast, "vlan": self.vlan, "dhcp": self.dhcp,
                "reserved": list(self.reserved)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AddressRange:
        return cls(str(data["kind"]), tuple(data.get("sites") or ()), tuple(data.get("blocks") or ()),
                   str(data["network"]), data.get("gateway"), data.get("vlan"),
                   str(data.get("dhcp", "grid5000")), tuple(data.get("reserved") or ()))


def subnet_range(site: str, cidrs: Sequence[str], virt_ip_range: str | None,
                 gateway: str | None) -> AddressRange:
    """The range of a job's subnets on `site` (VMs on the site's /14, Grid'5000's MACs and DHCP)."""
    blocks = tuple(sorted(cidrs, key=lambda c: ipaddress.IPv4Network(c, strict=False)))
    network = virt_ip_range or (blocks[0] if blocks else "0.0.0.0/32")
    return AddressRange(SUBNET, (site,), blocks, network, gateway, None, "grid5000")


def kavlan_range(vlan: str, owner: SiteNetwork, sites: Sequence[str],
                 node_ips: Iterable[str] = ()) -> AddressRange:
    """The range of KaVLAN `vlan` (owned by `owner`) for the hosts of `sites` (see the module docstring).

    >>> net = SiteNetwork("rennes", kavlans={"4": ("10.24.0.0/22", "10.24.3.254")},
    ...                   node_ips={"4": frozenset({"10.24.1.7"})})
    >>> kavlan_range("4", net, ["rennes"]).blocks
    ('10.24.2.0/24',)
    """
    if vlan not in owner.kavlans:
        raise DeploymentError(f"site {owner.site} does not describe KaVLAN {vlan} (no network in the "
                              "reference API)")
    network_text, gateway = owner.kavlans[vlan]
    network = ipaddress.IPv4Network(network_text, strict=False)
    used = (*owner.node_ips.get(vlan, ()), *node_ips)
    taken = {ipaddress.IPv4Network(f"{ip}/24", strict=False) for ip in used}
    if gateway:
        taken.add(ipaddress.IPv4Network(f"{gateway}/24", strict=False))
    blocks = list(network.subnets(new_prefix=24)) if network.prefixlen <= 24 else [network]
    if len(blocks) > 2:
        blocks = blocks[1:]  # the first /24 often holds the vlan's own services
    free = tuple(str(block) for block in blocks if block not in taken)
    return AddressRange(KAVLAN, tuple(sites), free, str(network), gateway or None, vlan, "vm5k")


@dataclass(frozen=True)
class AddressPool:
    """The ranges of a run: one per site for subnets, one shared by every site for a vlan."""

    ranges: tuple[AddressRange, ...] = ()

    def range_for(self, site: str) -> AddressRange | None:
        return next((r for r in self.ranges if site in r.sites), None)

    def to_dict(self) -> dict[str, Any]:
        return {"ranges": [r.to_dict() for r in self.ranges]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AddressPool:
        return cls(tuple(AddressRange.from_dict(r) for r in (data or {}).get("ranges") or ()))


def with_service_address(pool: AddressPool, current: str | None = None) -> tuple[AddressPool, str | None]:
    """The pool with one address kept for the run's DNS/DHCP server (``meta["service_address"]``).

    It is `current` when that still belongs to a range, else the last usable address of the first range's
    last block (the end of the range: the last one VMs would get). Returns the new pool and the address.

    >>> pool, address = with_service_address(AddressPool((subnet_range("rennes", ["10.156.4.0/22"],
    ...                                                                 "10.156.0.0/14", None),)))
    >>> address, pool.ranges[0].reserved, pool.ranges[0].valid(address, grid5000_mac(address))
    ('10.156.7.254', ('10.156.7.254',), False)
    """
    if not pool.ranges:
        return pool, None
    ranges = list(pool.ranges)
    for index, rng in enumerate(ranges):
        if current is not None and current in rng.reserved:
            return pool, current
        if current is not None and rng.holds(current):
            ranges[index] = replace(rng, reserved=(*rng.reserved, current))
            return AddressPool(tuple(ranges)), current
    first = ranges[0]
    for block in reversed(first.blocks):
        network = ipaddress.IPv4Network(block, strict=False)
        for candidate in (network.broadcast_address - 1, network.broadcast_address - 2):
            address = str(candidate)
            if first.holds(address):
                ranges[0] = replace(first, reserved=(*first.reserved, address))
                return AddressPool(tuple(ranges)), address
    return pool, None


def assign(topology: Topology, pool: AddressPool) -> int:
    """Give every placed VM an (IP, MAC) from its host's site's range; returns how many changed.

    VMs keep a pair that is still valid for their site and held by no one else (VMs in natural id order
    win); the others get the first free pairs. Unplaced VMs are left as they are. DeploymentError when a
    site has no range or too few addresses.

    >>> from vm5k.topology import VM, Host
    >>> topo = Topology()
    >>> _ = topo.add_host("rennes", "paradoxe", Host("paradoxe-1.rennes.grid5000.fr"))
    >>> topo.place(VM("vm-1"), "paradoxe-1.rennes.grid5000.fr")
    >>> pool = AddressPool((subnet_range("rennes", ["10.156.4.0/22"], "10.156.0.0/14", None),))
    >>> assign(topology=topo, pool=pool), topo.vm("vm-1").ip, topo.vm("vm-1").mac
    (1, '10.156.4.1', '00:16:3E:9C:04:01')
    """
    by_range: dict[int, list[Any]] = {}
    for site, _cluster, host in topology.locations():
        if not host.vms:
            continue
        chosen = pool.range_for(site.id)
        if chosen is None:
            raise DeploymentError(f"no address range for the VMs of site {site.id}")
        by_range.setdefault(pool.ranges.index(chosen), []).extend(host.vms)
    changed = 0
    for index, vms in by_range.items():
        rng = pool.ranges[index]
        vms.sort(key=lambda vm: natural_key(vm.id))
        held: set[str] = set()
        waiting = []
        for vm in vms:
            if rng.valid(vm.ip, vm.mac) and vm.ip not in held:
                held.add(vm.ip)
            else:
                waiting.append(vm)
        if not waiting:
            continue
        pairs = (pair for pair in rng.pairs() if pair[0] not in held)
        for vm in waiting:
            pair = next(pairs, None)
            if pair is None:
                sites = ", ".join(rng.sites)
                blocks = ", ".join(rng.blocks) or "no block"
                raise DeploymentError(f"the addresses of {sites} ({rng.size} in {blocks}) are too few for "
                                      f"its {len(vms)} VMs")
            vm.ip, vm.mac = pair
            changed += 1
    return changed


__all__ = ["GRID5000_MAC_PREFIX", "KAVLAN", "KAVLAN_MAC_PREFIX", "SUBNET", "AddressPool", "AddressRange",
           "SiteNetwork", "assign", "grid5000_mac", "is_grid5000_mac", "kavlan_mac", "kavlan_range",
           "same_mac", "subnet_range", "with_service_address"]
