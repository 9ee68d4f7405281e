"""OAR through g5k-api: jobs (§4) and site/cluster status (§5).

Handlers run with the testbed lock held, after the clock's due events were replayed (`http_server`).
"""

from __future__ import annotations

from typing import Any

from g5k_testbed.http_types import FORBIDDEN, Reply, Request
from g5k_testbed.jobs import Job
from g5k_testbed.oar import DEFAULT_WALLTIME, OarError
from g5k_testbed.oar_grammar import ResourceSyntaxError, parse_walltime
from g5k_testbed.testbed import ApiError, Testbed
from g5k_testbed.timefmt import ReservationSyntaxError, parse_reservation
from g5k_testbed.views import collection, job_item, job_summary, link, node_soft_state

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
INVALID_JOB = "The job you are trying to submit is not valid: "


def _site(tb: Testbed, req: Request) -> str:
    site = req.params["site"]
    if site not in tb.oar:
        raise ApiError(404, f"Cannot find resource /sites/{site}")
    return site


def _job(tb: Testbed, req: Request, site: str) -> Job:
    raw = req.params["job"]
    job = tb.find_job(site, int(raw)) if raw.isdigit() else None
    if job is None:
        raise ApiError(404, f"Couldn't find OAR::Job with 'job_id'={raw}")
    return job


def _oar_failure(site: str, path: str, status: int, message: str) -> ApiError:
    """g5k-api's wrapping of an OAR API error (`continue_if!`), with OAR's JSON body embedded."""
    import json

    body = json.dumps(
        {"code": status, "message": message, "title": "Bad Request" if status == 400 else "Error"}
    )
    return ApiError(
        status,
        f"Request to http://oar-api.{site}.grid5000.fr/oarapi/{path} failed with status {status}: {body}",
    )


