"""Kadeploy through g5k-api: deployments (§6), environments, and the stored key files."""

from __future__ import annotations

import re
from typing import Any

from g5k_testbed.http_types import FORBIDDEN, Reply, Request
from g5k_testbed.kadeploy import Deployment, key_file_name, new_deployment_uid, resolve_environment
from g5k_testbed.testbed import ApiError, Testbed
from g5k_testbed.views import collection, link

INVALID = "The deployment you are trying to submit is not valid: "
_KAVLAN_NAME = re.compile(r"^(?P<host>[^.]+?)-kavlan-\d+(?P<domain>\..+)$")
MAX_LIMIT = 500


def _site(tb: Testbed, req: Request) -> str:
    site = req.params["site"]
    if site not in tb.deployments:
        raise ApiError(404, f"Cannot find resource /sites/{site}")
    return site


def _deployment(tb: Testbed, req: Request, site: str) -> Deployment:
    dep = tb.deployments[site].get(req.params["deployment"])
    if dep is None:
        raise ApiError(404, f"Couldn't find Grid5000::Deployment with ID={req.params['deployment']}")
    return dep


def _strip_kavlan(name: str) -> str:
    """Kadeploy accepts `<node>-kavlan-<N>.<site>...` names and works on the node itself."""
    m = _KAVLAN_NAME.match(name)
    return f"{m.group('host')}{m.group('domain')}" if m else name


