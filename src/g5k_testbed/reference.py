"""The vendored Grid'5000 reference data (sites, clusters, nodes, network equipments, environments).

The documents are served as they are (the server only wraps them with `version` and `links`); this
module also derives the few facts the schedulers need (a node's FQDN, cluster, core count, interfaces)
once, at load time, so that no request walks the raw documents.
"""

from __future__ import annotations

import functools
import json
import lzma
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

#: The reference-repository commit the data comes from (see data/README.md); served as `version`.
REFERENCE_VERSION = "dfa1d4da9d1a0af0d819d187bb2d3309d2ba3500"
DOMAIN = "grid5000.fr"


def load_data_file(name: str) -> Any:
    """Decode one vendored `data/<name>.json.xz` file."""
    raw = resources.files("g5k_testbed").joinpath("data", f"{name}.json.xz").read_bytes()
    return json.loads(lzma.decompress(raw))


def natural_key(text: str) -> list[Any]:
    """`gros-2` before `gros-10`: the order OAR and the snapshot use for nodes."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


@dataclass(frozen=True)
class NodeInfo:
    """What the schedulers need to know about one node, derived from its reference document."""

    uid: str
    site: str
    cluster: str
    fqdn: str
    cores: int
    queues: tuple[str, ...]
    kavlan: bool
    addresses: tuple[str, ...]  # every network_address of the node (primary first, then -ethX, -bmc)
    doc: dict[str, Any] = field(repr=False, compare=False, hash=False)


@dataclass
class SiteData:
    """One site: its document, its clusters and nodes (natural order), and its network equipments."""

    uid: str
    doc: dict[str, Any]
    clusters: dict[str, dict[str, Any]]
    nodes: dict[str, list[dict[str, Any]]]
    network_equipments: list[dict[str, Any]]
    node_info: dict[str, NodeInfo]  # by FQDN, natural order

    @property
    def global_vlan(self) -> str | None:
        value = (self.doc.get("ipv6") or {}).get("site_global_kavlan")
        return str(value) if value is not None else None


class Reference:
    """The reference data of the sites the testbed serves.

    >>> ref = Reference.load(["rennes"])
    >>> ref.sites["rennes"].node_info["paradoxe-1.rennes.grid5000.fr"].cores
    52
    """

    def __init__(
        self, sites: dict[str, SiteData], backbone: list[dict[str, Any]], environments: list[dict[str, Any]]
    ) -> None:
        self.sites = sites
        self.backbone = backbone
        self.environments = environments
        self.nodes_by_fqdn: dict[str, NodeInfo] = {}
        self.address_owner: dict[str, NodeInfo] = {}
        for site in sites.values():
            for info in site.node_info.values():
                self.nodes_by_fqdn[info.fqdn] = info
                for address in info.addresses:
                    self.address_owner[address] = info

    @staticmethod
    def available_sites() -> list[str]:
        return sorted(doc["uid"] for doc in load_data_file("sites"))

    @classmethod
    def load(cls, sites: list[str] | None = None) -> Reference:
        """Load the given sites (all of them when `sites` is None); unknown names raise ValueError.

        The data is read-only, so loads are cached: a second testbed in the same process starts at once.
        """
        return _load_cached(None if sites is None else tuple(sorted(set(sites))))

    @classmethod
    def _load(cls, sites: tuple[str, ...] | None) -> Reference:
        site_docs = {doc["uid"]: doc for doc in load_data_file("sites")}
        wanted = sorted(site_docs) if sites is None else list(dict.fromkeys(sites))
        unknown = [name for name in wanted if name not in site_docs]
        if unknown:
            raise ValueError(f"unknown site(s): {', '.join(unknown)} (known: {', '.join(sorted(site_docs))})")
        equipments = load_data_file("network_equipments")
        loaded: dict[str, SiteData] = {}
        for name in sorted(wanted):
            bundle = load_data_file(name)
            clusters = {c["uid"]: c for c in sorted(bundle["clusters"], key=lambda c: natural_key(c["uid"]))}
            nodes = {
                c: sorted(bundle["nodes"].get(c, []), key=lambda n: natural_key(n["uid"])) for c in clusters
            }
            infos: dict[str, NodeInfo] = {}
            for cluster_uid, docs in nodes.items():
                cluster = clusters[cluster_uid]
                for doc in docs:
                    info = node_info(name, cluster, doc)
                    infos[info.fqdn] = info
            loaded[name] = SiteData(
                name, site_docs[name], clusters, nodes, equipments["sites"].get(name, []), infos
            )
        return cls(loaded, equipments["grid"], load_data_file("environments"))


@functools.lru_cache(maxsize=8)
def _load_cached(sites: tuple[str, ...] | None) -> Reference:
    return Reference._load(sites)


def node_info(site: str, cluster: dict[str, Any], doc: dict[str, Any]) -> NodeInfo:
    """The schedulers' facts about one node of `cluster` on `site` (also used for synthetic nodes)."""
    fqdn = f"{doc['uid']}.{site}.{DOMAIN}"
    addresses = [fqdn]
    for adapter in doc.get("network_adapters", []):
        address = adapter.get("network_address")
        if address and address not in addresses:
            addresses.append(address)
    queues = tuple(
        doc.get("supported_job_types", {}).get("queues") or cluster.get("queues") or ["admin", "default"]
    )
    return NodeInfo(
        uid=doc["uid"],
        site=site,
        cluster=cluster["uid"],
        fqdn=fqdn,
        cores=int(doc.get("architecture", {}).get("nb_cores") or 1),
        queues=queues,
        kavlan=bool(cluster.get("kavlan")),
        addresses=tuple(addresses),
        doc=doc,
    )
