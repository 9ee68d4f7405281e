"""Commands and copies on many hosts over SSH (asyncssh), with bounded parallelism.

Why this shape: one event loop drives hundreds of hosts without a process per host; a semaphore bounds
what is in flight (see `SshSettings.max_parallel`); each host's connection is opened once by the
:class:`ConnectionPool` and reused. When a connection drops under a command, the command reconnects
once and runs again: callers only send idempotent commands (the workflow is built on that).

>>> import asyncio
>>> async def main():
...     async with SshRunner(SshSettings(config_files=(Path("ssh_config"),))) as ssh:
...         results = await ssh.run(["node-1", "node-2"], ["uname", "-r"])
...         for result in results.ko:
...             print(result.describe())
...         await ssh.write_text(results.ok_hosts, "/tmp/vm5k-run/hello.txt", "hello\\n")
>>> # asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import asyncssh

from vm5k.errors import RemoteError
from vm5k.remote.connections import CONNECTION_DROPPED, ConnectionPool, check_host_name
from vm5k.remote.known_hosts import KnownHostsStore
from vm5k.remote.results import HostResult, Results
from vm5k.remote.runner import (
    check_argv,
    command_line,
    failed,
    host_paths,
    parse_sha256,
    put_command,
    sha256_command,
)
from vm5k.remote.settings import SshSettings

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT_STATUS = 124  # coreutils' timeout: the command ran out of time
LOCAL_GRACE = 10.0  # seconds the frontend waits beyond a command's own limit before giving up on it
T = TypeVar("T")


class SshRunner:
    """The SSH implementation of :class:`vm5k.remote.Runner` (see the module docstring)."""

    def __init__(self, settings: SshSettings | None = None) -> None:
        self.settings = settings or SshSettings()
        self.pool = ConnectionPool(self.settings)
        self._slots = asyncio.Semaphore(self.settings.max_parallel)
        self._host_slots: dict[str, asyncio.Semaphore] = {}

    async def __aenter__(self) -> SshRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.pool.close()

    async def connection(self, host: str) -> asyncssh.SSHClientConnection:
        """The live connection to ``host`` (`TunnelRunner`): opened with the retry policy if needed."""
        return await self.pool.connection(host)

    @property
    def known_hosts(self) -> KnownHostsStore:
        """The run's known_hosts (`TunnelRunner`)."""
        return self.pool.known_hosts

    # ------------------------------------------------------------------ public API
    async def run(self, hosts: Iterable[str], command: Sequence[str], *, timeout: float | None = None,
                  input: str | bytes | None = None) -> Results:
        """Run ``command`` (an argument list) on every host; one `HostResult` per host.

        >>> # results = await ssh.run(hosts, ["systemctl", "is-active", "libvirtd"], timeout=30)
        """
        check_argv(command)
        return await self._each(_hosts(hosts), lambda host: self._exec(host, command, timeout, input))

    async def run_each(self, commands: Mapping[str, Sequence[str]], *, timeout: float | None = None,
                       input: str | bytes | None = None) -> Results:
        """Run a command of its own on each host (host → argument list).

        >>> # await ssh.run_each({"node-1": ["virsh", "start", "vm-1"], "node-2": ["virsh", "start", "vm-2"]})
        """
        argvs = {check_host_name(host): check_argv(argv) for host, argv in commands.items()}
        return await self._each(list(argvs), lambda host: self._exec(host, argvs[host], timeout, input))

    async def put(self, hosts: Iterable[str], source: Path | bytes, dest: str, *, mode: int = 0o644,
                  sha256: str | None = None, timeout: float | None = None) -> Results:
        """Copy a local file (or bytes) to ``dest`` on every host, atomically (temp file + rename).

        With ``sha256``, each host checks what it received before installing it (exit status 3 if not).

        >>> # await ssh.put(hosts, Path("image.qcow2"), "/tmp/vm5k-run/image.qcow2", sha256=digest)
        """
        _check_path(dest)
        if isinstance(source, (bytes, bytearray)):
            data = bytes(source)
            return await self._each(_hosts(hosts), lambda host: self._exec(
                host, put_command(dest, mode, len(data), sha256), timeout, data))
        path = Path(source)
        if not path.is_file():
            raise RemoteError(f"cannot copy {path}: not a readable file")
        size = path.stat().st_size
        return await self._each(_hosts(hosts), lambda host: self.stream_file(
            host, path, put_command(dest, mode, size, sha256), timeout))

    async def get(self, hosts: Iterable[str], source: str, dest: str | Path, *,
                  timeout: float | None = None) -> Results:
        """Fetch ``source`` from each host into ``dest`` (``{host}`` in ``dest`` names the host).

        The local file appears only complete (written beside it, then renamed).

        >>> # await ssh.get(hosts, "/var/log/libvirt/qemu/vm-1.log", "logs/{host}-vm-1.log")
        """
        _check_path(source)
        host_list = _hosts(hosts)
        targets = host_paths(host_list, dest)
        return await self._each(host_list, lambda host: self._fetch(host, source, targets[host], timeout))

    async def write_text(self, hosts: Iterable[str], path: str, text: str, *, mode: int = 0o644,
                         timeout: float | None = None) -> Results:
        """Write a small text file atomically on every host.

        >>> # await ssh.write_text(hosts, "/tmp/vm5k-run/dhcp-hosts", "52:54:00:00:00:01,10.0.0.1\\n")
        """
        return await self.put(hosts, text.encode(), path, mode=mode, timeout=timeout)

    async def sha256(self, hosts: Iterable[str], path: str, *,
                     timeout: float | None = None) -> dict[str, str | None]:
        """The sha256 of ``path`` on each reachable host (None where it is absent); unreachable hosts
        are missing from the mapping."""
        return parse_sha256(await self.run(hosts, sha256_command(path), timeout=timeout))

    # ------------------------------------------------------------------ building blocks
    async def on_host(self, host: str,
                      operation: Callable[[asyncssh.SSHClientConnection], Awaitable[T]]) -> T:
        """Run ``operation(connection)`` for ``host``; if the connection drops, reconnect and run it again
        (once). Raises `RemoteError` (naming the host) when the host cannot be reached; used by the
        methods above and by the chain broadcast."""
        for attempt in (1, 2):
            try:
                conn = await self.pool.connection(host)
            except RemoteError:
                raise
            except (OSError, TimeoutError, asyncssh.Error) as exc:
                raise UnreachableError(f"{host}: cannot connect: {_reason(exc)}") from exc
            try:
                return await operation(conn)
            except CONNECTION_DROPPED as exc:
                self.pool.discard(host, conn)
                if attempt == 2:
                    raise UnreachableError(f"{host}: connection lost twice: {_reason(exc)}") from exc
                log.warning("%s: connection dropped (%s); reconnecting and running again", host,
                            _reason(exc))
        raise AssertionError("unreachable")

    async def stream_file(self, host: str, path: Path, command: Sequence[str],
                          timeout: float | None = None) -> HostResult:
        """Run ``command`` on ``host`` with the content of the local file ``path`` as its stdin."""
        line = command_line(command)

        async def feed(conn: asyncssh.SSHClientConnection) -> asyncssh.SSHCompletedProcess:
            # Closing the channel on the way out (cancelled, timed out) ends the remote reader too.
            async with await conn.create_process(line, encoding=None) as process:
                # If the command stops reading, its exit status tells why.
                with contextlib.suppress(BrokenPipeError):
                    await _copy_file_to(path, process.stdin)
                completed = await process.wait(check=False)
            return completed

        return await self._timed(host, feed, self._timeout(timeout))

    async def _exec(self, host: str, argv: Sequence[str], timeout: float | None,
                    input: str | bytes | None) -> HostResult:
        binary = isinstance(input, bytes)
        limit = self._timeout(timeout)
        # OpenSSH's sshd neither kills a command when its channel closes nor honours signal requests
        # without a terminal, so the time limit is enforced on the host by coreutils' timeout (which
        # kills the command's whole process group); the local limit only covers a hung connection.
        line = command_line(argv if limit is None else
                            ["timeout", "-k", "2", format(limit, "g"), *argv])

        async def run(conn: asyncssh.SSHClientConnection) -> asyncssh.SSHCompletedProcess:
            started = time.monotonic()
            # Without input the command reads an empty stdin (like </dev/null): it never waits for us.
            stdin = {"input": input} if input else {"stdin": asyncssh.DEVNULL}
            completed = await conn.run(line, check=False, encoding=None if binary else "utf-8",
                                       errors="replace", **stdin)
            if limit is not None and completed.exit_status in (TIMEOUT_STATUS, 128 + 9) \
                    and time.monotonic() - started >= limit:
                raise _CommandTimeout(completed.stdout, completed.stderr)
            return completed

        return await self._timed(host, run, limit, grace=LOCAL_GRACE)

    async def _fetch(self, host: str, source: str, dest: Path, timeout: float | None) -> HostResult:
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.vm5k-part")
        line = command_line(["cat", "--", source])

        async def fetch(conn: asyncssh.SSHClientConnection) -> asyncssh.SSHCompletedProcess:
            async with await conn.create_process(line, encoding=None, stdin=asyncssh.DEVNULL) as process:
                with open(partial, "wb") as stream:
                    while chunk := await process.stdout.read(CHUNK):
                        await asyncio.to_thread(stream.write, chunk)
                completed = await process.wait(check=False)
            return completed

        result = await self._timed(host, fetch, self._timeout(timeout))
        if result.ok:
            partial.replace(dest)
        else:
            partial.unlink(missing_ok=True)
        return result

    async def _timed(self, host: str, operation: Callable[[asyncssh.SSHClientConnection], Awaitable[object]],
                     timeout: float | None, *, grace: float = 0.0) -> HostResult:
        """Run one operation on one host with a timeout (connection set-up excluded: it has its own),
        and turn any outcome into a `HostResult`."""
        started = time.monotonic()

        async def bounded(conn: asyncssh.SSHClientConnection) -> object:
            try:
                async with asyncio.timeout(None if timeout is None else timeout + grace):
                    completed = await operation(conn)
            except TimeoutError as exc:
                raise _CommandTimeout(None, None) from exc
            if isinstance(completed, asyncssh.SSHCompletedProcess) and completed.exit_status is None \
                    and not completed.exit_signal and conn.is_closed():
                raise asyncssh.ConnectionLost("connection closed before the command ended")
            return completed

        sessions = self._host_slots.setdefault(host, asyncio.Semaphore(self.settings.sessions_per_host))
        try:
            async with sessions:
                completed = await self.on_host(host, bounded)
        except _CommandTimeout as exc:
            return failed(host, started, time.monotonic(), f"timed out after {timeout:g} s", exc,
                          _text(exc.stdout or ""), _text(exc.stderr or ""))
        except RemoteError as exc:
            return failed(host, started, time.monotonic(), str(exc).removeprefix(f"{host}: "), exc)
        except (OSError, asyncssh.Error) as exc:
            return failed(host, started, time.monotonic(), _reason(exc), exc)
        assert isinstance(completed, asyncssh.SSHCompletedProcess)
        status = completed.exit_status
        if status is None or status < 0:
            signal = completed.exit_signal[0] if completed.exit_signal else "unknown"
            return failed(host, started, time.monotonic(), f"killed by signal {signal}", None,
                          _text(completed.stdout or ""), _text(completed.stderr or ""))
        return HostResult(host=host, exit_status=status, stdout=_text(completed.stdout or ""),
                          stderr=_text(completed.stderr or ""), duration=time.monotonic() - started)

    async def _each(self, hosts: list[str], operation: Callable[[str], Awaitable[HostResult]]) -> Results:
        async def bounded(host: str) -> HostResult:
            async with self._slots:
                return await operation(host)

        return Results(await asyncio.gather(*(bounded(host) for host in hosts)))

    def _timeout(self, timeout: float | None) -> float | None:
        return timeout if timeout is not None else self.settings.command_timeout


