"""Is a VM up? Probed through vm5k's own SSH connection to its host, one stage after the other.

Why through the host: VMs sit on the hosts' network, which the frontend may not route to (Grid'5000 from
outside, the testbed's namespaces from this machine). Every probe is a ``direct-tcpip`` channel of the
host's existing SSH connection (what ``ssh -J host`` does), so probing costs no new connection to the host.

The stages a VM goes through, each one proven by the probe that reaches it:

    defined → running → address → banner → login
    (virsh)   (virsh)   (TCP/22   (an SSH  (the run's key is accepted and a command runs:
                        answers   banner   the VM is "OK")
                        or is     is read)
                        refused)

A VM's host key is checked like any host's: recorded in the run's ``known_hosts`` the first time, refused
if it changes afterwards (a recreated VM generates new keys, so its line is forgotten when it is recreated).

>>> Probe("banner", "SSH-2.0-dropbear").reached("address")
True
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from vm5k.remote import TunnelRunner
from vm5k.remote.connections import ENCRYPTION_ALGS
from vm5k.remote.known_hosts import KnownHostsStore
from vm5k.remote.runner import command_line

log = logging.getLogger(__name__)

STAGES = ("planned", "defined", "running", "address", "banner", "login")
#: Host key algorithms in OpenSSH's order of preference. asyncssh's default puts RSA first, and some small
#: servers (dropbear among them) advertise RSA without holding an RSA key, then drop the connection.
HOST_KEY_ALGS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")
CHANNEL_TIMEOUT = 6.0
BANNER_TIMEOUT = 5.0
LOGIN_TIMEOUT = 20.0


@dataclass(frozen=True)
class Probe:
    """The stage a probe proved, and a detail (an error, the banner, the guest's hostname)."""

    stage: str
    detail: str = ""

    def reached(self, stage: str) -> bool:
        return STAGES.index(self.stage) >= STAGES.index(stage)


class _VmKeys(asyncssh.SSHClient):
    """Host-key policy for VMs: the run's known_hosts store, or trust on first use in memory."""

    def __init__(self, store: KnownHostsStore | None, memory: dict[str, asyncssh.SSHKey]) -> None:
        self._store = store
        self._memory = memory

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        if self._store is not None and self._store.record_new and self._store.path is not None:
            return self._store.accept(host, port, key, addr)
        known = self._memory.setdefault(host, key)
        return known == key


def forget_host_key(path: Path | None, address: str) -> bool:
    """Remove the known_hosts lines of `address` (port 22), atomically; True if some were removed."""
    if path is None or not path.exists():
        return False
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.split(" ", 1)[0] not in (address, f"[{address}]:22")]
    if len(kept) == len(lines):
        return False
    tmp = path.with_name(f".{path.name}.vm5k-tmp")
    tmp.write_text("".join(kept))
    os.chmod(tmp, path.stat().st_mode & 0o777)
    tmp.replace(path)
    return True


class VmProber:
    """Probes VMs through their hosts' connections (see the module docstring)."""

    def __init__(self, ssh: TunnelRunner, private_key: str | None, user: str = "root") -> None:
        self.ssh = ssh
        self.user = user
        self.keys = [asyncssh.read_private_key(private_key)] if private_key else []
        self.store: KnownHostsStore | None = ssh.known_hosts
        self._memory: dict[str, asyncssh.SSHKey] = {}

    def forget(self, address: str) -> None:
        """Forget a VM's host key (it is being recreated and will make new ones)."""
        self._memory.pop(address, None)
        if self.store is not None and self.store.record_new and forget_host_key(self.store.path, address):
            log.debug("forgot the host key of %s", address)

    async def probe(self, host: str, address: str) -> Probe:
        """How far a VM answers: ``running`` (nothing yet), ``address``, ``banner`` or ``login``.

        Raises the SSH layer's errors when the *host* cannot be reached.
        """
        conn = await self.ssh.connection(host)
        try:
            reader, writer = await asyncio.wait_for(conn.open_connection(address, 22), CHANNEL_TIMEOUT)
        except asyncssh.ChannelOpenError as error:
            reason = error.reason or str(error)
            if "refused" in reason.lower():
                return Probe("address", "port 22 refused")
            return Probe("running", reason)
        except TimeoutError:
            return Probe("running", "no answer on port 22")
        try:
            line = await asyncio.wait_for(reader.readline(), BANNER_TIMEOUT)
        except (TimeoutError, asyncssh.Error, OSError):
            line = ""
        finally:
            writer.close()
        banner = line.strip() if isinstance(line, str) else line.decode(errors="replace").strip()
        if not banner.startswith("SSH-"):
            return Probe("address", "port 22 open, no SSH banner yet")
        if not self.keys:
            return Probe("banner", banner)
        return await self._login(conn, address, banner)

    async def _login(self, conn: asyncssh.SSHClientConnection, address: str, banner: str) -> Probe:
        store = self.store
        usable = store is not None and store.path is not None
        known = store.load() if usable and store is not None else asyncssh.import_known_hosts("")
        try:
            async with asyncio.timeout(LOGIN_TIMEOUT):
                async with asyncssh.connect(
                        address, tunnel=conn, username=self.user, client_keys=self.keys, known_hosts=known,
                        client_factory=lambda: _VmKeys(store, self._memory), agent_path=None,
                        config=None, connect_timeout=LOGIN_TIMEOUT, encryption_algs=list(ENCRYPTION_ALGS),
                        server_host_key_algs=list(HOST_KEY_ALGS)) as vm:
                    result = await vm.run("hostname", check=False)
        except asyncssh.PermissionDenied as error:
            return Probe("banner", f"key refused: {error.reason}")
        except asyncssh.HostKeyNotVerifiable:
            return Probe("banner", "host key changed")
        except (asyncssh.Error, OSError, TimeoutError) as error:
            return Probe("banner", f"login failed: {str(error) or type(error).__name__}")
        if result.exit_status != 0:
            return Probe("banner", f"command failed with status {result.exit_status}")
        return Probe("login", str(result.stdout or "").strip())


