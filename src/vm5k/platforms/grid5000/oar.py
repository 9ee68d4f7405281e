"""OAR jobs through the API: submit exactly once, find, read, wait for, and kill.

Exactly once: a job submission (POST) whose reply is lost — a 5xx or a timeout after the server acted —
may have created the job. Before trying again, `submit_job` looks the job up by its name (``vm5k-<run
id>``, unique to the run), its user when known, and the live states; only when nothing is found does it
post again. After a multi-site submission, `keep_one` deletes any extra job of that name on a site (a
reply that was so slow that the lookup missed it), so at most one job per site survives.

Dates: the API gives epoch seconds; OAR takes reservation dates as Europe/Paris wall-clock strings
(`paris_date`), and words its refusals with them (`ReservationRefused.could_run_at`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from vm5k.errors import PlatformError
from vm5k.platforms.grid5000.api import ApiClient, ApiError
from vm5k.retry import RetryPolicy
from vm5k.topology import one_line

log = logging.getLogger(__name__)

PARIS = ZoneInfo("Europe/Paris")
LIVE_STATES = ("waiting", "launching", "running")
ACTIVE_STATES = frozenset({"waiting", "hold", "tolaunch", "toerror", "toackreservation", "launching",
                           "running", "suspended", "resuming", "finishing"})
ENDED_STATES = frozenset({"terminated", "error"})
SLEEP_COMMAND = "sleep 31536000"  # OAR wants a command; deploy jobs only hold the nodes
_COULD_RUN_AT = re.compile(r"could run at (\d{4}-\d{2}-\d{2} \d{2}:\d{2}(?::\d{2})?)")

#: Submissions whose reply was lost: look up, then try again a few times.
SUBMIT_RETRY = RetryPolicy(attempts=6, initial_delay=1.0, multiplier=2.0, max_delay=15.0,
                           retry_on=(ApiError,), what="job submission")


def paris_date(epoch: int) -> str:
    """An epoch as OAR's reservation date, Europe/Paris wall clock.

    >>> paris_date(1700000000)
    '2023-11-14 23:13:20'
    """
    return datetime.fromtimestamp(int(epoch), PARIS).strftime("%Y-%m-%d %H:%M:%S")


def parse_paris(text: str) -> int:
    """An OAR date (Europe/Paris wall clock) as epoch seconds.

    >>> parse_paris("2023-11-14 23:13:20")
    1700000000
    """
    fmt = "%Y-%m-%d %H:%M:%S" if text.count(":") == 2 else "%Y-%m-%d %H:%M"
    return int(datetime.strptime(text, fmt).replace(tzinfo=PARIS).timestamp())


class ReservationRefused(PlatformError):
    """OAR refused an advance reservation; `could_run_at` is the date it proposed (epoch), if any."""

    def __init__(self, site: str, message: str, could_run_at: int | None, too_old: bool) -> None:
        super().__init__(f"OAR on {site} refused the reservation: {message}")
        self.site = site
        self.could_run_at = could_run_at
        self.too_old = too_old


def refusal(site: str, error: ApiError) -> ReservationRefused | None:
    """The `ReservationRefused` an API error means, or None for any other error."""
    text = error.message
    match = _COULD_RUN_AT.search(text)
    if match:
        return ReservationRefused(site, f"it could run at {match.group(1)} (Europe/Paris)",
                                  parse_paris(match.group(1)), False)
    if "Reservation too old" in text:
        return ReservationRefused(site, "the date is in the past", None, True)
    return None


@dataclass
class JobRecord:
    """A job of the run, as recorded in the topology: `given` jobs come from ``-j`` (not ours to kill)."""

    site: str
    id: int
    given: bool = False
    state: str = "waiting"
    start: int | None = None
    resources: str | None = None

    @property
    def label(self) -> str:
        return f"{self.site}:{self.id}"

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "id": self.id, "given": self.given, "state": self.state,
                "start": self.start, "resources": self.resources}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRecord:
        return cls(str(data["site"]), int(data["id"]), bool(data.get("given")),
                   str(data.get("state", "waiting")), data.get("start"), data.get("resources"))


@dataclass
class JobResources:
    """What a job holds (or is predicted to hold while waiting)."""

    nodes: list[str] = field(default_factory=list)
    subnets: list[str] = field(default_factory=list)
    vlans: list[str] = field(default_factory=list)


def job_resources(job: Mapping[str, Any]) -> JobResources:
    """``assigned_nodes`` and ``resources_by_type`` of a job document."""
    by_type = job.get("resources_by_type") or {}
    nodes = [str(n) for n in job.get("assigned_nodes") or ()]
    if not nodes:  # older replies: cores as "<fqdn>/<cpuset>"
        nodes = list(dict.fromkeys(str(c).split("/")[0] for c in by_type.get("cores") or ()))
    return JobResources(nodes, [str(s) for s in by_type.get("subnets") or ()],
                        [str(v) for v in by_type.get("vlans") or ()])


def job_start(job: Mapping[str, Any]) -> int | None:
    """When a job starts or started: ``started_at`` if not 0, else ``scheduled_at``."""
    return int(job.get("started_at") or 0) or int(job.get("scheduled_at") or 0) or None


def job_payload(resources: str, name: str, *, start: int | None, queue: str = "default",
                types: Sequence[str] = ("deploy",)) -> dict[str, Any]:
    """The body of ``POST /sites/{site}/jobs`` (a reservation date only when `start` is given)."""
    payload: dict[str, Any] = {"resources": resources, "name": name, "types": list(types),
                               "command": SLEEP_COMMAND}
    if queue != "default":
        payload["queue"] = queue
    if start is not None:
        payload["reservation"] = paris_date(start)
    return payload


def find_jobs(api: ApiClient, site: str, name: str, user: str | None = None) -> list[dict[str, Any]]:
    """The live jobs of `site` called `name` (and owned by `user` when given), oldest first."""
    params: dict[str, Any] = {"name": name, "state": ",".join(LIVE_STATES), "limit": 500}
    if user:
        params["user"] = user
    items = api.get(f"/sites/{site}/jobs", **params).get("items", [])
    jobs = [job for job in items
            if job.get("name") == name and str(job.get("state")).lower() in ACTIVE_STATES]
    return sorted(jobs, key=lambda job: int(job["uid"]))


def get_job(api: ApiClient, site: str, job_id: int) -> dict[str, Any]:
    job: dict[str, Any] = api.get(f"/sites/{site}/jobs/{job_id}")
    return job


def submit_job(api: ApiClient, site: str, payload: Mapping[str, Any], *, user: str | None = None,
               retry: RetryPolicy = SUBMIT_RETRY,
               pause: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Submit a job exactly once (see the module docstring); its document (``uid``, ``state``...).

    After a lost reply it pauses (wall-clock time: a slow server may still be creating the job), looks
    the job up, and posts again only when it is not there. Raises ReservationRefused when OAR refuses
    the date, ApiError for any other refusal (or when the lookup itself keeps failing: then nobody
    knows whether the job exists, and posting again could make a second one).
    """
    name = str(payload["name"])
    delays = retry.delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            job = api.post(f"/sites/{site}/jobs", dict(payload))
            if not isinstance(job, Mapping) or "uid" not in job:
                raise ApiError("the job submission's reply carries no job", None, method="POST",
                               path=f"/sites/{site}/jobs")
            return dict(job)
        except ApiError as error:
            refused = refusal(site, error)
            if refused is not None:
                raise refused from None
            if not error.transient:
                raise
            wait = next(delays, None)
            log.info("submitting %s on %s: %s; looking it up before trying again (%d/%d)", name, site, error,
                     attempt, retry.attempts)
            pause(wait if wait is not None else retry.max_delay)
            found = find_jobs(api, site, name, user)
            if found:
                log.info("the submission of %s on %s went through: job %s", name, site, found[0]["uid"])
                return get_job(api, site, int(found[0]["uid"]))
            if wait is None:
                raise


