"""Host-key checking for vm5k's SSH connections: a known_hosts file, trusted on first use or strictly.

Why not asyncssh's ``known_hosts=None``: that disables checking, and a deployment tool that talks to
hundreds of freshly installed hosts and VMs is exactly where a swapped machine would go unnoticed.
Instead each run keeps its own ``known_hosts`` (in the outdir): a host met for the first time has its
key recorded; afterwards the recorded key is the only one accepted. A host that comes back with another
key is refused with a message that says what changed and how to accept it on purpose.

Entries are written the way OpenSSH writes them (``host key`` or ``[host]:port key`` for a port other
than 22, where host is the config's HostName), so ``ssh -o UserKnownHostsFile=<outdir>/known_hosts``
checks against the same file.

>>> import tempfile, asyncssh
>>> store = KnownHostsStore(Path(tempfile.mkdtemp()) / "known_hosts", record_new=True)
>>> key = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
>>> store.accept("node-1", 22, key)          # first contact: recorded
True
>>> store.accept("node-1", 22, key)          # same key again
True
>>> other = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
>>> store.accept("node-1", 22, other)        # changed key: refused
False
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import asyncssh

log = logging.getLogger(__name__)


def known_hosts_pattern(host: str, port: int | None) -> str:
    """The host field of a known_hosts line, OpenSSH style."""
    return host if port in (None, 22) else f"[{host}]:{port}"


def _stamp(stat: os.stat_result) -> tuple[int, ...]:
    """What tells whether a file changed since it was read: inode, size and modification time."""
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def known_hosts_line(host: str, port: int | None, key: asyncssh.SSHKey) -> str:
    """One known_hosts line for ``key`` of ``host`` (no trailing newline)."""
    public = key.export_public_key("openssh").decode().split()
    return f"{known_hosts_pattern(host, port)} {public[0]} {public[1]}"


class KnownHostsStore:
    """A known_hosts file that vm5k reads before each connection and, optionally, records into.

    ``record_new``: record the key of a host that has no entry yet (trust on first use). Without it,
    a host without an entry is refused (strict checking).
    """

    def __init__(self, path: Path | None, *, record_new: bool) -> None:
        self.path = path
        self.record_new = record_new
        #: (host, port) → (offered fingerprint, recorded fingerprints) for hosts refused for a changed key
        self.mismatches: dict[tuple[str, int | None], tuple[str, list[str]]] = {}
        self._loaded: tuple[tuple[int, ...], asyncssh.SSHKnownHosts] | None = None
        if path is not None and record_new:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.close(fd)

    def _default_path(self) -> Path:
        return Path("~/.ssh/known_hosts").expanduser()

    def load(self) -> asyncssh.SSHKnownHosts:
        """The file's current content as asyncssh's known-hosts object (empty if there is no file).

        Passed as ``known_hosts=`` to asyncssh, which then accepts exactly the keys recorded here and
        calls :meth:`accept` (through the client object) for any other key.
        """
        path = self.path or self._default_path()
        # Read again only when the file changed (a key recorded, an edit): every connection and every VM
        # login asks for it, and parsing it is what grows with the fleet.
        try:
            stamp = _stamp(path.stat())
        except FileNotFoundError:
            stamp = ()
        if self._loaded is not None and self._loaded[0] == stamp:
            return self._loaded[1]
        try:
            text = path.read_text()
        except FileNotFoundError:
            text, stamp = "", ()
        known = asyncssh.import_known_hosts(text)
        self._loaded = (stamp, known)
        return known

    def recorded_keys(self, host: str, addr: str, port: int | None) -> list[asyncssh.SSHKey]:
        """The keys the file holds for ``host`` (matched by name, address and port as ssh does)."""
        port = None if port == 22 else port
        return list(self.load().match(host, addr, port)[0])

    def accept(self, host: str, port: int | None, key: asyncssh.SSHKey, addr: str = "") -> bool:
        """Decide on a key asyncssh did not find among the recorded ones for this host.

        True (after recording it) when the host has no entry and recording is on; False otherwise,
        remembering a changed key in :attr:`mismatches` for the error message.
        """
        recorded = self.recorded_keys(host, addr, port)
        if any(known == key for known in recorded):
            return True  # recorded meanwhile by another connection to the same host
        if recorded:
            self.mismatches[(host, port)] = (key.get_fingerprint(),
                                             [known.get_fingerprint() for known in recorded])
            log.warning("host key of %s changed: offered %s, recorded %s in %s", host,
                        key.get_fingerprint(), ", ".join(k.get_fingerprint() for k in recorded), self.path)
            return False
        if not self.record_new or self.path is None:
            return False
        line = known_hosts_line(host, port, key)
        with open(self.path, "a") as stream:
            before = os.fstat(stream.fileno())
            stream.write(line + "\n")
        self._add_to_loaded(line, before)
        log.info("recorded the host key of %s (%s) in %s", known_hosts_pattern(host, port),
                 key.get_fingerprint(), self.path)
        return True

    def _add_to_loaded(self, line: str, before: os.stat_result) -> None:
        """Add a line just appended to the parsed file too, instead of parsing the whole file again.

        Why: a first run records every host's and every VM's key in this file, and each following
        connection or login reads it; parsing it again after each new key made N keys cost N²/2 lines
        (59 ms per key at 11,000 lines: 305 s of CPU for 10,000 VMs, ``benchmarks/simulate_scale.py``).
        The parsed object is kept only if nobody else wrote the file meanwhile: it was parsed at the size
        the file had before this append, and the file now holds exactly that plus this line.
        """
        loaded = self._loaded
        self._loaded = None  # the same second may leave size and mtime alike after an edit elsewhere
        if loaded is None or self.path is None:
            return
        stamp, known = loaded
        try:
            after = self.path.stat()
        except FileNotFoundError:
            return
        if stamp == _stamp(before) and after.st_ino == before.st_ino and \
                after.st_size == before.st_size + len(line.encode()) + 1:
            known.load(line + "\n")
            self._loaded = (_stamp(after), known)

    def explain_refusal(self, host: str, port: int | None) -> str:
        """Why a host key was refused, in one line, with what to do about it."""
        where = self.path or self._default_path()
        mismatch = self.mismatches.get((host, port))
        if mismatch is not None:
            offered, recorded = mismatch
            return (f"host key changed: offered {offered}, but {where} records {', '.join(recorded)} for "
                    f"{known_hosts_pattern(host, port)} (if the host was reinstalled on purpose, remove its "
                    f"line from {where})")
        return (f"host key not trusted: {known_hosts_pattern(host, port)} has no entry in {where} "
                "and new keys are not recorded (strict checking)")


class HostKeyCheckingClient(asyncssh.SSHClient):
    """The asyncssh client object of every vm5k connection: routes unknown host keys to the store."""

    def __init__(self, store: KnownHostsStore) -> None:
        self._store = store

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        return self._store.accept(host, port, key, addr)
