"""What a run asks for (`Demand`) and what the planner answers (`Plan`: a start and per-site OAR requests).

Part of the pure planner (see ``vm5k.platforms.grid5000.planning``): no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from vm5k.placement import PlacementPolicy
from vm5k.platforms.grid5000.planning.common import MAX_SLASH22, SLASH22_PER_SLASH16, VMS_PER_SLASH22
from vm5k.request import GRID5000, Element, format_walltime
from vm5k.topology import VM, Capacity, Host, natural_key

# ---------------------------------------------------------------------------------------------------
# demand and plan


@dataclass(frozen=True)
class Demand:
    """What to plan for.

    elements: ``-r`` (with or without counts); ignored for hosts named in `hosts`.
    hosts: hosts named by a topology file (FQDN or short name): each must be free at the start.
    vms: the VMs that still need a host; `assigned` the VMs already on named hosts (host → VMs).
    kavlan: a KaVLAN instead of subnets. queue: the OAR queue. not_before: earliest start (epoch).
    placement: the run's policy, so that sizing checks the placement the run will make.
    """

    elements: tuple[Element, ...] = (Element(GRID5000),)
    hosts: tuple[str, ...] = ()
    blacklist: tuple[str, ...] = ()
    walltime: int = 3600
    vms: tuple[VM, ...] = ()
    assigned: Mapping[str, tuple[VM, ...]] = field(default_factory=dict)
    placement: PlacementPolicy = field(default_factory=PlacementPolicy)
    kavlan: bool = False
    queue: str = "default"
    not_before: int | None = None

    @property
    def vm_count(self) -> int:
        return len(self.vms) + sum(len(vms) for vms in self.assigned.values())


@dataclass
class SitePlan:
    """What one site's OAR job asks for, and the nodes expected (free at the start, in OAR's order)."""

    site: str
    clusters: dict[str, int] = field(default_factory=dict)
    hosts: tuple[str, ...] = ()
    excluded: dict[str, tuple[str, ...]] = field(default_factory=dict)
    subnets: tuple[int, int] | None = None  # (22 or 16, count)
    vlan: str | None = None  # kavlan kind
    exotic: bool = False
    predicted: tuple[str, ...] = ()

    @property
    def node_count(self) -> int:
        return len(self.hosts) + sum(self.clusters.values())

    def resources(self, walltime: int) -> str:
        """The OAR resource string (``oarsub -l``), walltime included.

        >>> SitePlan("lyon", {"taurus": 2}, excluded={"taurus": ("taurus-3.lyon.grid5000.fr",)},
        ...          vlan="kavlan").resources(5400).split("+")  # doctest: +NORMALIZE_WHITESPACE
        ["{cluster='taurus' and host not in ('taurus-3.lyon.grid5000.fr')}/nodes=2",
         "{type='kavlan'}/vlan=1,walltime=1:30:00"]
        """
        parts = []
        if self.hosts:
            names = ", ".join(f"'{host}'" for host in self.hosts)
            parts.append(f"{{network_address in ({names})}}/nodes={len(self.hosts)}")
        for cluster, count in self.clusters.items():
            condition = f"cluster='{cluster}'"
            excluded = self.excluded.get(cluster)
            if excluded:
                condition += " and host not in (" + ", ".join(f"'{host}'" for host in excluded) + ")"
            parts.append(f"{{{condition}}}/nodes={count}")
        if self.subnets:
            prefix, count = self.subnets
            parts.append(f"slash_{prefix}={count}")
        if self.vlan:
            parts.append(f"{{type='{self.vlan}'}}/vlan=1")
        return "+".join(parts) + f",walltime={format_walltime(walltime)}"

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "clusters": dict(self.clusters), "hosts": list(self.hosts),
                "excluded": {c: list(h) for c, h in self.excluded.items()},
                "subnets": list(self.subnets) if self.subnets else None, "vlan": self.vlan,
                "exotic": self.exotic, "predicted": list(self.predicted)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SitePlan:
        subnets = data.get("subnets")
        return cls(str(data["site"]), {str(c): int(n) for c, n in (data.get("clusters") or {}).items()},
                   tuple(data.get("hosts") or ()),
                   {str(c): tuple(h) for c, h in (data.get("excluded") or {}).items()},
                   (int(subnets[0]), int(subnets[1])) if subnets else None, data.get("vlan"),
                   bool(data.get("exotic")), tuple(data.get("predicted") or ()))


@dataclass
class Plan:
    """The earliest slot: its start (epoch, server clock), the walltime, and one `SitePlan` per site.

    `capacities` is the capacity each cluster was counted at (its smallest eligible node).
    """

    now: int
    start: int
    walltime: int
    sites: dict[str, SitePlan]
    capacities: dict[str, Capacity] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.start + self.walltime

    def planned_hosts(self) -> list[Host]:
        """One host per reserved node at its counted capacity (what placement can rely on), in the order
        the run places VMs: sites in plan order, named hosts first, then clusters in natural order."""
        hosts: list[Host] = []
        for site in self.sites.values():
            hosts += [Host(fqdn, self.capacities.get(fqdn)) for fqdn in site.hosts]
            for cluster in sorted(site.clusters, key=natural_key):
                hosts += [Host(f"{cluster}-planned-{i}", self.capacities.get(cluster))
                          for i in range(site.clusters[cluster])]
        return hosts

    def to_dict(self) -> dict[str, Any]:
        return {"now": self.now, "start": self.start, "walltime": self.walltime,
                "sites": {name: site.to_dict() for name, site in self.sites.items()},
                "capacities": {name: {"ram": c.ram, "cores": c.cores, "threads": c.threads}
                               for name, c in self.capacities.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        return cls(int(data["now"]), int(data["start"]), int(data["walltime"]),
                   {str(n): SitePlan.from_dict(s) for n, s in (data.get("sites") or {}).items()},
                   {str(n): Capacity(int(c["ram"]), int(c["cores"]), c.get("threads"))
                    for n, c in (data.get("capacities") or {}).items()})


def subnets_for(vm_count: int) -> tuple[int, int]:
    """``(prefix, count)`` of the subnets that hold `vm_count` VMs: /22s, or /16s beyond 32 /22s.

    >>> subnets_for(100), subnets_for(1001), subnets_for(40_000)
    ((22, 1), (22, 2), (16, 1))
    """
    blocks = max(1, math.ceil(vm_count / VMS_PER_SLASH22))
    if blocks <= MAX_SLASH22:
        return 22, blocks
    return 16, math.ceil(blocks / SLASH22_PER_SLASH16)


def with_not_before(demand: Demand, epoch: int) -> Demand:
    """The same demand, starting no earlier than `epoch` (OAR's "could run at" answer)."""
    return replace(demand, not_before=max(epoch, demand.not_before or 0))