def keep_one(api: ApiClient, site: str, name: str, keep: int, user: str | None = None) -> list[int]:
    """Delete every live job of `site` named `name` except `keep`; returns the ids deleted."""
    extra = [int(job["uid"]) for job in find_jobs(api, site, name, user) if int(job["uid"]) != keep]
    for job_id in extra:
        log.warning("deleting duplicate job %s:%s (a submission answered too late)", site, job_id)
        delete_job(api, site, job_id)
    return extra


def delete_job(api: ApiClient, site: str, job_id: int) -> bool:
    """Ask OAR to kill a job; False when it was already gone (killed, ended or unknown)."""
    try:
        api.delete(f"/sites/{site}/jobs/{job_id}")
    except ApiError as error:
        if error.status == 404 or "already killed" in error.message:
            return False
        raise
    return True


def wait_gone(api: ApiClient, jobs: Iterable[tuple[str, int]], *, timeout: float = 300.0,
              poll: float = 2.0, sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic) -> dict[tuple[str, int], str]:
    """Poll until every job reached its final state (a `finishing` job's nodes are still being rebooted
    into the standard environment: not free yet); returns their final states.

    PlatformError when some are still live after `timeout` seconds.
    """
    pending = {(site, int(job_id)) for site, job_id in jobs}
    states: dict[tuple[str, int], str] = {}
    deadline = clock() + timeout
    while pending:
        for site, job_id in sorted(pending):
            try:
                state = str(get_job(api, site, job_id).get("state", "")).lower()
            except ApiError as error:
                if error.status != 404:
                    raise
                state = "unknown"
            if state not in ACTIVE_STATES:
                states[(site, job_id)] = state
                pending.discard((site, job_id))
        if not pending:
            break
        if clock() >= deadline:
            names = ", ".join(f"{s}:{j}" for s, j in sorted(pending))
            raise PlatformError(f"jobs {names} are still alive {timeout:.0f} s after being killed")
        sleep(poll)
    return states


def describe_job(job: Mapping[str, Any]) -> str:
    return one_line(str(job.get("message") or job.get("state") or ""))
