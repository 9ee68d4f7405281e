"""The retry policy: attempts, backoff bounds, which failures retry, sync and async forms."""

from __future__ import annotations

import asyncio
import time

import pytest

from vm5k.retry import NO_RETRY, RetryPolicy


class Flaky:
    def __init__(self, failures: int, exc: BaseException) -> None:
        self.failures = failures
        self.exc = exc
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "done"

    async def async_call(self) -> str:
        return self()


def test_sync_retries_transient_errors_until_success() -> None:
    flaky = Flaky(2, ConnectionRefusedError("not yet"))
    assert RetryPolicy(attempts=3, initial_delay=0).call_sync(flaky) == "done"
    assert flaky.calls == 3


def test_async_gives_up_after_the_attempts_and_raises_the_last_error() -> None:
    flaky = Flaky(5, TimeoutError("slow"))
    with pytest.raises(TimeoutError, match="slow"):
        asyncio.run(RetryPolicy(attempts=3, initial_delay=0).call(flaky.async_call))
    assert flaky.calls == 3


def test_errors_outside_retry_on_are_raised_at_once() -> None:
    flaky = Flaky(1, ValueError("bad input"))
    with pytest.raises(ValueError):
        RetryPolicy(attempts=5, initial_delay=0).call_sync(flaky)
    assert flaky.calls == 1


def test_retry_if_can_veto_a_retry() -> None:
    flaky = Flaky(3, OSError(2, "no such host"))
    policy = RetryPolicy(attempts=5, initial_delay=0, retry_if=lambda exc: getattr(exc, "errno", 0) != 2)
    with pytest.raises(OSError):
        policy.call_sync(flaky)
    assert flaky.calls == 1


def test_no_retry_policy_tries_once() -> None:
    flaky = Flaky(1, ConnectionResetError())
    with pytest.raises(ConnectionResetError):
        NO_RETRY.call_sync(flaky)
    assert flaky.calls == 1


def test_delays_grow_exponentially_are_capped_and_jittered_downwards() -> None:
    policy = RetryPolicy(attempts=6, initial_delay=1, multiplier=2, max_delay=5, jitter=0.5)
    for _ in range(50):
        delays = list(policy.delays())
        assert len(delays) == 5
        for delay, ceiling in zip(delays, [1, 2, 4, 5, 5], strict=True):
            assert ceiling * 0.5 <= delay <= ceiling
    assert list(policy.with_(jitter=0).delays()) == [1, 2, 4, 5, 5]


def test_the_policy_really_waits_between_attempts() -> None:
    flaky = Flaky(2, ConnectionRefusedError())
    started = time.monotonic()
    RetryPolicy(attempts=3, initial_delay=0.1, multiplier=1, jitter=0).call_sync(flaky)
    assert time.monotonic() - started >= 0.2


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=2)
