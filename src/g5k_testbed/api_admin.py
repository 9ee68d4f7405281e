"""The testbed's own control endpoints, under `/_testbed/` (real Grid'5000 has none of these).

Served only when the server runs with `--admin` (or `admin=True` in process), so a testbed shown to a
client as "Grid'5000" has nothing extra unless asked for:

* `GET /_testbed/clock` → `{"now", "offset", "frozen", "paris"}`;
  `POST /_testbed/clock` with `{"advance": seconds}`, `{"set": epoch}`, `{"freeze": true|false}`;
* `GET /_testbed/faults`, `PUT`/`PATCH /_testbed/faults` with any keys of `FaultConfig`;
* `DELETE /_testbed/sites/{site}/jobs/{job}`: an admin kill (`oardel` by the platform's admins, whoever
  owns the job); the job ends as any other (`finishing` while its nodes reboot, then `error`);
* `GET /_testbed/state` → served sites, clock, counts of jobs and deployments, faults injected so far
  (``errors``, ``lost_replies``, ``slow``: what a client went through).
"""

from __future__ import annotations

from typing import Any

from g5k_testbed.http_types import Reply, Request
from g5k_testbed.oar import OarError
from g5k_testbed.testbed import ApiError, Testbed
from g5k_testbed.timefmt import format_paris


def _clock(tb: Testbed) -> dict[str, Any]:
    now = tb.clock.now()
    return {"now": now, "offset": tb.clock.offset, "frozen": tb.clock.frozen, "paris": format_paris(now)}


def get_clock(tb: Testbed, req: Request) -> Reply:
    return Reply(body=_clock(tb))


def set_clock(tb: Testbed, req: Request) -> Reply:
    data = req.json_body()
    if not isinstance(data, dict) or not set(data) & {"advance", "set", "freeze"}:
        raise ApiError(422, 'expected {"advance": seconds}, {"set": epoch} or {"freeze": true|false}')
    try:
        if "freeze" in data:
            tb.clock.freeze() if data["freeze"] else tb.clock.unfreeze()
        if "advance" in data:
            tb.clock.advance(float(data["advance"]))
        if "set" in data:
            tb.clock.set(float(data["set"]))
    except (TypeError, ValueError) as exc:
        raise ApiError(422, str(exc)) from exc
    tb.tick()
    tb.save_meta()
    return Reply(body=_clock(tb))


def kill_job(tb: Testbed, req: Request) -> Reply:
    site, uid = req.params["site"], req.params["job"]
    job = tb.find_job(site, int(uid)) if site in tb.oar and uid.isdigit() else None
    if job is None:
        raise ApiError(404, f"no job {req.params['job']} on {site}")
    try:
        changes = tb.oar[site].delete(job, tb.now(), by="oar")
    except OarError as exc:
        raise ApiError(400, str(exc)) from exc
    tb.apply_changes(site, changes)
    tb.flush_jobs()
    return Reply(status=202, body={"uid": job.uid, "state": job.state})


def get_faults(tb: Testbed, req: Request) -> Reply:
    return Reply(body=tb.faults.config.to_dict())


def set_faults(tb: Testbed, req: Request) -> Reply:
    data = req.json_body()
    if not isinstance(data, dict):
        raise ApiError(422, "expected a JSON object of fault settings")
    if req.method == "PUT":
        data = {**type(tb.faults.config)().to_dict(), **data}
    try:
        tb.faults.reconfigure(data)
    except (TypeError, ValueError) as exc:
        raise ApiError(422, str(exc)) from exc
    tb.save_meta()
    return Reply(body=tb.faults.config.to_dict())


def state(tb: Testbed, req: Request) -> Reply:
    jobs: dict[str, dict[str, int]] = {}
    for site, oar in tb.oar.items():
        counts: dict[str, int] = {}
        for job in oar.jobs.values():
            counts[job.state] = counts.get(job.state, 0) + 1
        jobs[site] = counts
    return Reply(
        body={
            "sites": list(tb.reference.sites),
            "clock": _clock(tb),
            "jobs": jobs,
            "deployments": {s: len(d) for s, d in tb.deployments.items()},
            "faults_injected": dict(tb.faults.injected),
            "state_dir": tb.config.state_dir,
        }
    )
