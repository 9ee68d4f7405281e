"""Helpers of the Grid'5000 platform tests: a testbed API on 127.0.0.1 (NullBackend, frozen clock) and
the platform pointed at it. (A module of its own: ``tests/grid5000`` is no package, so that it does not
hide the ``grid5000`` library.)

The platform's waits call `sleep`; here `sleep` moves the testbed's clock instead of sleeping, so a
reservation tomorrow or a Kadeploy run takes no wall time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from g5k_testbed.auth import AuthConfig
from g5k_testbed.http_server import ServerHandle, start_server
from g5k_testbed.testbed import TestbedConfig
from vm5k.cli import parse_request
from vm5k.platforms.grid5000 import Grid5000Platform
from vm5k.platforms.grid5000.api import ApiClient, ApiError, is_transient
from vm5k.platforms.grid5000.credentials import ApiConfig
from vm5k.request import Request
from vm5k.retry import RetryPolicy

T0 = 1_700_000_000  # 2023-11-14 23:13:20 Europe/Paris
SITES = ["rennes", "nancy", "lyon"]
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests vm5k-test"


def make_server(**overrides: Any) -> ServerHandle:
    values: dict[str, Any] = {
        "sites": SITES, "admin": True, "frozen_clock": T0, "tick_interval": 0,
        "auth": AuthConfig(users=None, inside_user="alice"), "kadeploy_duration": 5,
    }
    values.update(overrides)
    return start_server(TestbedConfig(**values))


def advancing(server: ServerHandle) -> Callable[[float], None]:
    """A `sleep` that moves the testbed's clock (at least one second) instead of waiting."""
    def sleep(seconds: float) -> None:
        server.advance(max(1.0, float(seconds)))
    return sleep


#: The API's retry policy without the waits (python-grid5000's own retries still apply).
FAST_RETRY = RetryPolicy(attempts=8, initial_delay=0.0, max_delay=0.0, jitter=0.0, retry_on=(ApiError,),
                         retry_if=is_transient, what="Grid'5000 API call")


def make_platform(server: ServerHandle, **settings: Any) -> Grid5000Platform:
    api = ApiClient(ApiConfig(server.url), retry=FAST_RETRY, timeout=settings.pop("timeout", 30.0))
    settings.setdefault("sleep", advancing(server))
    settings.setdefault("poll", 1.0)
    settings.setdefault("public_key", PUBLIC_KEY)
    return Grid5000Platform(api, name="testbed", **settings)


def request_for(server: ServerHandle, *args: str) -> Request:
    """The Request the command line builds, pointed at the testbed's API."""
    request, _ = parse_request([*args, "-o", "/nonexistent/vm5k-out", "--api", server.url])
    return request


def jobs_on(server: ServerHandle, name: str | None = None, live: bool = True) -> list[Any]:
    """The server's own view: jobs (optionally of one name), live ones only by default."""
    out = []
    for oar in server.testbed.oar.values():
        for job in oar.jobs.values():
            if (name is None or job.name == name) and (not live or job.state in ("waiting", "launching",
                                                                                  "running")):
                out.append(job)
    return out
