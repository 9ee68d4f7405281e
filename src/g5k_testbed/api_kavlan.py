"""KaVLAN through g5k-api (§7): vlans, the nodes in them, and moving nodes between vlans."""

from __future__ import annotations

from typing import Any

from g5k_testbed.http_types import Reply, Request
from g5k_testbed.kavlan import DEFAULT
from g5k_testbed.testbed import ApiError, Testbed
from g5k_testbed.views import COLLECTION, collection, link

NO_PRIVILEGE = "Not enough privileges on Kavlan resources"


def _site(tb: Testbed, req: Request) -> str:
    site = req.params["site"]
    if site not in tb.oar:
        raise ApiError(404, f"Cannot find resource /sites/{site}")
    return site


def _vlan(tb: Testbed, req: Request, site: str) -> str:
    vid = req.params["vlan"]
    if tb.kavlan.kind(site, vid) is None:
        raise ApiError(404, f"Vlan {vid} does not exist")
    return vid


def _vlan_item(p: str, site: str, vid: str, kind: str) -> dict[str, Any]:
    href = f"{p}/sites/{site}/vlans/{vid}"
    return {
        "uid": vid,
        "type": kind,
        "links": [
            link("dhcpd", f"{href}/dhcpd"),
            link("nodes", f"{href}/nodes"),
            link("users", f"{href}/users", COLLECTION),
            link("self", href),
            link("parent", f"{p}/sites/{site}/vlans", COLLECTION),
        ],
    }


def _node_item(p: str, site: str, address: str, vid: str) -> dict[str, Any]:
    base = f"{p}/sites/{site}/vlans/nodes"
    return {
        "uid": address,
        "vlan": vid,
        "links": [link("self", f"{base}/{address}"), link("parent", base, COLLECTION)],
    }


