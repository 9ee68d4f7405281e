"""Waits on the API notice the end of a job launch or a deployment soon after it happens (a fraction of the
time waited, not half of it), and still settle at one request per poll interval on long waits."""

from __future__ import annotations

import doctest
import itertools
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


class VirtualTime:
    """A clock that moves only when the code under test sleeps: the waits are measured exactly, in no time."""

    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def clock(self) -> float:
        return self.now


class EndsAt:
    """A fake API whose job runs, and whose deployment ends, `seconds` after it was made."""

    def __init__(self, seconds: float, time: VirtualTime) -> None:
        self.ready_at = seconds
        self.time = time
        self.gets = 0

    def server_now(self) -> int:
        return 1_700_000_000

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        self.gets += 1
        ready = self.time.now >= self.ready_at
        if "/deployments/" in path:
            if not ready:
                return {"status": "processing"}
            return {"status": "terminated", "result": {"node-1.rennes.grid5000.fr": {"state": "OK"}}}
        return {"state": "running" if ready else "launching", "started_at": 1_700_000_000}


def test_a_deployment_end_is_noticed_within_a_fraction_of_the_wait() -> None:
    clock = VirtualTime()
    api = EndsAt(1.6, clock)
    record = DeploymentRecord("rennes", "D-1", ["node-1.rennes.grid5000.fr"], "debian12-min")
    wait_deployments(api, [record], poll=10.0, sleep=clock.sleep)  # type: ignore[arg-type]
    assert record.status == "terminated" and record.ko == {}
    # noticed at most an eighth of the wait after the end (doubling delays polled at 1 and 3 s: 1.4 s late)
    assert 1.6 <= clock.now <= 1.6 * (1 + 1 / 8) + 1e-9
    assert api.gets <= 6


def test_a_job_launch_is_noticed_within_a_fraction_of_a_second() -> None:
    clock = VirtualTime()
    api = EndsAt(1.1, clock)
    job = JobRecord("rennes", 1, state="waiting")
    wait_running(api, [job], report=lambda progress: None, poll=10.0,  # type: ignore[arg-type]
                 sleep=clock.sleep, clock=clock.clock)
    assert job.state == "running"
    assert 1.1 <= clock.now <= 1.1 + FIRST_POLL  # doubling delays (polls at 1, 3 s) noticed it 1.9 s late
