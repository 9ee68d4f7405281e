"""Waits on the API notice the end of a job launch or a deployment soon after it happens (a fraction of the
time waited, not half of it), and still settle at one request per poll interval on long waits."""

from __future__ import annotations

import doctest
import itertools
import time
from typing import Any

import vm5k.platforms.grid5000.polling as polling
from vm5k.platforms.grid5000.kadeploy import DeploymentRecord, wait_deployments
from vm5k.platforms.grid5000.oar import JobRecord
from vm5k.platforms.grid5000.polling import FIRST_POLL, api_polling
from vm5k.platforms.grid5000.reservation import wait_running


def test_docstring_examples() -> None:
    failures, _ = doctest.testmod(polling)
    assert failures == 0


def test_delays_stay_a_small_fraction_of_the_wait_and_reach_the_poll_interval() -> None:
    waited = 0.0
    delays = list(itertools.islice(api_polling(10.0), 60))
    assert delays[0] == FIRST_POLL
    for delay in delays:
        assert delay <= min(10.0, FIRST_POLL + waited / 8 + 1e-9)
        waited += delay
    assert delays == sorted(delays)
    assert delays[-1] == 10.0
    assert sum(1 for d in delays if d < 10.0) <= 35  # a long wait soon polls at the interval only


class EndsAt:
    """A fake API whose job runs, and whose deployment ends, `seconds` (wall clock) after it was made."""

    def __init__(self, seconds: float) -> None:
        self.ready_at = time.monotonic() + seconds
        self.gets = 0

    def server_now(self) -> int:
        return 1_700_000_000

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        self.gets += 1
        ready = time.monotonic() >= self.ready_at
        if "/deployments/" in path:
            if not ready:
                return {"status": "processing"}
            return {"status": "terminated", "result": {"node-1.rennes.grid5000.fr": {"state": "OK"}}}
        return {"state": "running" if ready else "launching", "started_at": 1_700_000_000}


def test_a_deployment_end_is_noticed_within_a_fraction_of_the_wait() -> None:
    api = EndsAt(1.6)
    record = DeploymentRecord("rennes", "D-1", ["node-1.rennes.grid5000.fr"], "debian12-min")
    start = time.monotonic()
    wait_deployments(api, [record], poll=10.0)  # type: ignore[arg-type]
    took = time.monotonic() - start
    assert record.status == "terminated" and record.ko == {}
    assert 1.6 <= took < 1.6 + 0.5  # doubling delays (polls at 1, 3 s) noticed it after 3 s


def test_a_job_launch_is_noticed_within_a_fraction_of_a_second() -> None:
    api = EndsAt(1.1)
    job = JobRecord("rennes", 1, state="waiting")
    start = time.monotonic()
    wait_running(api, [job], report=lambda progress: None, poll=10.0)  # type: ignore[arg-type]
    took = time.monotonic() - start
    assert job.state == "running"
    assert 1.1 <= took < 1.1 + 0.4  # doubling delays (polls at 1, 3 s) noticed it after 3 s
