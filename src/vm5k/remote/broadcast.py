"""Chain broadcast of a big file (the VMs' backing image) to many hosts over SSH.

Why a chain: copying a 1 GiB image from the frontend to N hosts one by one ("star") costs N times the
frontend's link. In a chain the frontend streams the file into host 1 only; each host writes it and
streams it on to the next host while it still arrives, so every link carries the file once and the
whole broadcast takes about the time of one copy, whatever N (the original vm5k did this with netcat:
unencrypted, unauthenticated, on a random open port; this one runs over SSH).

How, for ``broadcast_file(ssh, hosts, source, dest, work_dir=...)``:

1. The sha256 of the source is computed on the frontend, and every host is asked for the sha256 of
   ``dest``: hosts that already hold the right file are skipped, hosts that do not answer are dead and
   left out of the chain (reported as failed).
2. Host-to-host SSH uses a key pair made for this broadcast only (ed25519, generated in memory). On each
   chain host, under ``<work_dir>/chain-<tag>/`` (mode 0700):
   ``id_ed25519`` (the private half, 0600), ``known_hosts`` (the next host's key, as the frontend's own
   verified connection saw it: strict checking between hosts too) and ``forward.sh`` (the host's part of
   the chain: keep a copy, pass the stream to the next host; every value in it is quoted by Python, so
   nothing nests quotes). The public half is appended to the host's ``~/.ssh/authorized_keys`` as
   ``restrict,command="/bin/sh <work_dir>/chain-<tag>/forward.sh"``: the key can do nothing but feed
   that host's chain step (no shell, no forwarding), and its line is removed at the end, like the
   directory, whatever happened.
3. The frontend runs host 1's ``forward.sh`` over its own connection with the file as stdin. Each host
   writes ``<dest>.vm5k-part-<tag>`` with ``tee -p`` (which keeps writing its own copy even when the next
   hop is gone) and feeds ``ssh -i <key> next-host``, whose forced command is the next ``forward.sh``.
4. Every chain host computes the sha256 of what it writes while it writes it (``tee`` into the file and
   into a hash, OpenSSL's when there is one: no second read of a 1 GiB file), and once the stream is
   over the frontend has each host compare that digest with the source's; only a correct, completely
   written copy is renamed to ``dest`` (so ``dest`` is either absent, the old file, or the right one).
   Hosts the chain missed get a direct copy from the frontend (checked the same way before the rename).

Run it in the background with :func:`start_broadcast` so that it overlaps with host provisioning.

>>> import asyncio
>>> async def main(ssh):
...     task = start_broadcast(ssh, hosts, Path("debian.qcow2"), "/tmp/vm5k-run/debian.qcow2",
...                            work_dir="/tmp/vm5k-run")
...     ...  # provision the hosts meanwhile
...     report = await task
...     report.raise_on_failure()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shlex
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from vm5k.errors import RemoteError
from vm5k.remote.connections import check_host_name
from vm5k.remote.known_hosts import known_hosts_line
from vm5k.remote.local import file_sha256
from vm5k.remote.results import MAX_HOSTS_IN_MESSAGE
from vm5k.remote.runner import SHA256_FUNCTION, sha256_command
from vm5k.remote.ssh import SshRunner

log = logging.getLogger(__name__)

#: Host-to-host ciphers: AES-GCM first (AES-NI makes it the cheapest on Grid'5000's x86 nodes).
HOP_CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"

#: ``$1`` = line to authorize. A lock file serialises concurrent edits (several broadcasts, several runs).
AUTHORIZE_SCRIPT = r"""
set -eu
umask 077
mkdir -p "$HOME/.ssh"
exec 9>>"$HOME/.ssh/.vm5k-authorized_keys.lock"
if command -v flock >/dev/null; then flock 9; fi
printf '%s\n' "$1" >> "$HOME/.ssh/authorized_keys"
"""

#: ``$1`` = marker of the lines to remove, ``$2`` = chain directory, ``$3`` = partial file.
#: The file is rewritten beside itself (keeping its mode) and renamed: never left half-written.
REVOKE_SCRIPT = r"""
set -u
rm -rf -- "$2" "$3"
keys="$HOME/.ssh/authorized_keys"
[ -f "$keys" ] || exit 0
exec 9>>"$HOME/.ssh/.vm5k-authorized_keys.lock"
if command -v flock >/dev/null; then flock 9; fi
grep -qF -- "$1" "$keys" || exit 0
tmp="$keys.vm5k-tmp"
cp -p -- "$keys" "$tmp" && { grep -vF -- "$1" "$keys" > "$tmp" || true; } && mv -f -- "$tmp" "$keys"
"""

#: ``$1`` = partial file, ``$2`` = destination, ``$3`` = expected sha256.
#: ``$1`` = partial file, ``$2`` = destination, ``$3`` = expected sha256, ``$4`` = chain directory.
#: The digest is the one the host computed over the bytes it wrote, while it wrote them (forward.sh);
#: ``tee.status`` says whether every write to the file succeeded.
FINALIZE_SCRIPT = r"""
set -u
if ! cd -- "$4" 2>/dev/null || [ ! -f received.sha256 ] || [ ! -f tee.status ]; then
    echo "nothing received" >&2; exit 4
