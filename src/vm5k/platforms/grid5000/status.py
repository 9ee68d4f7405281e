"""OAR status through the API: what is busy when, on the server's clock, as planning data.

``GET /sites/{site}/status?disks=no`` gives every node (``hard`` state and ``reservations``: the running
and scheduled jobs), every /22 subnet and every vlan of the site, and its ``uid`` is the server's time.
Sites are read in parallel. The parsing is pure (`site_availability`); `fetch_availability` does the
calls. Anonymous users get status without reservations: that is detected and refused, since a plan that
cannot see other jobs would be wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vm5k.errors import PlatformError
from vm5k.platforms.grid5000.api import ApiClient, ApiError
from vm5k.platforms.grid5000.planning import (
    SECURITY_MARGIN,
    UNUSABLE_STATES,
    Availability,
    Interval,
    SiteAvailability,
    Usage,
    merge,
)

log = logging.getLogger(__name__)
PARALLEL_SITES = 8


def busy_intervals(reservations: Iterable[Mapping[str, Any]], *, margin: int = SECURITY_MARGIN,
                   ignore_besteffort: bool = True) -> tuple[Interval, ...]:
    """Busy intervals from a status entry's ``reservations`` (running and scheduled jobs), merged.

    A job occupies ``[start, start + walltime + margin)`` with start = ``started_at``, else
    ``scheduled_at``; jobs with neither (not scheduled yet) and besteffort jobs (OAR kills them for
    others) are left out.

    >>> busy_intervals([{"started_at": 0, "scheduled_at": 100, "walltime": 50},
    ...                 {"started_at": 120, "walltime": 100}], margin=10)
    ((100, 230),)
    """
    spans = []
    for job in reservations:
        if ignore_besteffort and str(job.get("queue", "")).lower() == "besteffort":
            continue
        if str(job.get("state", "")).lower() in ("terminated", "error"):
            continue
        start = _int(job.get("started_at")) or _int(job.get("scheduled_at"))
        if not start:
            continue
        spans.append((start, start + max(0, _int(job.get("walltime"))) + margin))
    return merge(spans)


def usage_from_status(entry: Mapping[str, Any], *, margin: int = SECURITY_MARGIN,
                      check_hard: bool = True) -> Usage:
    """A status entry (``{"hard", "soft", "reservations"}``) as a `Usage`: absent, dead and suspected
    resources are not usable (``standby`` nodes are: OAR powers them on)."""
    state = str(entry.get("hard") or "alive").lower()
    usable = not (check_hard and state in UNUSABLE_STATES)
    return Usage(busy_intervals(entry.get("reservations") or (), margin=margin), usable, state)


def site_availability(status: Mapping[str, Any], *, margin: int = SECURITY_MARGIN) -> SiteAvailability:
    """Parse a site's status document (nodes, subnets and vlans, each keyed by name).

    >>> status = {"uid": 100, "nodes": {"a.lyon.grid5000.fr": {"hard": "dead", "reservations": []}},
    ...           "subnets": {"10.140.0.0/22": {"hard": "alive", "reservations": [
    ...               {"started_at": 50, "walltime": 100, "queue": "default", "state": "running"}]}},
    ...           "vlans": {"4": {"hard": "alive", "type": "kavlan", "reservations": []}}}
    >>> site = site_availability(status, margin=0)
    >>> site.nodes["a.lyon.grid5000.fr"].usable, site.subnets["10.140.0.0/22"].busy, site.vlans["4"][0]
    (False, ((50, 150),), 'kavlan')
    """
    def entries(key: str) -> Mapping[str, Any]:
        value = status.get(key) or {}
        return value if isinstance(value, Mapping) else {}

    return SiteAvailability(
        nodes={name: usage_from_status(entry, margin=margin) for name, entry in entries("nodes").items()},
        subnets={name: usage_from_status(entry, margin=margin) for name, entry in entries("subnets").items()},
        vlans={str(name): (str(entry.get("type") or ""), usage_from_status(entry, margin=margin))
               for name, entry in entries("vlans").items()},
    )


def hides_reservations(status: Mapping[str, Any]) -> bool:
    """True when the API left the reservations out (anonymous users get no job details)."""
    nodes = status.get("nodes") or {}
    return bool(nodes) and all("reservations" not in entry for entry in nodes.values())


def fetch_status(api: ApiClient, site: str) -> dict[str, Any]:
    status: dict[str, Any] = api.get(f"/sites/{site}/status", disks="no")
    return status


def fetch_availability(api: ApiClient, sites: Sequence[str], *, margin: int = SECURITY_MARGIN,
                       optional: Iterable[str] = ()) -> Availability:
    """The status of `sites`, read in parallel; `now` is the server's clock (the latest status ``uid``).

    A site in `optional` whose status cannot be read is left out with a warning (``-r grid5000`` can do
    without it); any other failure is raised.
    """
    optional = set(optional)

    def one(site: str) -> tuple[str, dict[str, Any] | ApiError]:
        try:
            return site, fetch_status(api, site)
        except ApiError as error:
            if site in optional:
                return site, error
            raise

    with ThreadPoolExecutor(max_workers=max(1, min(PARALLEL_SITES, len(sites)))) as pool:
        replies = list(pool.map(one, sites))
    out = Availability(now=0)
    for site, reply in replies:
        if isinstance(reply, ApiError):
            log.warning("leaving %s out of the plan: its status cannot be read (%s)", site, reply)
            continue
        if hides_reservations(reply):
            raise PlatformError(f"the API hides the jobs of {site} from this user (anonymous?): planning "
                                "would ignore them; configure credentials in ~/.python-grid5000.yaml")
        out.sites[site] = site_availability(reply, margin=margin)
        out.now = max(out.now, _int(reply.get("uid")))
    if out.now:
        api.note_server_time(out.now)
    else:
        out.now = api.server_now()
    return out


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
