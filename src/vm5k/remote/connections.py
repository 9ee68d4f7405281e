"""One SSH connection per host, opened once (with retries) and reused by every command and copy of a run.

Why a pool of our own on top of asyncssh:

- reuse: a deployment sends dozens of commands to each host; one key exchange per host, not per command;
- ProxyJump through *our* connections: asyncssh can follow a config file's ``ProxyJump`` by itself, but
  it then opens a fresh connection to the jump host for every target, with default keys and the default
  known_hosts (not the run's). Here the jump host is taken from this pool (so the many VMs of one host
  share the host's connection, as ssh's ControlMaster would) and every hop is checked against the run's
  known_hosts with the run's keys;
- ``ProxyCommand`` from the config file is run by asyncssh without a shell after expanding ``%h``/``%p``
  (checked by the tests with ``ip netns exec <ns> nc %h %p``);
- the config files are read once per run (`vm5k.remote.ssh_config`) and each host's options are passed
  explicitly: asyncssh alone would parse the whole file at every connection. A file with lines vm5k does
  not understand is still left to asyncssh, per connection (slower, never different);
- retries and host-key errors that say what to do.

>>> import asyncio
>>> async def main():
...     pool = ConnectionPool(SshSettings(config_files=("ssh_config",)))
...     try:
...         conn = await pool.connection("node-1")
...         print((await conn.run("hostname")).stdout)
...     finally:
...         await pool.close()
>>> # asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from vm5k.errors import RemoteError, UsageError
from vm5k.remote.known_hosts import HostKeyCheckingClient, KnownHostsStore
from vm5k.remote.settings import SshSettings
from vm5k.remote.ssh_config import ClientConfig

log = logging.getLogger(__name__)

#: Host names and config aliases we accept: a name never reaches a shell, but a ProxyCommand of the
#: config file may expand it (``%h``), so nothing that a shell could interpret gets that far.
HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*\Z")

#: Ciphers offered when vm5k applies the config itself: AES-GCM first. asyncssh's own first choice,
#: chacha20-poly1305, is built in Python from a new cipher context per packet, about six times the CPU per
#: packet here; every OpenSSH server of the last decade offers AES-GCM. A config that names its own
#: ``Ciphers`` is left to asyncssh (`vm5k.remote.ssh_config`), which then follows it.
ENCRYPTION_ALGS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
                   "aes128-ctr", "aes256-ctr")

#: Failures after which an operation on an existing connection reconnects and reruns once.
CONNECTION_DROPPED: tuple[type[BaseException], ...] = (
    asyncssh.ConnectionLost, asyncssh.ChannelOpenError, BrokenPipeError, ConnectionResetError,
)


def check_host_name(host: str) -> str:
    """Return ``host`` if it is a plausible host name or address, else raise `UsageError`.

    >>> check_host_name("node-1.lyon.grid5000.fr")
    'node-1.lyon.grid5000.fr'
    >>> check_host_name("node-1; reboot")
    Traceback (most recent call last):
    ...
    vm5k.errors.UsageError: invalid host name 'node-1; reboot' (letters, digits, '.', '-', '_', ':' only)
    """
    if not isinstance(host, str) or not HOST_NAME.match(host) or len(host) > 253:
        raise UsageError(f"invalid host name {host!r} (letters, digits, '.', '-', '_', ':' only)")
    return host


def is_transient(exc: BaseException) -> bool:
    """True for connection failures worth another try (refused, reset, timed out, lost)."""
    if isinstance(exc, (asyncssh.PermissionDenied, asyncssh.HostKeyNotVerifiable,
                        asyncssh.ProtocolNotSupported, asyncssh.IllegalUserName, asyncssh.KeyExchangeFailed)):
        return False
    if isinstance(exc, socket.gaierror):
        return exc.errno == socket.EAI_AGAIN  # a name that does not resolve will not resolve later
    return isinstance(exc, (OSError, TimeoutError, asyncssh.DisconnectError, asyncssh.ChannelOpenError))


@dataclass(frozen=True)
class Endpoint:
    """Where a host name leads once the config file is applied."""

    alias: str
    hostname: str
    port: int
    user: str
    proxy_jump: tuple[str, ...]
    proxy_command: tuple[str, ...] | None
    identity_files: tuple[str, ...] = ()  # the config's IdentityFile entries for this host
    identities_only: bool = False  # the config's IdentitiesOnly: no agent keys


@dataclass(frozen=True)
class _Hop:
    """A pool key: a host as the caller names it, plus an explicit user/port and the hops before it."""

    alias: str
    user: str | None = None
    port: int | None = None
    via: _Hop | None = None

    def label(self) -> str:
        name = f"{self.user}@{self.alias}" if self.user else self.alias
        return f"{name}:{self.port}" if self.port else name


def _parse_jump(spec: str) -> _Hop:
    """``[user@]host[:port]`` of a ProxyJump list element."""
    user, _, rest = spec.rpartition("@")
    host, port = rest, None
    if rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = int(port_text)
    return _Hop(alias=check_host_name(host), user=user or None, port=port)


class ConnectionPool:
    """Open, share, and replace the SSH connections of one run (see the module docstring)."""

    def __init__(self, settings: SshSettings) -> None:
        self.settings = settings
        self.known_hosts = KnownHostsStore(settings.known_hosts, record_new=settings.record_new_host_keys)
        self._connections: dict[_Hop, asyncssh.SSHClientConnection] = {}
        self._locks: dict[_Hop, asyncio.Lock] = {}
        self._closed = False
        self._config: ClientConfig | None = None
        self._config_stamp: tuple[tuple[int, ...], ...] = ()

    def client_config(self) -> ClientConfig:
        """The run's config files, read on first use and again only when one changed (a run's outdir
        ssh_config is rewritten when its VMs change): see the module docstring."""
        stamp = _stamps(self.settings.config_files)
        if self._config is None or stamp != self._config_stamp:
            self._config_stamp = stamp
            self._config = ClientConfig.read(self.settings.config_files)
            if not self._config.exact:
                log.debug("ssh config: %s not understood: asyncssh reads the file at every connection",
                          ", ".join(self._config.unsupported[:3]))
        return self._config

    # ------------------------------------------------------------------ config
    def resolve(self, host: str, user: str | None = None, port: int | None = None) -> Endpoint:
        """Apply the config files to ``host``: its HostName, Port, User, ProxyJump and ProxyCommand."""
        check_host_name(host)
        config = self.client_config()
        if config.exact:
            found = config.options(host, port)
            return Endpoint(
                alias=host, hostname=found.hostname, port=found.port,
                user=user or self.settings.login_user(found.user),
                proxy_jump=tuple(part.strip() for part in (found.proxy_jump or "").split(",")
                                 if part.strip()),
                proxy_command=tuple(shlex.split(found.proxy_command)) if found.proxy_command else None,
                identity_files=found.identity_files, identities_only=found.identities_only)
        options = asyncssh.SSHClientConnectionOptions(
            config=[str(p) for p in self.settings.config_files] or None, host=host,
            port=port if port is not None else (), known_hosts=None, client_keys=None)
        raw_user = options.config.get("User")
        jump = options.tunnel if isinstance(options.tunnel, str) and options.tunnel != "none" else ""
        identities = options.config.get("IdentityFile")
        return Endpoint(
            alias=host, hostname=str(options.host), port=int(options.port),
            user=user or self.settings.login_user(raw_user if isinstance(raw_user, str) else None),
            proxy_jump=tuple(part.strip() for part in jump.split(",") if part.strip()),
            proxy_command=tuple(options.proxy_command) if options.proxy_command else None,
            identity_files=tuple(os.path.expanduser(str(p)) for p in identities)
            if isinstance(identities, list | tuple) else ())

    # ------------------------------------------------------------------ connections
    async def connection(self, host: str) -> asyncssh.SSHClientConnection:
        """The live connection to ``host``, opened (with the retry policy) if there is none yet."""
        return await self._get(_Hop(alias=check_host_name(host)))

    def current(self, host: str) -> asyncssh.SSHClientConnection | None:
        """The open connection to ``host`` if there is one (no connection attempt)."""
        conn = self._connections.get(_Hop(alias=host))
        return conn if conn is not None and not conn.is_closed() else None

    def discard(self, host: str, conn: asyncssh.SSHClientConnection | None = None) -> None:
        """Forget (and close) the connection to ``host`` after it dropped, so the next use reconnects."""
        key = _Hop(alias=host)
        current = self._connections.get(key)
        if current is not None and (conn is None or current is conn):
            del self._connections[key]
            current.abort()

    async def close(self) -> None:
        """Close every connection (targets first, then the jump hosts they go through)."""
        self._closed = True
        conns = list(self._connections.items())
        self._connections.clear()
        # A ProxyCommand (the testbed's `nc`, a user's) is a subprocess that asyncssh kills on close but no
        # longer waits for: wait here, or it is reaped after the event loop closed and asyncio complains.
        tunnels = [getattr(conn, "_tunnel", None) for _, conn in conns]
        proxies = [tunnel for tunnel in tunnels if tunnel is not None and hasattr(tunnel, "wait_closed")]
        for _, conn in sorted(conns, key=lambda item: item[0].via is None):
            conn.close()
        for _, conn in conns:
            try:
                await asyncio.wait_for(conn.wait_closed(), 5)
            except (TimeoutError, OSError, asyncssh.Error):
                conn.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(proxy.wait_closed() for proxy in proxies)), 5)

    async def _get(self, hop: _Hop) -> asyncssh.SSHClientConnection:
        if self._closed:
            raise RemoteError(f"{hop.label()}: the SSH connection pool is closed")
        conn = self._connections.get(hop)
        if conn is not None and not conn.is_closed():
            return conn
        lock = self._locks.setdefault(hop, asyncio.Lock())
        async with lock:
            conn = self._connections.get(hop)
            if conn is not None and not conn.is_closed():
                return conn
            conn = await self.settings.connect_retry.call(
                self._open, hop, what=f"ssh connect to {hop.label()}")
            self._connections[hop] = conn
            return conn

    async def _open(self, hop: _Hop) -> asyncssh.SSHClientConnection:
        endpoint = self.resolve(hop.alias, hop.user, hop.port)
        tunnel: asyncssh.SSHClientConnection | None = None
        if hop.via is not None:
            tunnel = await self._get(hop.via)
        elif endpoint.proxy_jump:
            # ProxyJump a,b: reach a by its own config, then b through a, then the target through b.
            via: _Hop | None = None
            for spec in endpoint.proxy_jump:
                jump = _parse_jump(spec)
                via = _Hop(alias=jump.alias, user=jump.user, port=jump.port, via=via)
            assert via is not None
            tunnel = await self._get(via)
        settings = self.settings
        # As ssh -i does, the keys given add to the config's IdentityFile entries, which stay usable (a
        # testbed's own key, a gateway's); none given means asyncssh's defaults (config, then ~/.ssh).
        keys = list(dict.fromkeys([str(p) for p in settings.identity_files]
                                  + [p for p in endpoint.identity_files if os.path.isfile(p)])) or ()
        log.debug("ssh connect %s (%s@%s:%d%s)", hop.label(), endpoint.user, endpoint.hostname, endpoint.port,
                  f" via {tunnel.get_extra_info('host')}" if tunnel else "")
        # With the config understood, everything it says is in `endpoint` and asyncssh reads no file.
        where: dict[str, Any]
        if self.client_config().exact:
            where = {"host": endpoint.hostname, "port": endpoint.port, "config": None,
                     "proxy_command": list(endpoint.proxy_command) if endpoint.proxy_command else None,
                     "encryption_algs": list(ENCRYPTION_ALGS)}
            if endpoint.identities_only:
                where["agent_path"] = None
        else:
            where = {"host": hop.alias, "port": hop.port if hop.port is not None else (),
                     "config": [str(p) for p in settings.config_files] or None}
        try:
            return await asyncssh.connect(
                **where,
                username=endpoint.user,
                client_keys=keys,
                known_hosts=self.known_hosts.load(),
                client_factory=lambda: HostKeyCheckingClient(self.known_hosts),
                # Never () here: asyncssh would then follow the config's ProxyJump by itself.
                tunnel=tunnel,
                connect_timeout=settings.connect_timeout,
                keepalive_interval=settings.keepalive_interval,
                keepalive_count_max=settings.keepalive_count_max,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyError(
                f"{hop.label()}: {self.known_hosts.explain_refusal(endpoint.hostname, endpoint.port)}"
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise AuthenticationError(
                f"{hop.label()}: permission denied for user {endpoint.user} "
                f"({exc.reason or 'no key was accepted'})") from exc


def _stamps(paths: tuple[Path, ...]) -> tuple[tuple[int, ...], ...]:
    """What tells that a file changed: inode, size, modification time (() for a missing file)."""
    stamps: list[tuple[int, ...]] = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            stamps.append(())
            continue
        stamps.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(stamps)


class HostKeyError(RemoteError):
    """A host offered a key that the run's known_hosts does not accept."""


class AuthenticationError(RemoteError):
    """The host refused every key offered."""
