"""How waits on the API poll (a job to run, a deployment to end): first after a quarter of a second, then
each delay an eighth longer than the one before, up to the platform's poll interval.

Why slowly growing: the end of a wait is noticed at the next poll, so the time lost is the delay then,
about an eighth of the time already waited. Delays that double lose up to half of it: two seconds of the
testbed's five-second deployments (polls at 1, 3 and 7 s), up to a second of its one-second job launches.
A long wait on Grid'5000 still settles at one request per poll interval, after some 30 requests (about
80 s for a 10 s interval).
"""

from __future__ import annotations

from collections.abc import Iterator

from vm5k.retry import polling_delays

FIRST_POLL = 0.25
POLL_GROWTH = 1.125


def api_polling(poll: float) -> Iterator[float]:
    """Delays between the polls of a wait on the API, growing slowly up to `poll` (module docstring).

    >>> import itertools
    >>> [round(d, 2) for d in itertools.islice(api_polling(10.0), 4)]
    [0.25, 0.28, 0.32, 0.36]
    """
    return polling_delays(poll, initial=FIRST_POLL, multiplier=POLL_GROWTH)
