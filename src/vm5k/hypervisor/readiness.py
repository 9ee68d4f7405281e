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
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from vm5k.remote import TunnelRunner
from vm5k.remote.known_hosts import KnownHostsStore

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
                        config=None, connect_timeout=LOGIN_TIMEOUT,
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