# ------------------------------------------------------------------------------------------- domain events

#: One long-running command per host for all its VMs: libvirt's lifecycle events as they happen, instead of
#: a ``virsh list`` every few seconds (a process and an SSH session each time, on hosts that share their
#: cores with the booting VMs). It ends when its stdin closes (the channel or the connection did), since
#: sshd does not end a command whose channel closed.
EVENTS_SCRIPT = r"""
virsh -q -c qemu:///system event --loop --event lifecycle &
events=$!
cat >/dev/null
kill $events 2>/dev/null
wait $events 2>/dev/null
exit 0
"""
#: "event 'lifecycle' for domain 'NAME': Started Booted" (older virsh: no quotes around NAME)
EVENT_LINE = re.compile(r"^event 'lifecycle' for domain '?(?P<domain>[^':]+)'?: (?P<event>\w+)")
#: libvirt's lifecycle events → the state vm5k follows ("running", or why it is not)
EVENT_STATES = {"Started": "running", "Resumed": "running", "Stopped": "shut off", "Shutdown": "shut off",
                "Crashed": "crashed", "Undefined": "disappeared", "Suspended": "paused"}


def parse_event(line: str) -> tuple[str, str] | None:
    """(domain name, state) of one line of ``virsh event --event lifecycle``; None for other lines.

    >>> parse_event("event 'lifecycle' for domain 'vm5k-r1-vm-1': Stopped Destroyed")
    ('vm5k-r1-vm-1', 'shut off')
    >>> parse_event("event 'lifecycle' for domain vm-2: Started Booted")
    ('vm-2', 'running')
    >>> parse_event("event loop timed out") is None
    True
    """
    match = EVENT_LINE.match(line.strip())
    if match is None or match.group("event") not in EVENT_STATES:
        return None
    return match.group("domain"), EVENT_STATES[match.group("event")]


class DomainEvents:
    """The lifecycle events of one host's domains, streamed over its SSH connection (see EVENTS_SCRIPT).

    ``started[domain]``: when the last "Started" event arrived; ``state[domain]``: (state, when it arrived).
    A VM started at ``since`` stopped by itself when a "Started" event came after ``since`` and a
    non-running state after that one (events of one host arrive in order); or, when its "Started" event
    was missed (the stream began listening after the start), a non-running state ``grace`` seconds after
    ``since`` (an earlier destroy's event may arrive just after the start was asked).
    """

    def __init__(self) -> None:
        self.state: dict[str, tuple[str, float]] = {}
        self.started: dict[str, float] = {}
        self.listening = asyncio.Event()

    def note(self, line: str, clock: Callable[[], float] = time.monotonic) -> None:
        event = parse_event(line)
        if event is None:
            return
        domain, state = event
        now = clock()
        if state == "running":
            self.started[domain] = now
        self.state[domain] = (state, now)

    def stopped(self, domain: str, since: float, grace: float = 4.0) -> str | None:
        """The state a domain started at ``since`` fell into by itself (None while it runs).

        >>> events = DomainEvents()
        >>> events.note("event 'lifecycle' for domain 'd': Stopped Destroyed", clock=lambda: 9.0)
        >>> events.note("event 'lifecycle' for domain 'd': Started Booted", clock=lambda: 10.5)
        >>> events.stopped("d", since=10.0) is None
        True
        >>> events.note("event 'lifecycle' for domain 'd': Crashed Panicked", clock=lambda: 30.0)
        >>> events.stopped("d", since=10.0)
        'crashed'
        """
        state, when = self.state.get(domain, ("running", 0.0))
        if state == "running" or when < since:
            return None
        started = self.started.get(domain)
        if started is not None and started >= since:
            return state if when >= started else None
        return state if when >= since + grace else None

    async def follow(self, conn: asyncssh.SSHClientConnection) -> None:
        """Read the host's events until cancelled or the stream ends (then raises `EventsEnded`)."""
        line = command_line(["sh", "-c", EVENTS_SCRIPT, "vm5k-events"])
        async with await conn.create_process(line, encoding="utf-8", errors="replace") as process:
            self.listening.set()
            try:
                async for text in process.stdout:
                    self.note(text)
            finally:
                process.stdin.write_eof()
            completed = await process.wait(check=False)
        raise EventsEnded(f"the event stream ended (status {completed.exit_status}): "
                          f"{str(completed.stderr or '').strip()[:200]}")


class EventsEnded(Exception):
    """The host's event stream ended: its follower falls back to polling."""
