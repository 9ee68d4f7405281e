"""One run, one owner at a time: the outdir's lock, and the request to stop that ``destroy`` leaves.

Why a lock: two operations on one run (a deployment and a resume, a notebook and a shell) would write the
same topology.json and act on the same VMs, each believing its own record. The lock is an ``flock`` on
``OUTDIR/.vm5k.lock``: the kernel frees it when its holder dies, even by ``kill -9``, so a run never stays
locked by a dead process, and a record that says ``running`` while nobody holds the lock is an interrupted
run. The lock file also says who holds it (host, pid, operation, start), for the one-line refusal.

``destroy`` is the exception: it must be able to end a run whatever its owner is doing. It writes
``OUTDIR/.vm5k.stop`` (who asks), and the owner, which checks for that file between its steps and while it
waits inside them (`StopRequested`), saves its state and lets go; then the destroy takes the lock.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> with hold(folder, "deploy") as lock:
...     try:
...         hold(folder, "resume")
...     except RunBusy as busy:
...         print(str(busy).split(" (")[0].replace(str(folder), "OUTDIR"))
the run in OUTDIR is held by another vm5k: deploy by pid ...
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vm5k.errors import DeploymentError, UsageError, Vm5kError

LOCK_FILE = ".vm5k.lock"
STOP_FILE = ".vm5k.stop"


@dataclass(frozen=True)
class Holder:
    """Who holds (or asks to stop) a run."""

    host: str
    pid: int
    operation: str
    started: float

    @classmethod
    def me(cls, operation: str) -> Holder:
        return cls(socket.gethostname(), os.getpid(), operation, time.time())

    def describe(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.started))
        return f"{self.operation} by pid {self.pid} on {self.host} since {when}"

    def alive(self) -> bool:
        """False only when the process is known to be gone (same host, no such pid): a request left behind
        by a destroy that was killed must not stop later runs."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    @classmethod
    def read(cls, path: Path) -> Holder | None:
        try:
            data = json.loads(path.read_text())
            return cls(str(data["host"]), int(data["pid"]), str(data["operation"]), float(data["started"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


class RunBusy(UsageError):
    """Another process holds the run: refused at once, nothing touched."""


class StopRequested(DeploymentError):
    """``destroy`` asked the owner of the run to stop: it saves its state and lets go."""

    def __init__(self, by: Holder) -> None:
        super().__init__(f"the run is being destroyed by pid {by.pid} on {by.host}: stopped")
        self.by = by


class Lock:
    """The exclusive hold of one run's outdir (see the module docstring); `release` or a ``with`` block."""

    def __init__(self, folder: Path, holder: Holder, fd: int) -> None:
        self.folder = folder
        self.holder = holder
        self._fd: int | None = fd

    def check_stop(self) -> None:
        """Raise `StopRequested` when a destroy asked this run to stop (cheap: one ``stat``)."""
        path = self.folder / STOP_FILE
        if path.exists():
            asker = Holder.read(path)
            if asker is not None and asker.pid != self.holder.pid and asker.alive():
                raise StopRequested(asker)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor frees the flock

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(folder: Path, holder: Holder) -> Lock | None:
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(asdict(holder)).encode(), 0)
    return Lock(folder, holder, fd)


def holder_of(folder: Path) -> Holder | None:
    """Who holds the run in `folder` now, or None when nobody does (the lock is free)."""
    path = folder / LOCK_FILE
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return Holder.read(path) or Holder("?", 0, "?", 0.0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def hold(folder: Path, operation: str) -> Lock:
    """Take the run in `folder` for `operation`, or raise `RunBusy` naming the holder."""
    try:
        lock = _try_lock(folder, Holder.me(operation))
    except OSError as error:
        raise UsageError(f"cannot lock the run in {folder}: {error.strerror or error}") from None
    if lock is None:
        holder = Holder.read(folder / LOCK_FILE)
        who = holder.describe() if holder else "a process that has not said who it is yet"
        raise RunBusy(f"the run in {folder} is held by another vm5k: {who} (wait for it, or "
                      f"vm5k --destroy {folder} stops it)")
    return lock


def take_over(folder: Path, operation: str, timeout: float = 600.0, poll: float = 0.2) -> Lock:
    """Take the run for `operation` (``destroy``), asking its current holder to stop first if it has one.

    The request stays in ``.vm5k.stop`` until the lock is ours; the holder sees it within a second between
    or inside its steps. A holder that does not let go in `timeout` seconds is an error, and the request
    is withdrawn.
    """
    me = Holder.me(operation)
    try:
        lock = _try_lock(folder, me)
    except OSError as error:
        raise UsageError(f"cannot lock the run in {folder}: {error.strerror or error}") from None
    if lock is not None:
        return lock
    stop = folder / STOP_FILE
    stop.write_text(json.dumps(asdict(me)))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(poll)
            lock = _try_lock(folder, me)
            if lock is not None:
                return lock
        holder = Holder.read(folder / LOCK_FILE)
        who = holder.describe() if holder else "another vm5k"
        raise Vm5kError(f"the run in {folder} is still held by {who} after {timeout:.0f} s: it did not stop")
    finally:
        stop.unlink(missing_ok=True)