async def _copy_file_to(path: Path, stdin: asyncssh.SSHWriter[bytes]) -> None:
    """Stream a local file into a remote process's stdin, then close it."""
    with open(path, "rb") as stream:
        while chunk := await asyncio.to_thread(stream.read, CHUNK):
            stdin.write(chunk)
            await stdin.drain()
    stdin.write_eof()


class UnreachableError(RemoteError):
    """A host could not be reached (after the retries), or its connection kept dropping."""


class _CommandTimeout(Exception):
    """A command or copy ran out of time; carries what it printed so far."""

    def __init__(self, stdout: str | bytes | None, stderr: str | bytes | None) -> None:
        super().__init__("timed out")
        self.stdout = stdout
        self.stderr = stderr


def _hosts(hosts: Iterable[str]) -> list[str]:
    if isinstance(hosts, str):
        raise TypeError("hosts is a list of host names, not a string")
    listed = [check_host_name(host) for host in hosts]
    if len(set(listed)) != len(listed):
        raise ValueError("a host appears twice in the host list")
    return listed


def _check_path(path: str) -> None:
    if not isinstance(path, str) or not path or "\0" in path or "\n" in path:
        raise ValueError(f"invalid remote path {path!r}")


def _text(data: str | bytes) -> str:
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


__all__ = ["SshRunner", "UnreachableError", "check_argv"]
