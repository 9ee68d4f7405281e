"""The one interface for running commands and copying files on many hosts, whatever the transport.

Why: steps of the workflow (provisioning, disks, dnsmasq, ...) are written once against `Runner` and
work over SSH (:class:`vm5k.remote.SshRunner`) or on the machine vm5k runs on
(:class:`vm5k.remote.LocalRunner`), like execo's actions.

Commands are argument lists. The SSH runner joins them with :func:`shlex.join` (the remote side always
has a shell), the local runner executes them without a shell: in both cases every argument arrives as
one word, whatever it contains. Shell features (pipes, redirections) are written as a constant
``sh -c SCRIPT`` whose data comes in as positional parameters, like the helpers below.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from vm5k.remote.results import HostResult, Results

if TYPE_CHECKING:
    import asyncssh

    from vm5k.remote.known_hosts import KnownHostsStore

#: A shell function printing the hex sha256 of stdin. OpenSSL's (SHA extensions of current CPUs) hashes
#: about 8x faster than coreutils' sha256sum, which is the fallback: on a host that receives a 1 GiB image
#: while forwarding it, hashing is the biggest CPU cost after the ciphers.
SHA256_FUNCTION = r"""
vm5k_sha256() {
    if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r | cut -d' ' -f1
    else sha256sum | cut -d' ' -f1; fi
}
"""

#: Streams a file from stdin to a temporary name beside ``$1``, checks its size ``$5`` (a stream cut by
#: a dropped connection looks like a normal end of file) and ``$4`` (sha256, optional; hashed while
#: written, so a big file is not read twice), sets mode ``$3`` and renames it into place, so readers see
#: the old file or the whole new one.
PUT_SCRIPT = SHA256_FUNCTION + r"""
set -eu
dest=$1 tmp=$2 mode=$3 sum=$4 size=$5
trap 'rm -f -- "$tmp" "$tmp.fifo" "$tmp.sum"' EXIT
mkdir -p -- "$(dirname -- "$dest")"
umask 077
if [ -n "$sum" ]; then
    mkfifo -- "$tmp.fifo"
    vm5k_sha256 < "$tmp.fifo" > "$tmp.sum" &
    tee -- "$tmp.fifo" > "$tmp"
    wait
    got=$(cat "$tmp.sum")
    if [ "$got" != "$sum" ]; then echo "checksum mismatch: got $got, want $sum" >&2; exit 3; fi
else
    cat > "$tmp"
