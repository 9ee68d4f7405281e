"""One way for tests to wait on something that happens in another thread or process.

Deployment workers, booting nodes and VMs report on their own schedule: a test polls for the outcome,
with a bound, rather than assuming the work is done the moment a call returns (the race that once made
the Kadeploy contract test fail on a loaded CI machine).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.5) -> T:
    """Call `predicate` until it returns something true and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
