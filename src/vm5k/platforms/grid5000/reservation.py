"""One OAR job per site, submitted together; all or nothing; then waiting for them to run.

`submit_plan` posts every site's job in parallel (each exactly once, see ``oar.py``). If one site fails,
the jobs already created are deleted and the error is raised: a run never holds half a reservation.
OAR's "could run at <date>" comes back as `ReservationRefused`, for the caller to plan again from that
date. `wait_running` polls the jobs until all run, reporting state, ``scheduled_at`` and the time left on
the server's clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from vm5k.errors import PlatformError
from vm5k.platforms import ProgressItem, ProgressReport
from vm5k.platforms.grid5000.api import ApiClient
from vm5k.platforms.grid5000.oar import (
    ENDED_STATES,
    JobRecord,
    ReservationRefused,
    delete_job,
    describe_job,
    get_job,
    job_payload,
    job_start,
    keep_one,
    paris_date,
    submit_job,
)
from vm5k.platforms.grid5000.planning import Plan
from vm5k.platforms.grid5000.polling import api_polling

log = logging.getLogger(__name__)

ASAP_SLACK = 60  # a plan starting within this many seconds of now is submitted without a date


@dataclass(frozen=True)
class Submission:
    """How to submit a plan: the jobs' name, queue, the user (to find lost replies), the server's now."""

    name: str
    queue: str = "default"
    user: str | None = None


def site_types(exotic: bool) -> list[str]:
    return ["deploy", "exotic"] if exotic else ["deploy"]


def reservation_start(plan: Plan, now: int) -> int | None:
    """The date to ask OAR for, or None for "as soon as possible" (the plan starts now)."""
    return plan.start if plan.start > now + ASAP_SLACK else None


def submit_plan(api: ApiClient, plan: Plan, how: Submission) -> list[JobRecord]:
    """Submit every site's job of `plan` together; all or nothing (see the module docstring)."""
    start = reservation_start(plan, api.server_now())
    sites = list(plan.sites)

    def one(site: str) -> dict[str, Any]:
        site_plan = plan.sites[site]
        payload = job_payload(site_plan.resources(plan.walltime), how.name, start=start, queue=how.queue,
                              types=site_types(site_plan.exotic))
        log.info("submitting on %s: %s%s", site, payload["resources"],
                 f" at {payload['reservation']} (Europe/Paris)" if start else "")
        return submit_job(api, site, payload, user=how.user)

    with ThreadPoolExecutor(max_workers=max(1, len(sites))) as pool:
        futures = {site: pool.submit(one, site) for site in sites}
        created: dict[str, dict[str, Any]] = {}
        failures: dict[str, BaseException] = {}
        for site, future in futures.items():
            try:
                created[site] = future.result()
            except Exception as error:  # every failure is reported below, after the rollback
                failures[site] = error
    if failures:
        for site, job in created.items():
            log.info("deleting job %s:%s (another site's submission failed)", site, job["uid"])
            try:
                delete_job(api, site, int(job["uid"]))
            except PlatformError as error:
                log.warning("could not delete job %s:%s: %s", site, job["uid"], error)
        refused = [e for e in failures.values() if isinstance(e, ReservationRefused)]
        if refused:  # the latest proposed date works for every site that proposed one
            raise max(refused, key=lambda e: e.could_run_at or 0)
        site, failure = next(iter(failures.items()))
        if isinstance(failure, PlatformError):
            raise failure
        raise PlatformError(f"submitting the job on {site} failed: {failure}") from failure
    records = []
    for site in sites:
        job = created[site]
        job_id = int(job["uid"])
        keep_one(api, site, how.name, job_id, how.user)
        records.append(JobRecord(site, job_id, False, str(job.get("state", "waiting")),
                                 job_start(job) or start, plan.sites[site].resources(plan.walltime)))
        log.info("job %s:%s submitted (%s)", site, job_id, describe_job(job) or job.get("state"))
    return records


def poll_jobs(api: ApiClient, jobs: Sequence[JobRecord]) -> tuple[list[dict[str, Any]], int]:
    """Refresh every job; returns their documents and the server's clock."""
    docs = [get_job(api, job.site, job.id) for job in jobs]
    for job, doc in zip(jobs, docs, strict=True):
        job.state = str(doc.get("state", "")).lower()
        job.start = job_start(doc) or job.start
    return docs, api.server_now()


def progress_of(jobs: Sequence[JobRecord], now: int) -> ProgressReport:
    """The jobs as a progress report (state, scheduled start, time left)."""
    items = tuple(ProgressItem(job.label, job.state, job.start,
                               max(0, job.start - now) if job.start else None) for job in jobs)
    waiting = [item for item in items if item.state != "running"]
    if not waiting:
        message = f"{len(items)} job{'s' * (len(items) != 1)} running"
    else:
        later = max((item.start or 0 for item in waiting), default=0)
        left = _duration(max(0, later - now))
        when = f", start {paris_date(later)} Europe/Paris (in {left})" if later else ""
        message = f"waiting for {len(waiting)} of {len(items)} job{'s' * (len(items) != 1)}{when}"
    return ProgressReport("wait_running", message, items)


def wait_running(api: ApiClient, jobs: Sequence[JobRecord], *, report: Callable[[ProgressReport], None],
                 poll: float = 10.0, sleep: Callable[[float], None] = time.sleep,
                 timeout: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
    """Poll until every job runs; PlatformError if one ends first (or `timeout` wall seconds pass)."""
    deadline = None if timeout is None else clock() + timeout
    delays = api_polling(poll)
    while True:
        docs, now = poll_jobs(api, jobs)
        report(progress_of(jobs, now))
        for job, doc in zip(jobs, docs, strict=True):
            if job.state in ENDED_STATES:
                raise PlatformError(f"job {job.label} ended ({job.state}) before running: "
                                    f"{describe_job(doc) or 'no message'}")
        if all(job.state == "running" for job in jobs):
            return
        if deadline is not None and clock() >= deadline:
            raise PlatformError(f"the jobs did not start within {timeout:.0f} s")
        left = min((job.start - now for job in jobs if job.start and job.state != "running"), default=0)
        sleep(next(delays) if left <= 0 else min(max(poll, left / 4), 300.0))


def _duration(seconds: int) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
