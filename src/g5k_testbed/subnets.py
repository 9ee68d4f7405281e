"""Grid'5000 subnets (g5k-subnets): /22 blocks carved from a site's `virt_ip_range`, and their IP/MAC pairs.

A site has a /14 for VMs; its first three /16s are reservable, in /22 units (192 per site); a `slash_16`
request takes the 64 /22s of one /16. Every VM address has a MAC that Grid'5000's DHCP already knows:
`00:16:3E:` + the 2nd, 3rd and 4th octets in upper-case hex.

>>> site_slash22s("10.156.0.0/14")[:2]
['10.156.0.0/22', '10.156.4.0/22']
>>> ip_mac_pairs("10.132.8.0/22")[0]
('10.132.8.1', '00:16:3E:84:08:01')
"""

from __future__ import annotations

import ipaddress

MAC_PREFIX = "00:16:3E"
RESERVABLE_SLASH16 = 3


def site_slash22s(virt_ip_range: str) -> list[str]:
    """The reservable /22 CIDRs of a site, in address order."""
    network = ipaddress.IPv4Network(virt_ip_range, strict=False)
    slash16s = (
        list(network.subnets(new_prefix=16))[:RESERVABLE_SLASH16] if network.prefixlen <= 16 else [network]
    )
    return [str(block) for s16 in slash16s for block in s16.subnets(new_prefix=22)]


def slash16_of(cidr: str) -> str:
    """The /16 a /22 belongs to (a `slash_16` request takes all 64 /22s of one)."""
    return str(ipaddress.IPv4Network(cidr).supernet(new_prefix=16))


def mac_for_ip(ip: str) -> str:
    """Grid'5000's rule: `00:16:3E:` + hex of octets 2-4 (upper case)."""
    octets = ipaddress.IPv4Address(ip).packed
    return f"{MAC_PREFIX}:{octets[1]:02X}:{octets[2]:02X}:{octets[3]:02X}"


def ip_mac_pairs(cidr: str) -> list[tuple[str, str]]:
    """The (IP, MAC) pairs of one reserved subnet, as `g5k-subnets -im` prints them.

    Every address of the block but its network and broadcast addresses (1022 for a /22).
    """
    return [(str(ip), mac_for_ip(str(ip))) for ip in ipaddress.IPv4Network(cidr).hosts()]


def subnet_parameters(virt_ip_range: str, gateway: str) -> dict[str, str]:
    """Network parameters shared by every subnet of a site (the /14's netmask, broadcast and gateway)."""
    network = ipaddress.IPv4Network(virt_ip_range, strict=False)
    return {"netmask": str(network.netmask), "broadcast": str(network.broadcast_address), "gateway": gateway}