fi
got=$(wc -c < "$tmp")
if [ "$got" -ne "$size" ]; then echo "incomplete: $got of $size bytes" >&2; exit 3; fi
chmod "$mode" -- "$tmp"
mv -f -- "$tmp" "$dest"
trap - EXIT
"""

#: Prints the sha256 of ``$1`` if it is a regular file, nothing otherwise.
SHA256_SCRIPT = SHA256_FUNCTION + r"""
if [ -f "$1" ]; then vm5k_sha256 < "$1"; fi
"""


def command_line(argv: Sequence[str]) -> str:
    """The shell-safe command line for an argument list.

    >>> command_line(["echo", "a b", "$(reboot)"])
    "echo 'a b' '$(reboot)'"
    """
    check_argv(argv)
    return shlex.join(argv)


def check_argv(argv: Sequence[str]) -> Sequence[str]:
    """Refuse what is not a non-empty list of strings (a bare string would be split character-wise)."""
    if isinstance(argv, (str, bytes)) or not argv:
        raise TypeError("a command is a non-empty list of arguments, e.g. ['uname', '-r']")
    for arg in argv:
        if not isinstance(arg, str):
            raise TypeError(f"command arguments must be str, got {type(arg).__name__}: {arg!r}")
        if "\0" in arg:
            raise ValueError("command arguments cannot contain NUL bytes")
    return argv


def put_command(dest: str, mode: int, size: int, sha256: str | None = None) -> list[str]:
    """The argument list that installs stdin (``size`` bytes) at ``dest`` atomically (see `PUT_SCRIPT`)."""
    tmp = f"{dest}.vm5k-tmp-{secrets.token_hex(4)}"
    return ["sh", "-c", PUT_SCRIPT, "vm5k-put", dest, tmp, format(mode, "o"), sha256 or "", str(size)]


def sha256_command(path: str) -> list[str]:
    """The argument list that prints the sha256 of ``path`` (nothing if it is absent)."""
    return ["sh", "-c", SHA256_SCRIPT, "vm5k-sha256", path]


def host_paths(hosts: Sequence[str], dest: str | Path) -> dict[str, Path]:
    """Local destination of a fetched file per host: ``{host}`` in ``dest`` is replaced by the host.

    >>> host_paths(["a", "b"], "logs/{host}.log")
    {'a': PosixPath('logs/a.log'), 'b': PosixPath('logs/b.log')}
    """
    text = str(dest)
    if len(hosts) > 1 and "{host}" not in text:
        raise ValueError("fetching from several hosts needs '{host}' in the destination path")
    return {host: Path(text.replace("{host}", host)) for host in hosts}


@runtime_checkable
class Runner(Protocol):
    """Run commands and copy files on hosts; every method returns one result per host.

    A failed host never raises: its result says why (`HostResult.error` or a non-zero exit status).
    Use `Results.raise_on_failure` for all-or-nothing steps.
    """

    async def run(self, hosts: Iterable[str], command: Sequence[str], *, timeout: float | None = None,
                  input: str | bytes | None = None) -> Results:
        """Run the same command on every host."""
        ...

    async def run_each(self, commands: Mapping[str, Sequence[str]], *, timeout: float | None = None,
                       input: str | bytes | None = None) -> Results:
        """Run a command of its own on each host (host → argument list)."""
        ...

    async def put(self, hosts: Iterable[str], source: Path | bytes, dest: str, *, mode: int = 0o644,
                  sha256: str | None = None, timeout: float | None = None) -> Results:
        """Copy a local file (or bytes) to ``dest`` on every host, atomically."""
        ...

    async def get(self, hosts: Iterable[str], source: str, dest: str | Path, *,
                  timeout: float | None = None) -> Results:
        """Fetch ``source`` from each host to ``dest`` (``{host}`` in it names the host)."""
        ...

    async def write_text(self, hosts: Iterable[str], path: str, text: str, *, mode: int = 0o644,
                         timeout: float | None = None) -> Results:
        """Write a small text file atomically on every host."""
        ...

    async def sha256(self, hosts: Iterable[str], path: str, *,
                     timeout: float | None = None) -> dict[str, str | None]:
        """The sha256 of ``path`` on each reachable host (None where the file is absent)."""
        ...

    async def close(self) -> None:
        """Release connections and processes."""
        ...


@runtime_checkable
class TunnelRunner(Runner, Protocol):
    """A `Runner` whose connections to the hosts also carry tunnels, to what only the hosts reach.

    Why a protocol of its own: the VMs sit on networks only their hosts reach; their readiness is probed
    through a TCP channel of the host's connection, and logged into through it. A runner without
    connections (`vm5k.remote.LocalRunner`) cannot do that; `vm5k.remote.SshRunner` can.
    """

    async def connection(self, host: str) -> asyncssh.SSHClientConnection:
        """The live connection to ``host`` (opened if there is none yet), to open channels through."""
        ...

    @property
    def known_hosts(self) -> KnownHostsStore | None:
        """Where the host keys met through tunnels are checked and recorded (None: not checked)."""
        ...


def parse_sha256(results: Results) -> dict[str, str | None]:
    """Host → hex digest (None if the file is absent) for the hosts where the check ran."""
    found: dict[str, str | None] = {}
    for result in results:
        if result.ok:
            digest = result.stdout.strip()
            found[result.host] = digest if len(digest) == 64 else None
    return found


def failed(host: str, started: float, now: float, error: str, exc: BaseException | None = None,
           stdout: str = "", stderr: str = "") -> HostResult:
    """A result for an operation that did not get an exit status."""
    return HostResult(host=host, exit_status=None, stdout=stdout, stderr=stderr, duration=now - started,
                      error=error, exception=exc)
