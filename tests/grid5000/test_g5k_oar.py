"""OAR jobs exactly once, at the level of one submission, and OAR's words about dates."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from g5k_helpers import T0, make_server

from vm5k.platforms.grid5000.api import ApiClient, ApiError
from vm5k.platforms.grid5000.credentials import ApiConfig
from vm5k.platforms.grid5000.oar import (
    ReservationRefused,
    delete_job,
    job_payload,
    paris_date,
    parse_paris,
    refusal,
    submit_job,
)
from vm5k.retry import RetryPolicy

QUICK = RetryPolicy(attempts=3, initial_delay=0.4, max_delay=0.4, jitter=0.0, retry_on=(ApiError,))


class LateServer:
    """An API whose first submission times out on the client while the server creates the job later."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.jobs: list[dict[str, Any]] = []
        self.posts = 0

    def _create(self, data: dict[str, Any]) -> dict[str, Any]:
        job = {"uid": 100 + len(self.jobs), "name": data["name"], "state": "waiting"}
        self.jobs.append(job)
        return job

    def post(self, path: str, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.posts += 1
        if self.posts == 1:
            timer = threading.Timer(self.delay, self._create, (data,))
            timer.daemon = True  # a server that never acts must not keep the tests' process alive
            timer.start()
            raise ApiError("no reply (read timed out)", None, method="POST", path=path)
        return self._create(data)

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        if path.endswith("/jobs"):
            return {"items": [j for j in self.jobs if j["name"] == params["name"]]}
        return next(j for j in self.jobs if path.endswith(f"/{j['uid']}"))


def test_a_timed_out_submission_that_the_server_finishes_later_is_found_not_resent() -> None:
    server = LateServer(delay=0.2)
    payload = job_payload("nodes=1", "vm5k-x", start=None)
    job = submit_job(server, "rennes", payload, retry=QUICK)  # type: ignore[arg-type]
    assert server.posts == 1 and len(server.jobs) == 1 and job["uid"] == 100


def test_a_submission_the_server_never_saw_is_sent_again_once() -> None:
    server = LateServer(delay=3600)  # the first one never lands
    payload = job_payload("nodes=1", "vm5k-y", start=None)
    job = submit_job(server, "rennes", payload, retry=QUICK)  # type: ignore[arg-type]
    assert server.posts == 2 and job["uid"] == 100


def test_refusals_carry_the_proposed_date() -> None:
    error = ApiError('Request to http://oar/jobs.json failed with status 400: {"message": "Reservation '
                     'not valid --> KO (This reservation could run at 2023-11-15 01:13:20)"}', 400)
    refused = refusal("lyon", error)
    assert isinstance(refused, ReservationRefused)
    assert refused.could_run_at == T0 + 7200 and not refused.too_old
    old = refusal("lyon", ApiError("Reservation not valid --> KO (Reservation too old)", 400))
    assert old is not None and old.too_old and old.could_run_at is None
    assert refusal("lyon", ApiError("There are not enough resources", 400)) is None


def test_paris_dates_are_wall_clock_of_europe_paris() -> None:
    assert paris_date(T0) == "2023-11-14 23:13:20"  # UTC+1 in November
    assert paris_date(1_690_000_000) == "2023-07-22 06:26:40"  # UTC+2 in July
    assert parse_paris("2023-07-22 06:26:40") == 1_690_000_000 and parse_paris("2023-11-14 23:13") == T0 - 20


def test_refused_reservation_from_the_testbed() -> None:
    server = make_server(sites=["lyon"])
    try:
        api = ApiClient(ApiConfig(server.url))
        first = submit_job(api, "lyon", job_payload("{cluster='hercule'}/nodes=ALL,walltime=2:00:00", "a",
                                                    start=None))
        with pytest.raises(ReservationRefused) as caught:
            submit_job(api, "lyon", job_payload("{cluster='hercule'}/nodes=1,walltime=1:00:00", "b",
                                                start=T0 + 600))
        assert caught.value.could_run_at == T0 + 7200
        assert delete_job(api, "lyon", int(first["uid"])) is True
        assert delete_job(api, "lyon", int(first["uid"])) is False  # already killed: not an error
    finally:
        server.stop()
