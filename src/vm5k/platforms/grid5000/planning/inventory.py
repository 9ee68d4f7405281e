"""The hardware the planner chooses from: nodes with their capacity, grouped in clusters of sites.

Part of the pure planner (see ``vm5k.platforms.grid5000.planning``): no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vm5k.errors import UsageError
from vm5k.platforms.grid5000.planning.common import few
from vm5k.request import GRID5000
from vm5k.topology import Capacity, shown

# ---------------------------------------------------------------------------------------------------
# inventory: the reference hardware


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One node of the reference API: its FQDN, where it is, its hardware and what it supports.

    `virtual` is ``supported_job_types.virtual`` ("ivt", "amd-v", "arm64"), None when it is false.
    """

    fqdn: str
    site: str
    cluster: str
    capacity: Capacity
    virtual: str | None = "ivt"
    deploy: bool = True
    queues: tuple[str, ...] | None = None  # the node's own queues, when they differ from its cluster's

    @property
    def uid(self) -> str:
        return self.fqdn.split(".", 1)[0]

    @property
    def usable_for_vms(self) -> bool:
        return bool(self.virtual) and self.deploy and self.capacity.virtual


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster: its nodes (in natural order), the OAR queues it is in, and whether it is exotic."""

    name: str
    site: str
    nodes: tuple[NodeSpec, ...]
    queues: tuple[str, ...] = ("admin", "default")
    exotic: bool = False


class Inventory:
    """The reference hardware of the sites vm5k may use, indexed for name lookups.

    >>> inv = Inventory([ClusterSpec("taurus", "lyon", ())])
    >>> inv.resolve("lyon"), inv.resolve("taurus"), inv.resolve("grid5000")
    (('site', 'lyon'), ('cluster', 'taurus'), ('grid5000', 'grid5000'))
    """

    def __init__(self, clusters: Iterable[ClusterSpec], sites: Iterable[str] = ()) -> None:
        self.sites: dict[str, list[ClusterSpec]] = {site: [] for site in sites}
        self.clusters: dict[str, ClusterSpec] = {}
        self.nodes: dict[str, NodeSpec] = {}
        self._short: dict[str, str] = {}
        for cluster in clusters:
            self.sites.setdefault(cluster.site, []).append(cluster)
            self.clusters[cluster.name] = cluster
            for node in cluster.nodes:
                self.nodes[node.fqdn] = node
                self._short.setdefault(node.uid, node.fqdn)
                self._short.setdefault(f"{node.uid}.{node.site}", node.fqdn)

    def node(self, name: str) -> NodeSpec | None:
        """A node by FQDN, ``uid.site`` or short uid (``taurus-3``)."""
        fqdn = name if name in self.nodes else self._short.get(name)
        return self.nodes.get(fqdn) if fqdn else None

    def resolve(self, name: str) -> tuple[str, str]:
        """``(kind, canonical name)`` of a ``-r``/``-b`` element; UsageError when unknown."""
        if name == GRID5000:
            return "grid5000", name
        if name in self.sites:
            return "site", name
        if name in self.clusters:
            return "cluster", name
        node = self.node(name)
        if node is not None:
            return "host", node.fqdn
        raise UsageError(f"unknown Grid'5000 element {shown(name)}: not a site, cluster or host of "
                         f"{few(sorted(self.sites)) or 'the platform'}")
