"""Reference API: the grid, sites, clusters, nodes and network equipments, with g5k-api's links (§3).

Documents are served unchanged, wrapped with `version` and `links`; collections list items in file-name
(lexicographic) order; `?deep=true` returns the tree below a resource, with links only at the top.
"""

from __future__ import annotations

from typing import Any

from g5k_testbed.http_types import Reply, Request
from g5k_testbed.reference import REFERENCE_VERSION, SiteData
from g5k_testbed.reference_synthetic import site_pdus, site_servers
from g5k_testbed.testbed import ApiError, Testbed
from g5k_testbed.views import COLLECTION, ITEM, collection, link

DEFAULT_QUEUE_FILTER = ("admin", "default")
VERSION_DATE = 1774255045  # 2026-03-23T09:37:25+01:00, the data commit (see data/README.md)


def _not_found(path: str) -> ApiError:
    return ApiError(404, f"Cannot find resource {path}")


def _site(tb: Testbed, req: Request) -> SiteData:
    site = tb.reference.sites.get(req.params["site"])
    if site is None:
        raise _not_found(req.path)
    return site


def _with(doc: dict[str, Any], links: list[dict[str, str]]) -> dict[str, Any]:
    return {**doc, "version": REFERENCE_VERSION, "links": links}


def _versioned_links(href: str) -> list[dict[str, str]]:
    return [
        link("version", f"{href}/versions/{REFERENCE_VERSION}"),
        link("versions", f"{href}/versions", COLLECTION),
    ]


def _cluster_queues(cluster: dict[str, Any]) -> list[str]:
    return cluster.get("queues") or ["admin", "default"]


def _queue_filter(req: Request) -> set[str]:
    wanted = req.query.get("queues")
    if not wanted:
        return set(DEFAULT_QUEUE_FILTER)
    if wanted == "all":
        return {"admin", "default", "production"}
    return {q.strip() for q in wanted.split(",") if q.strip()}


# ---------------------------------------------------------------------------------------------- items
def site_item(p: str, site: SiteData) -> dict[str, Any]:
    href = f"{p}/sites/{site.uid}"
    links = []
    if site.clusters:
        links.append(link("clusters", f"{href}/clusters", COLLECTION))
    if site.network_equipments:
        links.append(link("network_equipments", f"{href}/network_equipments", COLLECTION))
    links += [link(rel, f"{href}/{rel}", COLLECTION) for rel in ("pdus", "servers")]
    links += [link("self", href), link("parent", f"{p}/"), *_versioned_links(href)]
    links += [
        link(rel, f"{href}/{rel}", COLLECTION) for rel in ("jobs", "environments", "deployments", "vlans")
    ]
    links.append(link("status", f"{href}/status"))
    return _with(site.doc, links)


def cluster_item(p: str, site: SiteData, cluster: dict[str, Any]) -> dict[str, Any]:
    href = f"{p}/sites/{site.uid}/clusters/{cluster['uid']}"
    links = [
        link("nodes", f"{href}/nodes", COLLECTION),
        link("self", href),
        link("parent", f"{p}/sites/{site.uid}"),
        *_versioned_links(href),
        link("status", f"{href}/status"),
    ]
    return _with(cluster, links)


def node_item(p: str, site: SiteData, cluster: str, node: dict[str, Any]) -> dict[str, Any]:
    href = f"{p}/sites/{site.uid}/clusters/{cluster}/nodes/{node['uid']}"
    return _with(
        node,
        [
            link("self", href),
            link("parent", f"{p}/sites/{site.uid}/clusters/{cluster}"),
            *_versioned_links(href),
        ],
    )


def equipment_item(p: str, parent: str, equipment: dict[str, Any]) -> dict[str, Any]:
    href = f"{parent}/network_equipments/{equipment['uid']}"
    return _with(
        equipment,
        [link("self", f"{p}{href}"), link("parent", f"{p}{parent or '/'}"), *_versioned_links(f"{p}{href}")],
    )


def _by_uid(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda d: str(d["uid"]))


# ---------------------------------------------------------------------------------------------- deep
def deep_cluster(site: SiteData, cluster_uid: str) -> dict[str, Any]:
    return {**site.clusters[cluster_uid], "nodes": _by_uid(site.nodes[cluster_uid])}


def deep_site(site: SiteData) -> dict[str, Any]:
    out = dict(site.doc)
    out["clusters"] = {c: deep_cluster(site, c) for c in sorted(site.clusters)}
    if site.network_equipments:
        out["network_equipments"] = _by_uid(site.network_equipments)
    return out


