"""The testbed's clock: the wall clock by default, shifted or frozen on request.

Tests fast-forward it (a reservation tomorrow, a walltime expiry) instead of sleeping, and clients plan
on it (every reply carries it in its HTTP `Date` header). Only forward moves are allowed, so that no job
ever sees time run backwards.
"""

from __future__ import annotations

import threading
import time


class Clock:
    """Wall clock plus an offset; optionally frozen at one instant (fully deterministic tests).

    >>> clock = Clock(frozen_at=1_700_000_000)
    >>> clock.advance(3600); clock.now()
    1700003600.0
    """

    def __init__(self, offset: float = 0.0, frozen_at: float | None = None) -> None:
        self._lock = threading.Lock()
        self._offset = float(offset)
        self._frozen_at = None if frozen_at is None else float(frozen_at)

    def now(self) -> float:
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at
            return time.time() + self._offset

    def seconds(self) -> int:
        """The current time in whole epoch seconds, as the API shows times."""
        return int(self.now())

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    @property
    def offset(self) -> float:
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at - time.time()
            return self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the testbed clock only moves forward")
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += seconds
            else:
                self._offset += seconds

    def set(self, epoch: float) -> None:
        """Jump to `epoch` (never backwards)."""
        current = self.now()
        if epoch < current - 1e-6:
            raise ValueError("the testbed clock only moves forward")
        self.advance(epoch - current)

    def freeze(self) -> None:
        with self._lock:
            if self._frozen_at is None:
                self._frozen_at = time.time() + self._offset

    def unfreeze(self) -> None:
        with self._lock:
            if self._frozen_at is not None:
                self._offset = self._frozen_at - time.time()
                self._frozen_at = None

    def to_dict(self) -> dict[str, float | bool]:
        return {"offset": self.offset, "frozen": self.frozen}