def list_deployments(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    deps = list(tb.deployments[site].values())
    for key, attr in (("user", "user_uid"), ("status", "status")):
        if req.query.get(key):
            wanted = {v.strip() for v in req.query[key].split(",")}
            deps = [d for d in deps if getattr(d, attr) in wanted]
    deps.sort(key=lambda d: (d.created_at, d.uid), reverse=not req.flag("reverse", False))
    try:
        offset = max(0, int(req.query.get("offset", 0)))
        limit = min(MAX_LIMIT, max(0, int(req.query.get("limit", 50))))
    except ValueError as exc:
        raise ApiError(400, f"Bad Request: {exc}") from exc
    items = [d.render(req.prefix) for d in deps[offset : offset + limit]]
    return Reply(
        body=collection(
            items,
            f"{req.prefix}/sites/{site}/deployments",
            f"{req.prefix}/sites/{site}",
            total=len(deps),
            offset=offset,
        )
    )


def show_deployment(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    return Reply(body=_deployment(tb, req, site).render(req.prefix))


def create_deployment(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    req.require_writer()
    data = req.form_or_json()
    nodes = data.get("nodes")
    if isinstance(nodes, str):
        nodes = [nodes]
    if not isinstance(nodes, list) or not nodes or not all(isinstance(n, str) and n for n in nodes):
        raise ApiError(400, INVALID + "Nodes can't be blank; Nodes must be a non-empty list of node FQDN")
    spec = data.get("environment")
    if not isinstance(spec, str) or not spec.strip():
        raise ApiError(400, INVALID + "Environment can't be blank")
    nodes = list(dict.fromkeys(_strip_kavlan(n) for n in nodes))
    unknown = [n for n in nodes if n not in tb.reference.sites[site].node_info]
    if unknown:
        raise ApiError(400, f"Cannot launch deployment: Unknown nodes: {', '.join(unknown)}")
    held = {fqdn for job in tb.running_jobs_of(site, req.login) if job.deploy for fqdn in job.nodes}
    missing = [n for n in nodes if n not in held]
    if missing:
        raise ApiError(
            400,
            "Cannot launch deployment: You do not have the right to deploy on the nodes "
            f"{', '.join(missing)} (they are not in a running deploy job of {req.login})",
        )
    arch = data.get("arch") or tb.reference.nodes_by_fqdn[nodes[0]].doc.get("architecture", {}).get(
        "platform_type"
    )
    env_version = None
    if re.match(r"^https?://", spec):
        env_name = spec
    else:
        env = resolve_environment(tb.environments, spec.split("@")[0], arch)
        if env is None or ("@" in spec and spec.split("@", 1)[1] not in ("deploy", "")):
            raise ApiError(
                400,
                f"Cannot launch deployment: Invalid environment specification -- the environment "
                f"{spec} does not exist",
            )
        env_name, env_version, arch = spec, str(env["version"]), env["arch"]
    vlan = data.get("vlan")
    if vlan not in (None, ""):
        vid = str(vlan)
        holder = tb.vlan_holder(site, vid)
        if holder is None or holder.user != req.login:
            raise ApiError(400, f"Cannot launch deployment: the vlan {vid} is not reserved by {req.login}")
        vlan = int(vid) if vid.isdigit() else vid
    else:
        vlan = None
    key_url = None
    key_content = data.get("key")
    if isinstance(key_content, str) and key_content.strip():
        if re.match(r"^https?://", key_content.strip()):
            key_url, key_content = key_content.strip(), None
        else:
            name = key_file_name(req.login, key_content)
            tb.files[name] = key_content
            tb.store.save_file(name, key_content)
            key_url = req.url(f"/sites/{site}/files/{name}")
    else:
        key_content = None
    now = tb.now()
    dep = Deployment(
        uid=new_deployment_uid(),
        site_uid=site,
        user_uid=req.login,
        environment=env_name,
        nodes=nodes,
        created_at=now,
        updated_at=now,
        finish_after=now + tb.config.kadeploy_duration,
        version=env_version,
        arch=arch,
        key=key_url,
        vlan=vlan,
        disable_disk_partitioning=bool(data.get("disable_disk_partitioning", False)),
        disable_bootloader_install=bool(data.get("disable_bootloader_install", False)),
        ignore_nodes_deploying=bool(data.get("ignore_nodes_deploying", False)),
        ko_nodes=[n for n in nodes if n in tb.faults.config.ko_nodes],
    )
    tb.start_deployment(dep, key_content)
    return Reply(
        status=201,
        body=dep.render(req.prefix),
        headers={"Location": req.url(f"/sites/{site}/deployments/{dep.uid}")},
    )


def delete_deployment(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    req.require_writer()
    dep = _deployment(tb, req, site)
    if dep.user_uid != req.login:
        raise ApiError(403, FORBIDDEN)
    if dep.status == "processing":
        dep.status = "canceled"
        dep.updated_at = tb.now()
        tb.save_deployment(dep)
    return Reply(status=202, headers={"Location": req.url(f"/sites/{site}/deployments/{dep.uid}")})


def refresh_deployment(tb: Testbed, req: Request) -> Reply:
    """PUT: Kadeploy's end hook asks g5k-api to refresh; the testbed is always up to date."""
    site = _site(tb, req)
    _deployment(tb, req, site)
    return Reply(status=204)


# ---------------------------------------------------------------------------------------------- environments
def _env_item(p: str, site: str, env: dict[str, Any]) -> dict[str, Any]:
    href = f"{p}/sites/{site}/environments/{env['uid']}"
    return {**env, "links": [link("self", href), link("parent", f"{p}/sites/{site}")]}


def environments(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    envs = tb.environments
    for key in ("name", "arch", "user"):
        if req.query.get(key):
            envs = [e for e in envs if str(e.get(key)) == req.query[key]]
    items = [_env_item(req.prefix, site, e) for e in envs]
    return Reply(
        body=collection(items, f"{req.prefix}/sites/{site}/environments", f"{req.prefix}/sites/{site}")
    )


def environment(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    env = resolve_environment(tb.environments, req.params["environment"], req.query.get("arch"))
    if env is None:
        raise ApiError(404, f"Cannot find resource /sites/{site}/environments/{req.params['environment']}")
    return Reply(body=_env_item(req.prefix, site, env))


def key_file(tb: Testbed, req: Request) -> Reply:
    _site(tb, req)
    name = req.params["file"]
    content = (tb.files.get(name) or tb.store.read_file(name)) if "/" not in name else None
    if content is None:
        raise ApiError(404, f"Cannot find resource {req.path}")
    return Reply(body=content, content_type="text/plain")