def _deep_reply(items: dict[str, Any], self_href: str, parent: str | None) -> Reply:
    return Reply(
        body=collection(items, self_href, parent, total=len(items), version=REFERENCE_VERSION),
        cache=True,
    )


# ---------------------------------------------------------------------------------------------- handlers
def root(tb: Testbed, req: Request) -> Reply:
    p = req.prefix
    if req.flag("deep", False):
        items = {
            "uid": "grid5000",
            "type": "grid",
            "sites": {uid: deep_site(site) for uid, site in tb.reference.sites.items()},
            "network_equipments": _by_uid(tb.reference.backbone),
        }
        return _deep_reply(items, f"{p}/", None)
    body = {
        "type": "grid",
        "uid": "grid5000",
        "version": REFERENCE_VERSION,
        "timestamp": tb.now(),
        "links": [
            link("sites", f"{p}/sites", COLLECTION),
            link("network_equipments", f"{p}/network_equipments", COLLECTION),
            link("self", f"{p}/"),
            *_versioned_links(p),
        ],
    }
    return Reply(body=body, cache=True)


def sites(tb: Testbed, req: Request) -> Reply:
    p = req.prefix
    if req.flag("deep", False):
        return _deep_reply(
            {uid: deep_site(s) for uid, s in tb.reference.sites.items()}, f"{p}/sites", f"{p}/"
        )
    items = [site_item(p, s) for s in tb.reference.sites.values()]
    return Reply(body=collection(items, f"{p}/sites", f"{p}/", version=REFERENCE_VERSION), cache=True)


def site(tb: Testbed, req: Request) -> Reply:
    data = _site(tb, req)
    p = req.prefix
    if req.flag("deep", False):
        tree = deep_site(data)
        job_id = req.query.get("job_id")
        if job_id:
            job = tb.find_job(data.uid, int(job_id)) if job_id.isdigit() else None
            if job is None:
                raise ApiError(404, f"Couldn't find OAR::Job with 'job_id'={job_id}")
            wanted = {fqdn.split(".")[0] for fqdn in job.nodes}
            for cluster in tree["clusters"].values():
                cluster["nodes"] = [n for n in cluster["nodes"] if n["uid"] in wanted]
            tree["clusters"] = {c: v for c, v in tree["clusters"].items() if v["nodes"]}
        return _deep_reply(tree, f"{p}/sites/{data.uid}", f"{p}/sites")
    return Reply(body=site_item(p, data), cache=True)


def clusters(tb: Testbed, req: Request) -> Reply:
    data = _site(tb, req)
    wanted = _queue_filter(req)
    items = [
        cluster_item(req.prefix, data, c)
        for uid, c in sorted(data.clusters.items())
        if wanted & set(_cluster_queues(c))
    ]
    return Reply(
        body=collection(
            items,
            f"{req.prefix}/sites/{data.uid}/clusters",
            f"{req.prefix}/sites/{data.uid}",
            version=REFERENCE_VERSION,
        ),
        cache=True,
    )


def _cluster(tb: Testbed, req: Request) -> tuple[SiteData, dict[str, Any]]:
    data = _site(tb, req)
    cluster = data.clusters.get(req.params["cluster"])
    if cluster is None or not (_queue_filter(req) & set(_cluster_queues(cluster))):
        raise _not_found(f"/sites/{data.uid}/clusters/{req.params['cluster']}")
    return data, cluster


def cluster(tb: Testbed, req: Request) -> Reply:
    data, doc = _cluster(tb, req)
    href = f"{req.prefix}/sites/{data.uid}/clusters/{doc['uid']}"
    if req.flag("deep", False):
        return _deep_reply(deep_cluster(data, doc["uid"]), href, f"{req.prefix}/sites/{data.uid}")
    return Reply(body=cluster_item(req.prefix, data, doc), cache=True)


def nodes(tb: Testbed, req: Request) -> Reply:
    data, doc = _cluster(tb, req)
    href = f"{req.prefix}/sites/{data.uid}/clusters/{doc['uid']}"
    items = [node_item(req.prefix, data, doc["uid"], n) for n in _by_uid(data.nodes[doc["uid"]])]
    return Reply(body=collection(items, f"{href}/nodes", href, version=REFERENCE_VERSION), cache=True)


def node(tb: Testbed, req: Request) -> Reply:
    data, doc = _cluster(tb, req)
    for n in data.nodes[doc["uid"]]:
        if n["uid"] == req.params["node"]:
            return Reply(body=node_item(req.prefix, data, doc["uid"], n), cache=True)
    raise _not_found(req.path)