def vlans(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    p = req.prefix
    items = [_vlan_item(p, site, vid, kind) for vid, kind in tb.kavlan.listing(site)]
    body = collection(items, f"{p}/sites/{site}/vlans", f"{p}/sites/{site}")
    body["links"].insert(0, link("nodes", f"{p}/sites/{site}/vlans/nodes", COLLECTION))
    body["links"].insert(1, link("users", f"{p}/sites/{site}/vlans/users", COLLECTION))
    return Reply(body=body)


def vlan(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    vid = _vlan(tb, req, site)
    return Reply(body=_vlan_item(req.prefix, site, vid, dict(tb.kavlan.listing(site))[vid]))


def vlan_nodes(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    vid = _vlan(tb, req, site)
    items = [_node_item(req.prefix, site, a, vid) for a in tb.kavlan.nodes_in(site, vid)]
    return Reply(
        body=collection(
            items, f"{req.prefix}/sites/{site}/vlans/{vid}/nodes", f"{req.prefix}/sites/{site}/vlans/{vid}"
        )
    )


def _address_list(req: Request) -> list[str]:
    if req.content_type != "application/json":
        raise ApiError(415, f"Content-Type '{req.headers.get('content-type', '')}' is not supported")
    data = req.json_body()
    if not isinstance(data, list) or not data or not all(isinstance(a, str) for a in data):
        raise ApiError(422, "Missing node list")
    return list(dict.fromkeys(data))


def move_nodes(tb: Testbed, req: Request) -> Reply:
    """POST /vlans/{id}/nodes: a JSON array of FQDNs; per-node success/unchanged/failure."""
    site = _site(tb, req)
    req.require_writer()
    vid = _vlan(tb, req, site)
    if vid == "DEFAULT":
        vid = DEFAULT
    addresses = _address_list(req)
    if vid != DEFAULT:
        holder = tb.vlan_holder(site, vid)
        if holder is None or holder.user != req.login:
            raise ApiError(403, NO_PRIVILEGE)
    mine = {fqdn for other in tb.oar for job in tb.running_jobs_of(other, req.login) for fqdn in job.nodes}
    result: dict[str, dict[str, str]] = {}
    for address in addresses:
        info = tb.reference.address_owner.get(address)
        if (
            info is None
            or not tb.kavlan.movable(address)
            or (vid != DEFAULT and tb.kavlan.kind(info.site, vid) is None)
        ):
            result[address] = {"status": "failure", "message": "Unknown node"}
        elif info.fqdn not in mine:
            result[address] = {"status": "failure", "message": f"Node not reserved by {req.login}"}
        elif tb.move(address, vid):
            result[address] = {"status": "success", "message": "Successfully added to vlan"}
        else:
            result[address] = {"status": "unchanged", "message": "Node already in vlan"}
    return Reply(body=result)


def all_nodes(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    items = [_node_item(req.prefix, site, a, tb.kavlan.vlan_of(a)) for a in tb.kavlan.site_addresses(site)]
    return Reply(
        body=collection(items, f"{req.prefix}/sites/{site}/vlans/nodes", f"{req.prefix}/sites/{site}/vlans")
    )


def query_nodes(tb: Testbed, req: Request) -> Reply:
    """POST /vlans/nodes: the vlan of each given node (unknown nodes left out)."""
    site = _site(tb, req)
    req.require_writer()
    addresses = _address_list(req)
    items = [
        _node_item(req.prefix, site, a, tb.kavlan.vlan_of(a)) for a in addresses if tb.kavlan.known(site, a)
    ]
    return Reply(
        body=collection(items, f"{req.prefix}/sites/{site}/vlans/nodes", f"{req.prefix}/sites/{site}/vlans")
    )


def node(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    address = req.params["node"]
    if not tb.kavlan.known(site, address):
        raise ApiError(404, f"Unknown node '{address}'.")
    return Reply(body=_node_item(req.prefix, site, address, tb.kavlan.vlan_of(address)))


def _user_vlans(tb: Testbed, site: str, user: str) -> list[str]:
    return [
        vid
        for vid, _ in tb.kavlan.listing(site)
        if vid != DEFAULT and (holder := tb.vlan_holder(site, vid)) is not None and holder.user == user
    ]


def users(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    holders = sorted(
        {
            h.user
            for vid, _ in tb.kavlan.listing(site)
            if vid != DEFAULT and (h := tb.vlan_holder(site, vid)) is not None
        }
    )
    items = [_user_item(req.prefix, site, u, _user_vlans(tb, site, u)) for u in holders]
    return Reply(
        body=collection(items, f"{req.prefix}/sites/{site}/vlans/users", f"{req.prefix}/sites/{site}/vlans")
    )


def _user_item(p: str, site: str, user: str, vids: list[str]) -> dict[str, Any]:
    href = f"{p}/sites/{site}/vlans/users/{user}"
    return {
        "uid": user,
        "vlans": vids,
        "links": [link("self", href), link("parent", f"{p}/sites/{site}/vlans/users", COLLECTION)],
    }


def user(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    name = req.params["user"]
    return Reply(body=_user_item(req.prefix, site, name, _user_vlans(tb, site, name)))


def vlan_users(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    vid = _vlan(tb, req, site)
    holder = tb.vlan_holder(site, vid) if vid != DEFAULT else None
    href = f"{req.prefix}/sites/{site}/vlans/{vid}/users"
    items = (
        []
        if holder is None
        else [
            {
                "uid": holder.user,
                "status": "authorized",
                "links": [link("self", f"{href}/{holder.user}"), link("parent", href, COLLECTION)],
            }
        ]
    )
    return Reply(body=collection(items, href, f"{req.prefix}/sites/{site}/vlans/{vid}"))


def vlan_user(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    vid = _vlan(tb, req, site)
    name = req.params["user"]
    holder = tb.vlan_holder(site, vid) if vid != DEFAULT else None
    href = f"{req.prefix}/sites/{site}/vlans/{vid}/users"
    status = "authorized" if holder is not None and holder.user == name else "unauthorized"
    return Reply(
        body={
            "uid": name,
            "status": status,
            "links": [link("self", f"{href}/{name}"), link("parent", href, COLLECTION)],
        }
    )


def dhcpd(tb: Testbed, req: Request) -> Reply:
    """PUT /vlans/{id}/dhcpd: start or stop the vlan's DHCP server (state only in the testbed)."""
    site = _site(tb, req)
    req.require_writer()
    vid = _vlan(tb, req, site)
    if req.content_type != "application/json":
        raise ApiError(415, f"Content-Type '{req.headers.get('content-type', '')}' is not supported")
    data = req.json_body()
    if not isinstance(data, dict) or data.get("action") not in ("start", "stop"):
        raise ApiError(422, "An action ('start' or 'stop') should be provided")
    holder = tb.vlan_holder(site, vid)
    if holder is None or holder.user != req.login:
        raise ApiError(403, NO_PRIVILEGE)
    return Reply(status=204)
