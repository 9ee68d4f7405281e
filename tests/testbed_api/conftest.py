"""Fixtures: each test gets its own API server on 127.0.0.1, port 0, with a frozen clock it can move."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from grid5000 import Grid5000

from g5k_testbed.auth import AuthConfig
from g5k_testbed.http_server import ServerHandle, start_server
from g5k_testbed.testbed import TestbedConfig

T0 = 1_700_000_000  # 2023-11-14 23:13:20 Europe/Paris


def make_config(**overrides: object) -> TestbedConfig:
    values: dict[str, object] = {
        "sites": ["rennes", "nancy", "lyon"],
        "admin": True,
        "frozen_clock": T0,
        "tick_interval": 0,
        "auth": AuthConfig(users=None, inside_user="alice"),
    }
    values.update(overrides)
    return TestbedConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[ServerHandle]:
    handle = start_server(make_config())
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def gk(server: ServerHandle) -> Grid5000:
    """python-grid5000, unchanged, pointed at the testbed (never at its default api.grid5000.fr)."""
    return Grid5000(uri=server.url)
