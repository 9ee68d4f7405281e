"""Running commands and tracking the daemons the testbed starts.

The machine has no init system: a killed daemon stays a zombie until whoever adopted it reaps it, so
"is it alive" reads `/proc/PID/stat` (a `Z` state is dead) instead of trusting `kill -0`. A PID is only
ever signalled together with the start time recorded when the testbed started it, so a recycled PID that
now belongs to someone else's process is never touched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from g5k_testbed.lab.errors import LabError


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 120, input: str | None = None,
        capture: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one command (an argument list, never a shell string); raise LabError with its stderr on failure."""
    try:
        proc = subprocess.run(list(argv), input=input, text=True, timeout=timeout,
                              stdout=subprocess.PIPE if capture else None,
                              stderr=subprocess.PIPE if capture else None, check=False)
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: command not found (run scripts/setup.sh)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise LabError(f"{' '.join(argv)}: exit {proc.returncode}: {' | '.join(detail[-3:])}")
    return proc


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    """The argument list that runs `argv` inside a named network namespace (and nothing else changed)."""
    return ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            raw = handle.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its closing one.
    return raw[raw.rindex(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot (field 22 of /proc/PID/stat), None if gone."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


@dataclass(frozen=True)
class ProcRef:
    """A process the testbed started: its PID and the start time that proves it is still the same one."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> ProcRef:
        started = start_time(pid)
        if started is None:
            raise LabError(f"process {pid} exited right after it was started")
        return cls(pid, started)

    def to_dict(self) -> dict[str, int]:
        return {"pid": self.pid, "start": self.start}

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> ProcRef:
        return cls(int(data["pid"]), int(data["start"]))

    def alive(self) -> bool:
        """True while the process runs (a zombie, or another process reusing the PID, is not alive)."""
        fields = _stat_fields(self.pid)
        return fields is not None and fields[0] not in ("Z", "X") and int(fields[19]) == self.start

    def signal(self, signum: int) -> bool:
        """Send a signal if this is still our process; False when it was already gone."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns once the process is dead or a zombie."""
        if not self.signal(signal.SIGTERM):
            return
        if wait_until(lambda: not self.alive(), grace):
            return
        self.signal(signal.SIGKILL)
        wait_until(lambda: not self.alive(), 10)


def children(pid: int) -> list[int]:
    """Direct children of a process (all its threads), from /proc."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found.extend(int(child) for child in handle.read().split())
        except FileNotFoundError:
            continue
    return found


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds passed; returns whether it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)