def grid_equipments(tb: Testbed, req: Request) -> Reply:
    items = [equipment_item(req.prefix, "", e) for e in _by_uid(tb.reference.backbone)]
    return Reply(
        body=collection(
            items, f"{req.prefix}/network_equipments", f"{req.prefix}/", version=REFERENCE_VERSION
        ),
        cache=True,
    )


def grid_equipment(tb: Testbed, req: Request) -> Reply:
    for e in tb.reference.backbone:
        if e["uid"] == req.params["equipment"]:
            return Reply(body=equipment_item(req.prefix, "", e), cache=True)
    raise _not_found(req.path)


def site_equipments(tb: Testbed, req: Request) -> Reply:
    data = _site(tb, req)
    parent = f"/sites/{data.uid}"
    items = [equipment_item(req.prefix, parent, e) for e in _by_uid(data.network_equipments)]
    return Reply(
        body=collection(
            items,
            f"{req.prefix}{parent}/network_equipments",
            f"{req.prefix}{parent}",
            version=REFERENCE_VERSION,
        ),
        cache=True,
    )


def site_equipment(tb: Testbed, req: Request) -> Reply:
    data = _site(tb, req)
    for e in data.network_equipments:
        if e["uid"] == req.params["equipment"]:
            return Reply(body=equipment_item(req.prefix, f"/sites/{data.uid}", e), cache=True)
    raise _not_found(req.path)


# ---------------------------------------------------------------------------------------------- servers, pdus
def _site_items(kind: str):  # type: ignore[no-untyped-def]
    """The collection and item handlers of a site's synthetic `servers` or `pdus` (reference_synthetic)."""
    make = {"servers": site_servers, "pdus": site_pdus}[kind]

    def listing(tb: Testbed, req: Request) -> Reply:
        data = _site(tb, req)
        parent = f"/sites/{data.uid}"
        items = [equipment_like(req.prefix, parent, kind, d) for d in make(data)]
        return Reply(body=collection(items, f"{req.prefix}{parent}/{kind}", f"{req.prefix}{parent}",
                                     version=REFERENCE_VERSION), cache=True)

    def item(tb: Testbed, req: Request) -> Reply:
        data = _site(tb, req)
        for doc in make(data):
            if doc["uid"] == req.params["uid"]:
                return Reply(body=equipment_like(req.prefix, f"/sites/{data.uid}", kind, doc), cache=True)
        raise _not_found(req.path)

    return listing, item


def equipment_like(p: str, parent: str, kind: str, doc: dict[str, Any]) -> dict[str, Any]:
    href = f"{parent}/{kind}/{doc['uid']}"
    links = [link("self", f"{p}{href}"), link("parent", f"{p}{parent}"), *_versioned_links(f"{p}{href}")]
    return _with(doc, links)


site_servers_list, site_server = _site_items("servers")
site_pdus_list, site_pdu = _site_items("pdus")


# ---------------------------------------------------------------------------------------------- versions
def _check_owner(tb: Testbed, req: Request) -> str:
    """The resource path a /versions request is about (404 when that resource does not exist)."""
    path = req.path.split("/versions")[0]
    if "site" in req.params:
        _site(tb, req)
    if "cluster" in req.params:
        data, doc = _cluster(tb, req)
        if "node" in req.params and not any(n["uid"] == req.params["node"] for n in data.nodes[doc["uid"]]):
            raise _not_found(path)
    return path


def _version_item(p: str, owner: str) -> dict[str, Any]:
    href = f"{p}{owner}/versions/{REFERENCE_VERSION}"
    return {
        "uid": REFERENCE_VERSION,
        "type": "version",
        "date": VERSION_DATE,
        "message": "Vendored Grid'5000 reference data (see g5k_testbed/data/README.md)",
        "author": "Grid'5000 reference repository",
        "links": [link("self", href), link("parent", f"{p}{owner or '/'}")],
    }


def versions(tb: Testbed, req: Request) -> Reply:
    owner = _check_owner(tb, req)
    return Reply(
        body=collection(
            [_version_item(req.prefix, owner)], f"{req.prefix}{owner}/versions", f"{req.prefix}{owner or '/'}"
        ),
        cache=True,
    )


def version(tb: Testbed, req: Request) -> Reply:
    owner = _check_owner(tb, req)
    if req.params["version"] != REFERENCE_VERSION:
        raise _not_found(req.path)
    return Reply(body=_version_item(req.prefix, owner), cache=True)


__all__ = ["ITEM"]
