"""Throw-away SSH hosts in network namespaces, for the tests and benchmarks of vm5k.remote.

Why not the testbed's nodes: this is a light harness for the remote layer only (no libvirt, no API),
fast enough to start per test module. It is independent of ``g5k_testbed``.

Layout, all of it owned by one ``NsLab`` and removed by ``close()``:

    <prefix>sw   a namespace holding the bridge br0 (the "switch"); no address, no route outside
    <prefix>fe   the "frontend" namespace: veth onto br0, address <net>.1
    <prefix>hN   one namespace per host: veth onto br0, address <net>.(10+N), its own sshd started in a
                 private mount namespace with tmpfs on /root, /tmp and /run (hosts share no files there);
                 optionally a per-host directory of the lab bind-mounted on /srv (on disk, for big files)

The root namespace gets no interface and no route: the frontend reaches hosts only through the
generated ssh config (``ProxyCommand ip netns exec <prefix>fe nc %h %p``), exactly like the testbed.
Every link can be limited with ``tc`` (tbf on both ends of each veth) to model Grid'5000 NICs.

Only PIDs this module started are ever killed (sshd daemons and, for drop tests, the per-connection
sshd children of those daemons).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from vm5k.remote import SshRunner, SshSettings
from vm5k.retry import RetryPolicy

SSHD = "/usr/sbin/sshd"
NET = "10.251.0"  # lives only inside the lab's own namespaces: no route to it from the root namespace


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


@dataclass
class NsHost:
    name: str
    netns: str
    address: str
    state_dir: Path
    sshd: subprocess.Popen[bytes] | None = None
    disk_dir: Path | None = None

    @property
    def host_key(self) -> Path:
        return self.state_dir / "ssh_host_ed25519_key"


@dataclass
class NsLab:
    """A switch, a frontend namespace and N SSH hosts; see the module docstring."""

    base_dir: Path
    prefix: str
    hosts: dict[str, NsHost] = field(default_factory=dict)
    extra_config: list[str] = field(default_factory=list)
    rate: str | None = None
    disk: bool = False
    _namespaces: list[str] = field(default_factory=list)
    _next_index: int = 1

    @classmethod
    def create(cls, n_hosts: int, *, rate: str | None = None, disk: bool = False,
               base_dir: str | None = None) -> NsLab:
        """Start ``n_hosts`` hosts named h1..hN. ``rate`` (e.g. "150mbit") limits every link."""
        if os.geteuid() != 0:
            raise RuntimeError("NsLab needs root (network and mount namespaces)")
        sweep_stale_labs(Path(base_dir or "/var/tmp"))
        # Not under /tmp or /root: those are private tmpfs inside the hosts, which must still see
        # their sshd configuration and keys.
        base = Path(tempfile.mkdtemp(prefix="vm5k-nslab-", dir=base_dir or "/var/tmp"))
        prefix = f"v5r{os.getpid() % 100000}{base.name[-4:]}"
        lab = cls(base_dir=base, prefix=prefix, rate=rate, disk=disk)
        try:
            lab._start_network()
            for _ in range(n_hosts):
                lab.add_host()
            lab.write_config()
        except BaseException:
            lab.close()
            raise
        return lab

    # ----------------------------------------------------------------- network
    @property
    def switch_ns(self) -> str:
        return f"{self.prefix}sw"

    @property
    def frontend_ns(self) -> str:
        return f"{self.prefix}fe"

    @property
    def client_key(self) -> Path:
        return self.base_dir / "client" / "id_ed25519"

    @property
    def config_path(self) -> Path:
        return self.base_dir / "ssh_config"

    def _record(self) -> None:
        """Write what this lab owns, so that a later lab can clean up after a killed test run."""
        owned = {"owner": os.getpid(), "namespaces": self._namespaces,
                 "pids": [h.sshd.pid for h in self.hosts.values() if h.sshd is not None]}
        (self.base_dir / "lab.json").write_text(json.dumps(owned))

    def _add_ns(self, name: str) -> None:
        self._namespaces.append(name)
        self._record()
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def _start_network(self) -> None:
        (self.base_dir / "client").mkdir()
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vm5k-nslab-client",
           "-f", str(self.client_key))
        self._add_ns(self.switch_ns)
        sh("ip", "-n", self.switch_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch_ns, "link", "set", "br0", "up")
        self._plug(self.frontend_ns, "vfe", f"{NET}.1")

    def _plug(self, netns: str, port: str, address: str) -> None:
        """Create ``netns`` with an eth0 on the switch (switch side named ``port``)."""
        self._add_ns(netns)
        sh("ip", "-n", self.switch_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0",
           "netns", netns)
        sh("ip", "-n", self.switch_ns, "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", netns, "link", "set", "eth0", "up")
        if self.rate:
            self._limit(netns, port)

    def _limit(self, netns: str, port: str) -> None:
        """tbf on both ends, so that each direction of the link runs at ``rate``."""
        for ns, dev in ((self.switch_ns, port), (netns, "eth0")):
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
               "rate", str(self.rate), "burst", "512kb", "latency", "100ms")
            # veth offloads make 64 KiB super-packets that a small tbf bucket would drop whole.
            sh("ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", check=False)

    # ----------------------------------------------------------------- hosts
    def add_host(self, *, sshd: bool = True) -> NsHost:
        index = self._next_index
        self._next_index += 1
        name = f"h{index}"
        netns = f"{self.prefix}h{index}"
        state = self.base_dir / name
        state.mkdir()
        host = NsHost(name=name, netns=netns, address=f"{NET}.{10 + index}", state_dir=state)
        if self.disk:
            host.disk_dir = state / "srv"
            host.disk_dir.mkdir()
        self._plug(netns, f"v{name}", host.address)
        self.hosts[name] = host
        self.new_host_key(name)
        if sshd:
            self.start_sshd(name)
        return host

    def new_host_key(self, name: str) -> None:
        host = self.hosts[name]
        for path in (host.host_key, host.host_key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}-host", "-f", str(host.host_key))

    def start_sshd(self, name: str) -> None:
        host = self.hosts[name]
        if host.sshd is not None and host.sshd.poll() is None:
            raise RuntimeError(f"sshd of {name} already runs")
        config = host.state_dir / "sshd_config"
        config.write_text(
            f"ListenAddress {host.address}\n"
            f"HostKey {host.host_key}\n"
            "PidFile none\n"
            "AuthorizedKeysFile .ssh/authorized_keys\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "UseDNS no\n"
            "MaxStartups 200\n"
            "MaxSessions 100\n"
            "Subsystem sftp /usr/lib/openssh/sftp-server\n"
        )
        authorized = self.client_key.with_suffix(".pub")
        mounts = [
            "mount --make-rprivate /",
            "mount -t tmpfs -o mode=0700 vm5k-root /root",
            "mount -t tmpfs -o mode=1777 vm5k-tmp /tmp",
            "mount -t tmpfs -o mode=0755 vm5k-run /run",
            "mkdir -m 0755 /run/sshd",
            "mkdir -m 0700 /root/.ssh",
            f"cp {authorized} /root/.ssh/authorized_keys",
            f"echo {host.name} > /root/hostname",
        ]
        if host.disk_dir is not None:
            mounts.append(f"mount --bind {host.disk_dir} /srv")
        mounts.append(f"exec {SSHD} -D -e -f {config}")
        log = open(host.state_dir / "sshd.log", "wb")  # noqa: SIM115 - handed to the daemon
        with log:
            host.sshd = subprocess.Popen(
                ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--propagation", "private",
                 "/bin/sh", "-ec", "; ".join(mounts)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        self._record()
        self._wait_listening(host)

    def _wait_listening(self, host: NsHost, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        log = host.state_dir / "sshd.log"
        while time.monotonic() < deadline:
            if host.sshd is not None and host.sshd.poll() is not None:
                raise RuntimeError(f"sshd of {host.name} exited: {log.read_text(errors='replace')}")
            if "Server listening" in log.read_text(errors="replace"):
                return
            time.sleep(0.02)
        raise RuntimeError(f"sshd of {host.name} did not start: {log.read_text(errors='replace')}")

    def stop_sshd(self, name: str) -> None:
        """Stop the daemon of ``name`` and the sessions it serves (only processes this lab started)."""
        host = self.hosts[name]
        if host.sshd is None:
            return
        for pid in self.session_pids(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if host.sshd.poll() is None:
            host.sshd.terminate()
            try:
                host.sshd.wait(5)
            except subprocess.TimeoutExpired:
                host.sshd.kill()
                host.sshd.wait(5)
        host.sshd = None

    def session_pids(self, name: str) -> list[int]:
        """PIDs of the per-connection sshd children of ``name``'s daemon (what a drop test kills)."""
        host = self.hosts[name]
        if host.sshd is None:
            return []
        return children_of(host.sshd.pid)

    def drop_connections(self, name: str) -> int:
        """Kill the sshd processes serving current connections to ``name``; the daemon keeps listening."""
        pids = self.session_pids(name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def host_public_key(self, name: str) -> str:
        return self.hosts[name].host_key.with_suffix(".pub").read_text()

    # ----------------------------------------------------------------- client side
    def proxy_command(self) -> str:
        return f"ip netns exec {self.frontend_ns} nc %h %p"

    def write_config(self) -> Path:
        lines = []
        for host in self.hosts.values():
            lines += [f"Host {host.name}", f"  HostName {host.address}", "  User root",
                      f"  IdentityFile {self.client_key}", f"  ProxyCommand {self.proxy_command()}", ""]
        lines += self.extra_config
        # Safety net: a name the lab does not know never leaves through the root namespace's routes.
        lines += ["", "Host *", "  ProxyCommand /bin/false"]
        self.config_path.write_text("\n".join(lines) + "\n")
        return self.config_path

    def run_in(self, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command inside host ``name``'s namespaces (network + its private mounts)."""
        host = self.hosts[name]
        if host.sshd is None:
            raise RuntimeError(f"{name} has no sshd: its mount namespace is gone")
        return sh("nsenter", "-t", str(host.sshd.pid), "-n", "-m", "--", *argv, check=False)

    # ----------------------------------------------------------------- teardown
    def close(self) -> None:
        for name in list(self.hosts):
            with contextlib.suppress(Exception):
                self.stop_sshd(name)
        for netns in reversed(self._namespaces):
            sh("ip", "netns", "del", netns, check=False)
        self._namespaces.clear()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> NsLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sweep_stale_labs(parent: Path) -> None:
    """Remove labs left by a test run that was killed before its teardown (its owner PID is gone).

    Only what such a lab recorded in its lab.json is touched: its namespaces, and its sshd PIDs if they
    still run that lab's sshd (checked on the command line, so a reused PID is never killed).
    """
    for state in parent.glob("vm5k-nslab-*/lab.json"):
        try:
            owned = json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{owned.get('owner', 0)}").exists():
            continue
        base = str(state.parent)
        for pid in owned.get("pids", []):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "sshd" in cmdline and base in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for netns in owned.get("namespaces", []):
            sh("ip", "netns", "del", netns, check=False)
        shutil.rmtree(state.parent, ignore_errors=True)


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``, read from /proc (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


# --------------------------------------------------------------------- client-side helpers for the tests
T = TypeVar("T")

#: Tools the lab needs on this machine.
MISSING = [tool for tool in ("ip", "unshare", "nsenter", "nc", "ssh-keygen", "sha256sum")
           if shutil.which(tool) is None] + ([] if os.path.exists(SSHD) else ["sshd"])

#: Fast failure for tests: two quick attempts, dead connections noticed within about two seconds.
FAST_RETRY = RetryPolicy(attempts=2, initial_delay=0.1, max_delay=0.2, what="ssh connect")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def settings_for(lab: NsLab, tmp_path: Path, **changes: Any) -> SshSettings:
    """Settings that reach the lab's hosts through its ssh config, recording host keys per test."""
    base = SshSettings(config_files=(lab.config_path,), known_hosts=tmp_path / "known_hosts",
                       record_new_host_keys=True, connect_timeout=5, keepalive_interval=1,
                       keepalive_count_max=2, connect_retry=FAST_RETRY, command_timeout=30)
    return base.with_(**changes)


def runner_for(lab: NsLab, tmp_path: Path, **changes: Any) -> SshRunner:
    return SshRunner(settings_for(lab, tmp_path, **changes))