# ---------------------------------------------------------------------------------------------- jobs
def list_jobs(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    states = {s.strip().lower() for s in req.query.get("state", "").split(",") if s.strip()}
    filters = {key: req.query[key] for key in ("user", "name", "project", "queue") if req.query.get(key)}
    job_id = req.query.get("job_id")
    try:
        offset = max(0, int(req.query.get("offset", 0)))
        limit = min(MAX_LIMIT, max(0, int(req.query.get("limit", DEFAULT_LIMIT))))
    except ValueError as exc:
        raise ApiError(400, f"Bad Request: {exc}") from exc
    with_resources = req.flag("resources", False)
    selected = []
    for uid in sorted(tb.oar[site].jobs, reverse=True):
        job = tb.oar[site].jobs[uid]
        if states and job.state not in states:
            continue
        if job_id and str(job.uid) != job_id:
            continue
        if any(str(getattr(job, key) or "") != value for key, value in filters.items()):
            continue
        selected.append(job)
    page = [job_item(job, req.prefix, resources=with_resources) for job in selected[offset : offset + limit]]
    return Reply(
        body=collection(
            page,
            f"{req.prefix}/sites/{site}/jobs",
            f"{req.prefix}/sites/{site}",
            total=len(selected),
            offset=offset,
        )
    )


def show_job(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    return Reply(body=job_item(_job(tb, req, site), req.prefix))


def _types(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return list(value)
    raise ApiError(400, INVALID_JOB + "`types` should be an Array of Strings.")


def create_job(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    req.require_writer()
    data = req.form_or_json()
    now = tb.now()
    reservation = data.get("reservation")
    if reservation is not None and not isinstance(reservation, str):
        raise ApiError(400, INVALID_JOB + "`reservation` should be a String.")
    command = data.get("command")
    if not reservation and not command:
        raise ApiError(400, INVALID_JOB + "you must give a :command to execute on launch")
    start = end = None
    if reservation:
        try:
            start, end = parse_reservation(reservation, now)
        except ReservationSyntaxError as exc:
            raise ApiError(400, INVALID_JOB + str(exc)) from exc
    walltime = DEFAULT_WALLTIME
    if data.get("walltime") not in (None, ""):
        try:
            raw = data["walltime"]
            walltime = int(raw) if isinstance(raw, int) else parse_walltime(str(raw))
        except (ResourceSyntaxError, ValueError) as exc:
            raise ApiError(400, INVALID_JOB + f"bad walltime {data['walltime']!r}") from exc
    if start is not None and end is not None:
        if end <= start:
            raise _oar_failure(
                site, "jobs.json", 400, "Reservation not valid --> KO (the end is before the start)"
            )
        walltime = end - start
    if start is not None and start < now - 300:
        raise _oar_failure(site, "jobs.json", 400, "Reservation not valid --> KO (Reservation too old)")
    job = Job(
        uid=0,
        site=site,
        user=req.login,
        resources=str(data.get("resources") or "nodes=1"),
        walltime=walltime,
        queue=str(data.get("queue") or "default"),
        project=str(data.get("project") or "default"),
        types=_types(data.get("types")),
        command=str(command or ""),
        properties=str(data.get("properties") or ""),
        directory=str(data.get("directory") or f"/home/{req.login}"),
        submitted_at=now,
        name=str(data["name"]) if data.get("name") not in (None, "") else None,
        reservation=start,
    )
    job.uid = tb.new_job_id()
    try:
        tb.oar[site].submit(job, tb.now())
    except OarError as exc:
        raise _oar_failure(site, "jobs.json", exc.status, str(exc)) from exc
    tb.flush_jobs()
    body = job_item(job, req.prefix)
    return Reply(status=201, body=body, headers={"Location": req.url(f"/sites/{site}/jobs/{job.uid}")})


def delete_job(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    req.require_writer()
    job = _job(tb, req, site)
    if job.user != req.login:
        raise ApiError(403, FORBIDDEN)
    try:
        changes = tb.oar[site].delete(job, tb.now())
    except OarError as exc:
        raise _oar_failure(site, f"jobs/{job.uid}.json", 400, str(exc)) from exc
    tb.apply_changes(site, changes)
    tb.flush_jobs()
    info = (
        f"Deleting the job = {job.uid} ...REGISTERED. "
        f"The job(s) [ {job.uid} ] will be deleted in a near future."
    )
    return Reply(
        status=202, headers={"Location": req.url(f"/sites/{site}/jobs/{job.uid}"), "X-Oar-Info": info}
    )


# ---------------------------------------------------------------------------------------------- status
class _StatusBuilder:
    """Builds status entries, rendering each job's reservation entry once per request."""

    def __init__(self, tb: Testbed, site: str, req: Request) -> None:
        self.tb, self.site, self.now = tb, site, tb.now()
        anonymous = req.login == "anonymous"
        self.waiting = req.flag("waiting", True) and not anonymous
        self.details = req.flag("job_details", True) and not anonymous
        self.oar = tb.oar[site]
        self._rendered: dict[int, dict[str, Any]] = {}

    def _reservations(self, jobs: list[Job]) -> list[dict[str, Any]]:
        out = []
        for job in jobs:
            if not self.waiting and job.state == "waiting":
                continue
            entry = self._rendered.get(job.uid)
            if entry is None:
                entry = self._rendered[job.uid] = job_summary(job)
            out.append(entry)
        return out

    def _holders(self, calendar: Any) -> list[Job]:
        jobs = (self.oar.jobs.get(uid) for uid in calendar.all_owners())
        return [job for job in jobs if job is not None and job.active]

    def node(self, fqdn: str) -> dict[str, Any]:
        hard = self.tb.node_hard_state(fqdn)
        cores = self.oar.scheduler.node_props[fqdn]["core_count"] or 1
        holders = self._holders(self.oar.scheduler.nodes[fqdn])
        running = [job for job in holders if job.state == "running"]
        busy = min(cores, sum(job.cores.get(fqdn, cores) for job in running))
        besteffort = min(
            busy, sum(job.cores.get(fqdn, cores) for job in running if job.queue == "besteffort")
        )
        soft, free_slots, freeable, busy_slots = node_soft_state(hard, cores, busy, besteffort)
        comment = {
            "alive": "OK",
            "dead": "Dead (testbed fault injection)",
            "absent": "Absent (not materialised by the testbed)",
        }[hard]
        entry: dict[str, Any] = {"hard": hard, "soft": soft, "comment": comment}
        if self.details:
            entry["reservations"] = self._reservations(holders)
        entry.update(free_slots=free_slots, freeable_slots=freeable, busy_slots=busy_slots)
        return entry

    def simple(self, calendar: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        holders = self._holders(calendar)
        busy = any(job.state == "running" for job in holders)
        entry: dict[str, Any] = {"hard": "alive", "soft": "busy" if busy else "free", **(extra or {})}
        if self.details:
            entry["reservations"] = self._reservations(holders)
        return entry


def _status(tb: Testbed, req: Request, site: str, cluster: str | None) -> dict[str, Any]:
    builder = _StatusBuilder(tb, site, req)
    scheduler = tb.oar[site].scheduler
    only = req.query.get("network_address")
    out: dict[str, Any] = {"uid": builder.now}
    href = f"{req.prefix}/sites/{site}" + (f"/clusters/{cluster}" if cluster else "")
    out["links"] = [link("self", f"{href}/status"), link("parent", href)]
    if cluster or req.flag("nodes", True):
        nodes = {}
        for fqdn, props in scheduler.node_props.items():
            if (cluster and props["cluster"] != cluster) or (only and fqdn != only):
                continue
            nodes[fqdn] = builder.node(fqdn)
        out["nodes"] = nodes
    if req.flag("disks", True):
        out["disks"] = {}
    if not cluster:
        if req.flag("vlans", True):
            out["vlans"] = {
                vid: builder.simple(scheduler.vlans[vid], {"type": kind})
                for vid, kind in scheduler.vlan_kinds.items()
            }
        if req.flag("subnets", True):
            out["subnets"] = {cidr: builder.simple(cal) for cidr, cal in scheduler.subnets.items()}
    return out


def site_status(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    return Reply(body=_status(tb, req, site, None))


def cluster_status(tb: Testbed, req: Request) -> Reply:
    site = _site(tb, req)
    cluster = req.params["cluster"]
    if cluster not in tb.reference.sites[site].clusters:
        raise ApiError(404, f"Cannot find resource /sites/{site}/clusters/{cluster}")
    return Reply(body=_status(tb, req, site, cluster))
