"""The machine vm5k runs on (the frontend) behind the same interface as the SSH hosts.

Why: some steps run on the frontend (checksums, image preparation, key generation) and the same code
must not care where it runs. Host names given to a `LocalRunner` are labels of the results: each label
runs the command once, here, without a shell (the argument list is executed as is).

>>> import asyncio
>>> async def main():
...     local = LocalRunner()
...     results = await local.run(["frontend"], ["echo", "$(not run)"])
...     return results["frontend"].stdout
>>> asyncio.run(main())
'$(not run)\\n'
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path

from vm5k.remote.results import HostResult, Results
from vm5k.remote.runner import check_argv, failed, host_paths

LOCAL = "localhost"


class LocalRunner:
    """The local implementation of :class:`vm5k.remote.Runner`; ``max_parallel`` bounds subprocesses."""

    def __init__(self, *, max_parallel: int = 8, command_timeout: float | None = None) -> None:
        self._slots = asyncio.Semaphore(max_parallel)
        self.command_timeout = command_timeout
        self._processes: set[asyncio.subprocess.Process] = set()

    async def __aenter__(self) -> LocalRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Kill what still runs and reap it while the event loop runs (asyncio warns when a child ends
        after its loop closed)."""
        processes = list(self._processes)
        self._processes.clear()
        for process in processes:
            _kill_group(process)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(process.wait() for process in processes)), 5)

    async def run(self, hosts: Iterable[str], command: Sequence[str], *, timeout: float | None = None,
                  input: str | bytes | None = None) -> Results:
        """Run ``command`` once per label in ``hosts``, locally, without a shell."""
        argv = list(check_argv(command))
        return await self._each(_labels(hosts), lambda host: self._exec(host, argv, timeout, input))

    async def run_each(self, commands: Mapping[str, Sequence[str]], *, timeout: float | None = None,
                       input: str | bytes | None = None) -> Results:
        """Run a command per label (label → argument list), locally."""
        argvs = {host: list(check_argv(argv)) for host, argv in commands.items()}
        return await self._each(list(argvs), lambda host: self._exec(host, argvs[host], timeout, input))

    async def put(self, hosts: Iterable[str], source: Path | bytes, dest: str, *, mode: int = 0o644,
                  sha256: str | None = None, timeout: float | None = None) -> Results:
        """Copy a file (or bytes) to ``dest`` atomically; with several labels they all name this machine."""
        return await self._each(_labels(hosts), lambda host: self._in_thread(
            host, _install, source, Path(dest), mode, sha256))

    async def get(self, hosts: Iterable[str], source: str, dest: str | Path, *,
                  timeout: float | None = None) -> Results:
        """Copy ``source`` to ``dest`` (``{host}`` in it is replaced by the label)."""
        labels = _labels(hosts)
        targets = host_paths(labels, dest)
        return await self._each(labels, lambda host: self._in_thread(
            host, _install, Path(source), targets[host], None, None))

    async def write_text(self, hosts: Iterable[str], path: str, text: str, *, mode: int = 0o644,
                         timeout: float | None = None) -> Results:
        """Write a small text file atomically."""
        return await self.put(hosts, text.encode(), path, mode=mode)

    async def sha256(self, hosts: Iterable[str], path: str, *,
                     timeout: float | None = None) -> dict[str, str | None]:
        """The sha256 of a local file (None if absent), under each label."""
        digest = await asyncio.to_thread(file_sha256, Path(path)) if Path(path).is_file() else None
        return dict.fromkeys(_labels(hosts), digest)

    # ------------------------------------------------------------------ internals
    async def _exec(self, host: str, argv: list[str], timeout: float | None,
                    input: str | bytes | None) -> HostResult:
        started = time.monotonic()
        limit = timeout if timeout is not None else self.command_timeout
        data = input.encode() if isinstance(input, str) else input
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            return failed(host, started, time.monotonic(), f"cannot start {argv[0]}: {exc.strerror}", exc)
        self._processes.add(process)
        try:
            async with asyncio.timeout(limit):
                stdout, stderr = await process.communicate(data)
        except TimeoutError as exc:
            _kill_group(process)
            await process.wait()
            self._processes.discard(process)
            return failed(host, started, time.monotonic(), f"timed out after {limit:g} s", exc)
        except BaseException:
            _kill_group(process)  # cancelled (Ctrl-C, a failing step): never leave the command running;
            raise  # close() reaps it
        self._processes.discard(process)
        status = process.returncode
        assert status is not None
        return HostResult(host=host, exit_status=status if status >= 0 else None,
                          stdout=stdout.decode("utf-8", "replace"), stderr=stderr.decode("utf-8", "replace"),
                          duration=time.monotonic() - started,
                          error=None if status >= 0 else f"killed by signal {-status}")

    async def _in_thread(self, host: str, func: Callable[..., None], *args: object) -> HostResult:
        started = time.monotonic()
        try:
            await asyncio.to_thread(func, *args)
        except (OSError, ValueError) as exc:
            return failed(host, started, time.monotonic(), str(exc), exc)
        return HostResult(host=host, exit_status=0, duration=time.monotonic() - started)

    async def _each(self, hosts: list[str], operation: Callable[[str], Awaitable[HostResult]]) -> Results:
        async def bounded(host: str) -> HostResult:
            async with self._slots:
                return await operation(host)

        return Results(await asyncio.gather(*(bounded(host) for host in hosts)))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a local file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _install(source: Path | bytes, dest: Path, mode: int | None, sha256: str | None) -> None:
    """Copy ``source`` beside ``dest``, check it, then rename it into place (atomic)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.vm5k-tmp-{secrets.token_hex(4)}")
    try:
        if isinstance(source, (bytes, bytearray)):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as stream:
                stream.write(source)
        else:
            shutil.copyfile(source, tmp)
        if sha256 is not None and file_sha256(tmp) != sha256:
            raise ValueError(f"checksum mismatch for {dest}")
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _kill_group(process: asyncio.subprocess.Process) -> None:
    """Kill a command we started and whatever it started (its own session)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _labels(hosts: Iterable[str]) -> list[str]:
    if isinstance(hosts, str):
        raise TypeError("hosts is a list of labels, not a string")
    labels = list(hosts)
    if len(set(labels)) != len(labels):
        raise ValueError("a label appears twice in the host list")
    return labels
