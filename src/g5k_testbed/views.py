"""JSON shapes of the Grid'5000 API: links, collections, jobs, status entries.

Hrefs are absolute paths that start with the version prefix the client used (`/3.0`, `/stable`, `/sid`);
null values are omitted where g5k-api omits them; keys come in g5k-api's order.
"""

from __future__ import annotations

from typing import Any

from g5k_testbed.jobs import Job

ITEM = "application/vnd.grid5000.item+json"
COLLECTION = "application/vnd.grid5000.collection+json"


def link(rel: str, href: str, kind: str = ITEM) -> dict[str, str]:
    return {"rel": rel, "href": href, "type": kind}


def collection(
    items: list[Any] | dict[str, Any],  # a dict: a deep reply (the reference API's tree by uid)
    self_href: str,
    parent_href: str | None,
    total: int | None = None,
    offset: int = 0,
    version: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"total": len(items) if total is None else total, "offset": offset, "items": items}
    if version is not None:
        out["version"] = version
    links = [link("self", self_href, COLLECTION)]
    if parent_href is not None:
        links.append(link("parent", parent_href))
    out["links"] = links
    return out


# ---------------------------------------------------------------------------------------------- jobs
_JOB_KEYS_HEAD = (
    "uid",
    "user_uid",
    "user",
    "walltime",
    "queue",
    "state",
    "project",
    "name",
    "types",
    "mode",
    "command",
    "submitted_at",
    "scheduled_at",
    "started_at",
    "stopped_at",
    "message",
    "exit_code",
    "properties",
    "directory",
)


def job_summary(job: Job) -> dict[str, Any]:
    """The job keys shared by every rendering (status reservations stop here)."""
    out: dict[str, Any] = {
        "uid": job.uid,
        "user_uid": job.user,
        "user": job.user,
        "walltime": job.walltime,
        "queue": job.queue,
        "state": job.state,
        "project": job.project,
    }
    if job.name is not None:
        out["name"] = job.name
    out["types"] = list(job.types)
    out["mode"] = "PASSIVE"
    out["command"] = job.command
    out["submitted_at"] = job.submitted_at
    if job.scheduled_at:
        out["scheduled_at"] = job.scheduled_at
    out["started_at"] = job.started_at
    if job.stopped_at:
        out["stopped_at"] = job.stopped_at
    out["message"] = job.message
    if job.exit_code is not None:
        out["exit_code"] = job.exit_code
    out["properties"] = job.properties
    out["directory"] = job.directory
    return out


def job_resources(job: Job) -> tuple[dict[str, list[str]], list[str]]:
    """`resources_by_type` (cores per node by cpuset, vlans, subnets) and `assigned_nodes`."""
    by_type: dict[str, list[str]] = {}
    if job.nodes:
        by_type["cores"] = [f"{fqdn}/{cpu}" for fqdn in job.nodes for cpu in range(job.cores.get(fqdn, 1))]
    if job.vlans:
        by_type["vlans"] = list(job.vlans)
    if job.subnets:
        by_type["subnets"] = list(job.subnets)
    return by_type, list(job.nodes)


def job_item(job: Job, prefix: str, resources: bool = True) -> dict[str, Any]:
    out = job_summary(job)
    out["events"] = list(job.events)
    out["links"] = [
        link("self", f"{prefix}/sites/{job.site}/jobs/{job.uid}"),
        link("parent", f"{prefix}/sites/{job.site}"),
    ]
    if resources:
        out["resources_by_type"], out["assigned_nodes"] = job_resources(job)
    return out


# ---------------------------------------------------------------------------------------------- status
def node_soft_state(hard: str, cores: int, busy: int, besteffort: int) -> tuple[str, int, int, int]:
    """`soft`, `free_slots`, `freeable_slots`, `busy_slots` of a node, as §5.1 computes them."""
    if hard == "dead":
        return "unknown", 0, 0, 0
    if busy == 0:
        soft = "free"
    elif busy * 2 <= cores:
        soft = "free_busy"
    elif busy < cores:
        soft = "busy_free"
    else:
        soft = "busy"
    if besteffort:
        soft += "_besteffort"
    return soft, cores - busy, besteffort, busy - besteffort
