"""The project's one retry policy: a few attempts, exponential backoff with jitter, a bounded delay.

Why one policy: SSH connections to freshly deployed hosts, calls to the Grid'5000 REST API and the
workflow's own steps all meet the same transient failures (a daemon not up yet, a gateway that drops a
connection, a 502). Every caller describes *what* retries (the exception types, or a predicate) and
reuses *how* it retries from here, so the behaviour and the log lines are the same everywhere.

The delay before attempt ``n + 1`` is ``min(max_delay, initial_delay * multiplier ** (n - 1))``, then
multiplied by a random factor in ``[1 - jitter, 1]`` so that hundreds of clients retrying together do
not hammer a server in lock step ("full jitter" with a floor).

>>> policy = RetryPolicy(attempts=3, initial_delay=0.0)
>>> calls = []
>>> def flaky():
...     calls.append(1)
...     if len(calls) < 3:
...         raise ConnectionRefusedError("not yet")
...     return "up"
>>> policy.call_sync(flaky)
'up'
>>> len(calls)
3
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Exceptions worth another try by default: the network and the clock (refused, reset, unreachable,
#: timed out). Programming errors and refusals (permission denied, bad input) are never retried.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, asyncio.TimeoutError)


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to try, how long to wait in between, and which failures deserve another try.

    attempts: total number of tries (1 means no retry).
    initial_delay: seconds before the second try.
    multiplier: growth factor of the delay after each failure.
    max_delay: upper bound of one delay, in seconds.
    jitter: fraction of the delay that is random (0 = deterministic, 1 = anywhere in [0, delay]).
    retry_on: exception types that are retried; anything else is raised at once.
    retry_if: optional extra test on a caught ``retry_on`` exception; returning False raises it at once
        (e.g. retry an ``OSError`` unless it is a name-resolution failure).
    what: a few words for the log ("connect to node-3"), overridable per call.
    """

    attempts: int = 5
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 10.0
    jitter: float = 0.5
    retry_on: tuple[type[BaseException], ...] = TRANSIENT_ERRORS
    retry_if: Callable[[BaseException], bool] | None = field(default=None, compare=False)
    what: str = "operation"

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("RetryPolicy delays must be >= 0 and the multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("RetryPolicy.jitter must be between 0 and 1")

    def with_(self, **changes: Any) -> RetryPolicy:
        """A copy with some fields changed, e.g. ``policy.with_(attempts=1)``."""
        return replace(self, **changes)

    def delays(self) -> Iterator[float]:
        """The waits between tries (``attempts - 1`` of them), jitter applied.

        >>> list(RetryPolicy(attempts=4, initial_delay=1, multiplier=3, max_delay=5, jitter=0).delays())
        [1.0, 3.0, 5.0]
        """
        delay = float(self.initial_delay)
        for _ in range(self.attempts - 1):
            bounded = min(self.max_delay, delay)
            yield bounded * (1 - self.jitter * random.random())
            delay *= self.multiplier

    def should_retry(self, exc: BaseException) -> bool:
        """True if ``exc`` is one of the failures this policy retries."""
        if not isinstance(exc, self.retry_on):
            return False
        return self.retry_if is None or bool(self.retry_if(exc))

    async def call(self, func: Callable[..., Awaitable[T]], *args: object, what: str | None = None,
                   **kwargs: object) -> T:
        """Await ``func(*args, **kwargs)`` until it succeeds or the attempts run out.

        The last failure is raised unchanged, so callers catch the same exceptions as without retry.
        """
        label = what or self.what
        waits = self.delays()
        attempt = 1
        while True:
            try:
                return await func(*args, **kwargs)
            except BaseException as exc:
                wait = self._next_wait(exc, waits, attempt, label)
                if wait is None:
                    raise
            await asyncio.sleep(wait)
            attempt += 1

    def call_sync(self, func: Callable[..., T], *args: object, what: str | None = None,
                  **kwargs: object) -> T:
        """The blocking form of :meth:`call`, for code that has no event loop."""
        label = what or self.what
        waits = self.delays()
        attempt = 1
        while True:
            try:
                return func(*args, **kwargs)
            except BaseException as exc:
                wait = self._next_wait(exc, waits, attempt, label)
                if wait is None:
                    raise
            time.sleep(wait)
            attempt += 1

    def _next_wait(self, exc: BaseException, waits: Iterator[float], attempt: int,
                   label: str) -> float | None:
        """The delay before the next try, or None when ``exc`` must be raised now."""
        if not self.should_retry(exc):
            return None
        wait = next(waits, None)
        if wait is None:
            log.debug("%s: giving up after %d attempts: %s", label, attempt, exc)
            return None
        log.debug("%s: attempt %d/%d failed (%s); retrying in %.2f s",
                  label, attempt, self.attempts, exc or type(exc).__name__, wait)
        return wait


#: No retry at all: for tests and for callers that handle failure themselves.
NO_RETRY = RetryPolicy(attempts=1)


def polling_delays(maximum: float, initial: float = 1.0, multiplier: float = 2.0) -> Iterator[float]:
    """Delays between polls of something that may be ready at once or only much later (a job, a
    deployment): short at first, so a quick answer costs no idle wait, then growing to `maximum` so a long
    wait does not hammer the server.

    >>> import itertools
    >>> list(itertools.islice(polling_delays(10.0), 6))
    [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    """
    delay = min(initial, maximum)
    while True:
        yield delay
        delay = min(delay * multiplier, maximum)
