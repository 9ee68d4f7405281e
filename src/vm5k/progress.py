"""How a run shows its progress: a live bar per step on a terminal, plain log lines otherwise.

Steps report through two callbacks: the hypervisor's ``(step, done, total, message)`` and the platform's
`vm5k.platforms.ProgressReport` (a message and the jobs or deployments being waited for). On a terminal, a
rich progress bar shares the logging console, so log lines scroll above it; in a pipe or a file, a line is
logged whenever the message changes (at most every few seconds for the same step), never a control code.
At the end, `Reporter.summary` gives the table of step durations the original printed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vm5k import log as vm5k_log
from vm5k.platforms import ProgressReport

log = logging.getLogger(__name__)

#: In plain mode, the same step logs a changed message at most this often (seconds), except at its end.
PLAIN_INTERVAL = 5.0


class Reporter:
    """Progress of the steps of one run, and their durations."""

    def __init__(self, live: bool | None = None) -> None:
        self.console = vm5k_log.console() if live is not False else None
        self.durations: dict[str, float] = {}
        self._bar: Any = None
        self._task: Any = None
        self._last: dict[str, tuple[float, str]] = {}

    @contextmanager
    def step(self, name: str, title: str) -> Iterator[None]:
        """Announce a step, show its progress while it runs, record its duration (also when it fails)."""
        log.info("%s: %s", name, title)
        start = time.monotonic()
        if self.console is not None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("[bold]{task.fields[step]}"), BarColumn(),
                                 TextColumn("{task.description}"), TimeElapsedColumn(),
                                 console=self.console, transient=True)
            self._task = self._bar.add_task(title, step=name, total=None)
            self._bar.start()
        try:
            yield
        finally:
            if self._bar is not None:
                self._bar.stop()
                self._bar = self._task = None
            self.durations[name] = self.durations.get(name, 0.0) + time.monotonic() - start

    def hypervisor(self, step: str, done: int, total: int, message: str) -> None:
        """The hypervisor steps' callback."""
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total or None, description=message)
            return
        self._plain(step, f"{done}/{total} {message}", final=total > 0 and done >= total)

    def platform(self, progress: ProgressReport) -> None:
        """The platform's callback (jobs and deployments being waited for)."""
        items = ", ".join(f"{item.name} {item.state}" + (f" ({item.left} s left)" if item.left else "")
                          for item in progress.items)
        message = progress.message + (f": {items}" if items else "")
        if self._bar is not None:
            self._bar.update(self._task, description=message)
            return
        self._plain(progress.step, message, final=False)

    def _plain(self, step: str, message: str, *, final: bool) -> None:
        now = time.monotonic()
        last_time, last_message = self._last.get(step, (0.0, ""))
        if message == last_message or (not final and now - last_time < PLAIN_INTERVAL):
            return
        self._last[step] = (now, message)
        log.info("  %s: %s", step, message)

    def summary(self) -> str:
        """The step durations, one aligned line each, and the total."""
        if not self.durations:
            return ""
        width = max(len(name) for name in self.durations)
        lines = [f"  {name.ljust(width)}  {format_duration(seconds)}"
                 for name, seconds in self.durations.items()]
        lines.append(f"  {'total'.ljust(width)}  {format_duration(sum(self.durations.values()))}")
        return "\n".join(lines)


def format_duration(seconds: float) -> str:
    """``1:02:03``, ``2:03`` or ``4.2 s``.

    >>> format_duration(4.21), format_duration(123), format_duration(3723)
    ('4.2 s', '2:03', '1:02:03')
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
