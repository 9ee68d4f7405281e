"""Fixtures of the Grid'5000 platform tests (helpers live in g5k_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from g5k_helpers import make_platform, make_server

from g5k_testbed.http_server import ServerHandle
from vm5k.platforms.grid5000 import Grid5000Platform


@pytest.fixture
def server() -> Iterator[ServerHandle]:
    """A testbed API (rennes, nancy, lyon), clock frozen at T0, NullBackend."""
    handle = make_server()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def platform(server: ServerHandle) -> Grid5000Platform:
    return make_platform(server)