fi
got=$(cat received.sha256)
if [ "$(cat tee.status)" != 0 ]; then rm -f -- "$1"; echo "write failed on this host" >&2; exit 5; fi
if [ "$got" != "$3" ]; then rm -f -- "$1"; echo "checksum mismatch: got $got" >&2; exit 3; fi
chmod 644 -- "$1" && mv -f -- "$1" "$2"
"""


@dataclass
class BroadcastReport:
    """What happened to each host in a broadcast."""

    dest: str
    sha256: str
    already: list[str] = field(default_factory=list)  # held the right file before: skipped
    chain: list[str] = field(default_factory=list)  # chain order used
    via_chain: list[str] = field(default_factory=list)  # got a verified copy through the chain
    direct: list[str] = field(default_factory=list)  # got a verified copy from the frontend directly
    failed: dict[str, str] = field(default_factory=dict)  # host → why it has no verified copy
    duration: float = 0.0

    @property
    def ok_hosts(self) -> list[str]:
        return self.already + self.via_chain + self.direct

    def raise_on_failure(self) -> BroadcastReport:
        """Return self if every host holds the verified file, else raise a `RemoteError` naming the others."""
        if not self.failed:
            return self
        items = list(self.failed.items())
        shown = "; ".join(f"{host}: {why}" for host, why in items[:MAX_HOSTS_IN_MESSAGE])
        if len(items) > MAX_HOSTS_IN_MESSAGE:
            shown += f"; and {len(items) - MAX_HOSTS_IN_MESSAGE} more"
        raise RemoteError(f"copy of {self.dest} failed on {len(items)} hosts: {shown}")


def start_broadcast(ssh: SshRunner, hosts: Iterable[str], source: Path, dest: str, *, work_dir: str,
                    sha256: str | None = None, hop_addresses: Mapping[str, str] | None = None,
                    timeout: float | None = None, direct_parallel: int = 4) -> asyncio.Task[BroadcastReport]:
    """Start :func:`broadcast_file` as a background task (same arguments); await the task for the report."""
    report = broadcast_file(ssh, hosts, source, dest, work_dir=work_dir, sha256=sha256,
                            hop_addresses=hop_addresses, timeout=timeout, direct_parallel=direct_parallel)
    return asyncio.create_task(report, name=f"vm5k-broadcast:{dest}")


async def broadcast_file(ssh: SshRunner, hosts: Iterable[str], source: Path, dest: str, *, work_dir: str,
                         sha256: str | None = None, hop_addresses: Mapping[str, str] | None = None,
                         timeout: float | None = None, direct_parallel: int = 4) -> BroadcastReport:
    """Copy ``source`` to ``dest`` on every host through an SSH chain; see the module docstring.

    work_dir: the run's directory on the hosts (holds the chain's key and scripts for the duration).
    sha256: the source's digest if already known (saves reading it).
    hop_addresses: address a host is reached at *from the other hosts* (default: its HostName).
    timeout: seconds for the chain stream and for each direct copy.
    direct_parallel: direct copies at once for the hosts the chain missed.
    """
    started = time.monotonic()
    host_list = [check_host_name(host) for host in hosts]
    for path in (dest, work_dir):
        if not path.startswith("/") or "\n" in path or "\0" in path:
            raise ValueError(f"invalid remote path {path!r} (absolute, one line)")
    digest = sha256 if sha256 else await asyncio.to_thread(file_sha256, source)
    report = BroadcastReport(dest=dest, sha256=digest)

    present = await ssh.run(host_list, sha256_command(dest))
    targets = []
    for result in present:
        if not result.ok:
            report.failed[result.host] = f"unreachable: {result.describe()}"
        elif result.stdout.split()[:1] == [digest]:
            report.already.append(result.host)
        else:
            targets.append(result.host)
    if report.failed:
        log.warning("broadcast of %s: skipping unreachable hosts %s", dest, ", ".join(report.failed))
    if report.already:
        log.info("broadcast of %s: %d hosts already hold it", dest, len(report.already))

    missed = targets
    if len(targets) > 1:
        missed = await _chain(ssh, targets, source, dest, work_dir, digest, hop_addresses or {}, timeout,
                              report)
    if missed:
        await _direct(ssh, missed, source, dest, digest, timeout, direct_parallel, report)
    report.duration = time.monotonic() - started
    log.info("broadcast of %s: %d via chain, %d direct, %d already there, %d failed in %.1f s", dest,
             len(report.via_chain), len(report.direct), len(report.already), len(report.failed),
             report.duration)
    return report


async def _chain(ssh: SshRunner, targets: list[str], source: Path, dest: str, work_dir: str, digest: str,
                 hop_addresses: Mapping[str, str], timeout: float | None,
                 report: BroadcastReport) -> list[str]:
    """Stream through ``targets`` in order; return the hosts that did not end up with a verified copy."""
    tag = secrets.token_hex(6)
    chain_dir = f"{work_dir.rstrip('/') or '/'}/chain-{tag}"
    part = f"{dest}.vm5k-part-{tag}"
    marker = f"vm5k-chain-{tag}"
    key = asyncssh.generate_private_key("ssh-ed25519", comment=marker)
    private = key.export_private_key("openssh")
    public = key.export_public_key("openssh").decode().split()
    forced = shlex.join(["/bin/sh", f"{chain_dir}/forward.sh"]).replace('"', '\\"')
    authorized = f'restrict,command="{forced}" {public[0]} {public[1]} {marker}'
    report.chain = list(targets)
    try:
        prepared = await _prepare(ssh, targets, chain_dir, part, private, authorized, hop_addresses)
        chain = [host for host in targets if host in prepared]
        if len(chain) != len(targets):
            log.warning("broadcast of %s: hosts %s could not join the chain", dest,
                        ", ".join(h for h in targets if h not in prepared))
        if chain and chain != targets:
            # The chain has shrunk: rewrite the scripts of hosts whose next hop changed.
            chain = await _write_scripts(ssh, chain, chain_dir, part, hop_addresses)
        report.chain = list(chain)
        if chain:
            first_step = ["/bin/sh", f"{chain_dir}/forward.sh"]
            streamed = await ssh.stream_file(chain[0], source, first_step, timeout)
            if not streamed.ok:
                log.warning("broadcast of %s: chain stream ended with %s", dest, streamed.describe())
            elif streamed.stderr.strip():
                log.warning("broadcast of %s: chain reported: %s", dest, streamed.stderr.strip()[-500:])
            finals = await ssh.run(chain, ["sh", "-c", FINALIZE_SCRIPT, "vm5k-finalize", part, dest, digest,
                                           chain_dir])
            report.via_chain = finals.ok_hosts
            for result in finals.ko:
                log.info("broadcast of %s: %s missed by the chain (%s)", dest, result.host, result.describe())
    finally:
        await asyncio.shield(_revoke(ssh, targets, marker, chain_dir, part))
    return [host for host in targets if host not in report.via_chain]


async def _prepare(ssh: SshRunner, targets: list[str], chain_dir: str, part: str, private: bytes,
                   authorized: str, hop_addresses: Mapping[str, str]) -> list[str]:
    """Install the key, the scripts and the authorization on every chain host; return those that took it."""
    made = await ssh.run(targets, ["mkdir", "-p", "-m", "700", "--", chain_dir])
    ready = made.ok_hosts
    keys = await ssh.put(ready, private, f"{chain_dir}/id_ed25519", mode=0o600)
    ready = keys.ok_hosts
    ready = await _write_scripts(ssh, ready, chain_dir, part, hop_addresses)
    allowed = await ssh.run(ready, ["sh", "-c", AUTHORIZE_SCRIPT, "vm5k-authorize", authorized])
    return allowed.ok_hosts


async def _write_scripts(ssh: SshRunner, chain: list[str], chain_dir: str, part: str,
                         hop_addresses: Mapping[str, str]) -> list[str]:
    """Write ``forward.sh`` and ``known_hosts`` of each chain host; return the hosts where it worked.

    A host whose verified host key the frontend cannot obtain (its connection is gone and does not come
    back) is left out: nobody could check that the next hop is really that host.
    """
    host_keys: dict[str, asyncssh.SSHKey] = {}
    for host in chain:
        try:
            key = (await ssh.pool.connection(host)).get_server_host_key()
        except (RemoteError, OSError, asyncssh.Error) as exc:
            log.warning("broadcast: %s left out of the chain: %s", host, exc)
            continue
        if key is not None:
            host_keys[host] = key
    chain = [host for host in chain if host in host_keys]
    scripts: dict[str, str] = {}
    known: dict[str, str] = {}
    for index, host in enumerate(chain):
        following = chain[index + 1] if index + 1 < len(chain) else None
        if following is None:
            scripts[host] = _forward_script(chain_dir, part, None, 22, "root")
            known[host] = ""
            continue
        endpoint = ssh.pool.resolve(following)
        address = check_host_name(hop_addresses.get(following, endpoint.hostname))
        host_key = host_keys[following]
        scripts[host] = _forward_script(chain_dir, part, address, endpoint.port, endpoint.user)
        known[host] = known_hosts_line(address, endpoint.port, host_key) + "\n"
    written = await asyncio.gather(
        *(ssh.write_text([host], f"{chain_dir}/forward.sh", scripts[host], mode=0o700) for host in chain),
        *(ssh.write_text([host], f"{chain_dir}/known_hosts", known[host], mode=0o600) for host in chain))
    failed_hosts = {result.host for results in written for result in results if not result.ok}
    return [host for host in chain if host not in failed_hosts]


def _forward_script(chain_dir: str, part: str, address: str | None, port: int, user: str) -> str:
    """One host's step of the chain: keep a copy of stdin in ``part``; pass it on to ``address``."""
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        "# vm5k chain broadcast: keep a copy of the stream, pass it on to the next host (if any).",
        "set -u",
        f"part={q(part)}",
        'mkdir -p -- "$(dirname -- "$part")"',
        "umask 077",
        # ssh parses -o values with quoting rules of its own: keep the directory out of them.
        f"cd -- {q(chain_dir)} || exit 1",
        # The digest is computed while the file is written (the same bytes), not by reading it again.
        "rm -f sum.fifo received.sha256 tee.status && mkfifo sum.fifo || exit 1",
        *SHA256_FUNCTION.strip().splitlines(),
        "vm5k_sha256 < sum.fifo > received.sha256 &",
    ]
    if address is None:
        lines.append('tee -- "$part" sum.fifo > /dev/null; echo $? > tee.status')
    else:
        ssh_argv = [
            "ssh", "-F", "/dev/null", "-T", "-x", "-a", "-i", "./id_ed25519",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", "UserKnownHostsFile=./known_hosts", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15", "-o", f"Ciphers={HOP_CIPHERS}",
            "-o", "Compression=no", "-p", str(port), "-l", user, "--", address, "vm5k-chain",
        ]
        lines.append(f'{{ tee -p -- "$part" sum.fifo; echo $? > tee.status; }} | {shlex.join(ssh_argv)}')
        lines.append("status=$?")
    lines.append("wait")
    if address is not None:
        lines.append("exit $status")
    return "\n".join(lines) + "\n"


async def _revoke(ssh: SshRunner, hosts: list[str], marker: str, chain_dir: str, part: str) -> None:
    """Remove the broadcast's key authorization, directory and leftovers from the hosts (best effort)."""
    with contextlib.suppress(Exception):
        results = await ssh.run(hosts, ["sh", "-c", REVOKE_SCRIPT, "vm5k-revoke", marker, chain_dir, part],
                                timeout=60)
        for result in results.ko:
            log.warning("broadcast clean-up on %s failed: %s", result.host, result.describe())


async def _direct(ssh: SshRunner, hosts: list[str], source: Path, dest: str, digest: str,
                  timeout: float | None, parallel: int, report: BroadcastReport) -> None:
    """Copy from the frontend to each host the chain missed, ``parallel`` at a time."""
    slots = asyncio.Semaphore(parallel)

    async def one(host: str) -> None:
        async with slots:
            result = (await ssh.put([host], source, dest, sha256=digest, timeout=timeout))[0]
        if result.ok:
            report.direct.append(host)
            report.failed.pop(host, None)
        else:
            report.failed[host] = f"direct copy failed: {result.describe()}"

    await asyncio.gather(*(one(host) for host in hosts))
