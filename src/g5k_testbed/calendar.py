"""Busy intervals of one schedulable resource (a node, a /22 subnet, a vlan), kept sorted.

A resource is held by at most one job at a time, so its intervals never overlap and both their starts and
their ends are sorted: every question the scheduler asks ("free over [a, b)?", "first gap of length L after
t?") is a binary search plus a short walk, never a scan over all jobs.

>>> cal = Calendar(); cal.add(100, 200, 1); cal.add(300, 400, 2)
>>> cal.is_free(200, 300), cal.is_free(150, 250), cal.next_free(120, 100), cal.next_free(120, 150)
(True, False, 200, 400)
"""

from __future__ import annotations

from bisect import bisect_right, insort


class Calendar:
    __slots__ = ("ends", "owners", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.owners: list[int] = []

    def __len__(self) -> int:
        return len(self.starts)

    def add(self, start: int, end: int, owner: int) -> None:
        if end <= start:
            raise ValueError("empty interval")
        if not self.is_free(start, end):
            raise ValueError(f"resource already busy over [{start}, {end})")
        index = bisect_right(self.starts, start)
        self.starts.insert(index, start)
        self.ends.insert(index, end)
        self.owners.insert(index, owner)

    def remove(self, owner: int) -> None:
        for index in range(len(self.owners) - 1, -1, -1):
            if self.owners[index] == owner:
                del self.starts[index], self.ends[index], self.owners[index]

    def is_free(self, start: int, end: int) -> bool:
        index = bisect_right(self.ends, start)  # first interval ending after `start`
        return index == len(self.starts) or self.starts[index] >= end

    def next_free(self, t: int, length: int) -> int:
        """The earliest s >= t such that [s, s + length) is free."""
        index = bisect_right(self.ends, t)
        s = t
        while index < len(self.starts) and self.starts[index] < s + length:
            s = max(s, self.ends[index])
            index += 1
        return s

    def next_end_after(self, t: int) -> int | None:
        index = bisect_right(self.ends, t)
        return self.ends[index] if index < len(self.ends) else None

    def owners_at(self, t: int) -> list[int]:
        """Jobs holding the resource at instant t."""
        index = bisect_right(self.ends, t)
        out = []
        while index < len(self.starts) and self.starts[index] <= t:
            out.append(self.owners[index])
            index += 1
        return out

    def all_owners(self) -> list[int]:
        return list(self.owners)


def insort_unique(values: list[int], value: int) -> None:
    """Insert into a sorted list unless already present."""
    index = bisect_right(values, value)
    if index == 0 or values[index - 1] != value:
        insort(values, value)
