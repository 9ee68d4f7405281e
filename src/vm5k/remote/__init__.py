"""Parallel remote execution for vm5k: one way to run commands and copy files on many hosts.

- :class:`SshRunner` — over SSH (asyncssh): one reused connection per host, bounded parallelism,
  OpenSSH-style config (ProxyJump through vm5k's own connections, ProxyCommand), a per-run known_hosts
  (trust on first use, or strict), retries on connection failures, reconnect-and-rerun on drops;
- :class:`LocalRunner` — the same interface on the machine vm5k runs on;
- :func:`broadcast_file` / :func:`start_broadcast` — a big file to many hosts through an SSH chain;
- :class:`SyncRunner` — blocking calls for scripts.

>>> import asyncio
>>> from pathlib import Path
>>> async def main():
...     settings = SshSettings(config_files=(Path("ssh_config"),), known_hosts=Path("out/known_hosts"),
...                            record_new_host_keys=True)
...     async with SshRunner(settings) as ssh:
...         results = await ssh.run(["node-1", "node-2"], ["uname", "-r"])
...         results.raise_on_failure("uname")
>>> # asyncio.run(main())
"""

from vm5k.remote.broadcast import BroadcastReport, broadcast_file, start_broadcast
from vm5k.remote.connections import AuthenticationError, ConnectionPool, HostKeyError, check_host_name
from vm5k.remote.local import LocalRunner, file_sha256
from vm5k.remote.results import HostResult, Results
from vm5k.remote.runner import Runner, TunnelRunner, command_line
from vm5k.remote.settings import (
    PARALLEL_INSIDE_GRID5000,
    PARALLEL_VIA_GATEWAY,
    SshSettings,
)
from vm5k.remote.ssh import SshRunner, UnreachableError
from vm5k.remote.sync import SyncRunner

__all__ = [
    "PARALLEL_INSIDE_GRID5000",
    "PARALLEL_VIA_GATEWAY",
    "AuthenticationError",
    "BroadcastReport",
    "ConnectionPool",
    "HostKeyError",
    "HostResult",
    "LocalRunner",
    "Results",
    "Runner",
    "SshRunner",
    "SshSettings",
    "SyncRunner",
    "TunnelRunner",
    "UnreachableError",
    "broadcast_file",
    "check_host_name",
    "command_line",
    "file_sha256",
    "start_broadcast",
]
