"""When resources are busy: OAR's status as sorted busy intervals, and the starts they leave free.

Part of the pure planner (see ``vm5k.platforms.grid5000.planning``): no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from vm5k.platforms.grid5000.planning.common import INFINITY, Interval

# ---------------------------------------------------------------------------------------------------
# availability: OAR status


@dataclass(frozen=True, slots=True)
class Usage:
    """One OAR resource: busy intervals [start, end) (sorted, merged) and whether OAR may use it."""

    busy: tuple[Interval, ...] = ()
    usable: bool = True
    state: str = "alive"


@dataclass
class SiteAvailability:
    """A site's status: nodes by FQDN, /22 subnets by CIDR, vlans by id as ``(kind, usage)``."""

    nodes: dict[str, Usage] = field(default_factory=dict)
    subnets: dict[str, Usage] = field(default_factory=dict)
    vlans: dict[str, tuple[str, Usage]] = field(default_factory=dict)


@dataclass
class Availability:
    """The status of every site, read at `now` (epoch seconds on the API server's clock)."""

    now: int
    sites: dict[str, SiteAvailability] = field(default_factory=dict)


def merge(spans: Iterable[Interval]) -> tuple[Interval, ...]:
    """Sorted, overlapping or touching intervals joined.

    >>> merge([(5, 8), (1, 3), (3, 4), (7, 9)])
    ((1, 4), (5, 9))
    """
    out: list[Interval] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return tuple(out)


def valid_starts(busy: Sequence[Interval], length: int, not_before: int) -> list[Interval]:
    """The closed intervals of start times t ≥ `not_before` at which [t, t + length) meets no busy span.

    >>> valid_starts(((100, 200), (260, 400)), 50, 0)
    [(0, 50), (200, 210), (400, 4611686018427387904)]
    """
    out = []
    gap_start = not_before
    for start, end in busy:
        if end <= not_before:
            continue
        if start - length >= gap_start:
            out.append((gap_start, start - length))
        gap_start = max(gap_start, end)
    out.append((gap_start, INFINITY))
    return out


def is_free(busy: Sequence[Interval], start: int, length: int) -> bool:
    """True when [start, start + length) meets none of the sorted busy intervals."""
    index = bisect.bisect_right(busy, (start, INFINITY))
    if index and busy[index - 1][1] > start:
        return False
    return index >= len(busy) or busy[index][0] >= start + length
