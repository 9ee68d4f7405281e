"""Is a host already deployed? A marker file that vm5k writes after Kadeploy, read back over SSH.

Why a marker: Kadeploy leaves nothing vm5k can recognise, and the usual test ("is / on the 3rd
partition?") is true for any deployed environment, not the one asked for, and false on the testbed's
nodes (network namespaces, no partitions). So right after a successful deployment vm5k writes
``/var/lib/vm5k/deployed`` (``environment=<name>``, the deployment's id and ``jobs=<site>:<id>,...``, the
reservation it was deployed for) on each host. A host counts as deployed when vm5k can log in as root
with the run's key, the marker names the same environment, and it names a job of this run's reservation:
a node deployed under an earlier job, even one that somehow kept its system, is not provably deployed for
this one and is deployed again.
Kadeploy rewrites the whole system, and a host that went back to the standard environment (its job
ended, Grid'5000 redeployed it) has no marker: both are deployed again. On the testbed, a deployment
wipes what was written on the node, marker included, exactly the same way.

It runs through vm5k.remote (`Runner`), so the run's SSH settings (ssh_config, keys, ProxyJump through
the access gateway) apply; tests use a `LocalRunner` and a marker path of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vm5k.remote import Runner, SyncRunner

log = logging.getLogger(__name__)

MARKER = "/var/lib/vm5k/deployed"


def marker_text(environment: str, deployment: str | None = None, jobs: str | None = None) -> str:
    """The marker's content: ``key=value`` lines (`jobs`: the reservation's ``<site>:<id>``, by commas)."""
    lines = [f"environment={environment}"]
    if deployment:
        lines.append(f"deployment={deployment}")
    if jobs:
        lines.append(f"jobs={jobs}")
    return "\n".join(lines) + "\n"


def job_keys(site: str, ids: Sequence[int]) -> str:
    """How a marker names the jobs of a run on one site.

    >>> job_keys("rennes", [1001, 1003])
    'rennes:1001,rennes:1003'
    """
    return ",".join(f"{site}:{uid}" for uid in ids)


def parse_marker(text: str) -> dict[str, str]:
    """``key=value`` lines as a dict (other lines ignored).

    >>> parse_marker("environment=debian12-min\\ndeployment=D-1\\n")
    {'environment': 'debian12-min', 'deployment': 'D-1'}
    """
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


class DeploymentMarker:
    """Reads and writes the marker on hosts through a runner made by `runner_factory`."""

    def __init__(self, runner_factory: Callable[[], Runner], *, path: str = MARKER,
                 timeout: float = 30.0) -> None:
        self.runner_factory = runner_factory
        self.path = path
        self.timeout = timeout

    def _call(self, operation: Callable[[Any], Any]) -> Any:
        with SyncRunner(self.runner_factory) as runner:
            return operation(runner)

    def deployed(self, hosts: Sequence[str], environment: str,
                 jobs: Mapping[str, str] | None = None) -> set[str]:
        """The hosts that answer and carry a marker for `environment` (and, with `jobs`, host →
        ``job_keys`` of this run, naming one of those jobs)."""
        if not hosts:
            return set()
        results = self._call(lambda runner: runner.run(list(hosts), ["cat", self.path], timeout=self.timeout))
        found = set()
        for result in results:
            marker = parse_marker(result.stdout) if result.ok else {}
            wanted = set((jobs or {}).get(result.host, "").split(",")) - {""}
            same_job = jobs is None or bool(wanted & set(marker.get("jobs", "").split(",")))
            if result.ok and marker.get("environment") == environment and same_job:
                found.add(result.host)
            else:
                log.debug("%s is not deployed with %s (%s)", result.host, environment, result.describe())
        return found

    def mark(self, hosts: Sequence[str], environment: str, deployment: str | None = None,
             jobs: str | None = None) -> list[str]:
        """Write the marker on `hosts`; returns the hosts where that failed (logged, not fatal)."""
        if not hosts:
            return []
        text = marker_text(environment, deployment, jobs)
        results = self._call(lambda runner: runner.write_text(list(hosts), self.path, text, mode=0o644,
                                                              timeout=self.timeout))
        failed = [result.host for result in results if not result.ok]
        for result in results:
            if not result.ok:
                log.warning("could not mark %s as deployed: %s", result.host, result.describe())
        return failed
