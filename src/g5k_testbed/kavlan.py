"""KaVLAN: the vlans of each site and which vlan every node interface is plugged into.

Ids follow Grid'5000: 1-3 `kavlan-local`, 4-9 `kavlan` (routed), one `kavlan-global` per site (its
`ipv6.site_global_kavlan`, 11-22), and `DEFAULT`, the production network. A site's listing also shows the
other sites' global vlans as `kavlan-global-remote`. Only interfaces outside DEFAULT are stored.
"""

from __future__ import annotations

from typing import Any

from g5k_testbed.reference import Reference

DEFAULT = "DEFAULT"


def vlan_kind(vid: int, site_global: str | None) -> str | None:
    if 1 <= vid <= 3:
        return "kavlan-local"
    if 4 <= vid <= 9:
        return "kavlan"
    if site_global is not None and str(vid) == site_global:
        return "kavlan-global"
    return None


def kavlan_hostname(fqdn: str, vid: str) -> str:
    """`paravance-1.rennes.grid5000.fr` in vlan 4 is `paravance-1-kavlan-4.rennes.grid5000.fr`."""
    host, _, domain = fqdn.partition(".")
    return f"{host}-kavlan-{vid}.{domain}"


class Kavlan:
    def __init__(self, reference: Reference) -> None:
        self.reference = reference
        self.site_vlans: dict[str, dict[str, str]] = {}  # site -> {id: kind}, own vlans only
        self.global_owner: dict[str, str] = {}  # global vlan id -> owning site
        for uid, site in reference.sites.items():
            own: dict[str, str] = {}
            for key in sorted((k for k in site.doc.get("kavlans", {}) if k.isdigit()), key=int):
                kind = vlan_kind(int(key), site.global_vlan)
                if kind:
                    own[key] = kind
            self.site_vlans[uid] = own
            if site.global_vlan and site.global_vlan in own:
                self.global_owner[site.global_vlan] = uid
        self.node_vlan: dict[str, str] = {}  # network address -> vlan id (absent = DEFAULT)

    def listing(self, site: str) -> list[tuple[str, str]]:
        """(id, type) of every vlan visible from `site`, in Kavlan's order."""
        out = [(DEFAULT, "NULL")]
        out.extend(self.site_vlans.get(site, {}).items())
        for vid, owner in sorted(self.global_owner.items(), key=lambda kv: int(kv[0])):
            if owner != site:
                out.append((vid, "kavlan-global-remote"))
        return out

    def kind(self, site: str, vid: str) -> str | None:
        return dict(self.listing(site)).get(vid)

    def owner_site(self, site: str, vid: str) -> str:
        """The site whose OAR holds this vlan (another site for a remote global vlan)."""
        return self.global_owner.get(vid, site)

    def vlan_of(self, address: str) -> str:
        return self.node_vlan.get(address, DEFAULT)

    def site_addresses(self, site: str) -> list[str]:
        """Every interface name Kavlan knows on the site (primary, -ethX, -bmc), natural order."""
        data = self.reference.sites.get(site)
        return [a for info in data.node_info.values() for a in info.addresses] if data else []

    def nodes_in(self, site: str, vid: str) -> list[str]:
        return [a for a in self.site_addresses(site) if self.vlan_of(a) == vid]

    def known(self, site: str, address: str) -> bool:
        info = self.reference.address_owner.get(address)
        return info is not None and info.site == site

    def movable(self, address: str) -> bool:
        info = self.reference.address_owner.get(address)
        return info is not None and info.kavlan and "-bmc." not in address

    def set(self, address: str, vid: str) -> bool:
        """Plug an interface; False when it already was there."""
        if self.vlan_of(address) == vid:
            return False
        if vid == DEFAULT:
            self.node_vlan.pop(address, None)
        else:
            self.node_vlan[address] = vid
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"node_vlan": dict(self.node_vlan)}

    def load(self, data: dict[str, Any]) -> None:
        self.node_vlan = {
            a: v for a, v in data.get("node_vlan", {}).items() if a in self.reference.address_owner
        }
