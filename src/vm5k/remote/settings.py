"""How vm5k reaches its hosts over SSH: user, keys, config file, host-key policy, timeouts, parallelism.

Why one frozen settings object: every connection of a run (hosts, jump hosts, VMs behind them) must
use the same keys, the same known_hosts policy and the same limits, and a run must be able to write
them down. Build it once per run and hand it to :class:`vm5k.remote.SshRunner`.

Parallelism defaults (``max_parallel``: operations in flight, connection set-up included):

- :data:`PARALLEL_INSIDE_GRID5000` (100) from a Grid'5000 frontend, where sshd on the nodes and the
  frontend's CPU are the only limits;
- :data:`PARALLEL_VIA_GATEWAY` (10) when every connection goes through an access gateway such as
  access.grid5000.fr, which throttles and drops bursts of new connections.

Host keys are always checked, never disabled globally:

- ``known_hosts`` given and ``record_new_host_keys=True``: trust on first use *per run*: a host met for
  the first time has its key appended to the file (the outdir's ``known_hosts``); from then on, that
  key and only that key is accepted for it, and a changed key is refused with a clear error;
- ``known_hosts`` given, ``record_new_host_keys=False``: strict checking against that file;
- ``known_hosts`` None: strict checking against the user's ``~/.ssh/known_hosts`` (what ssh does).

>>> settings = SshSettings(known_hosts=Path("/tmp/run/known_hosts"), record_new_host_keys=True,
...                        max_parallel=PARALLEL_VIA_GATEWAY)
>>> settings.login_user(None)
'root'
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vm5k.retry import RetryPolicy

PARALLEL_INSIDE_GRID5000 = 100
PARALLEL_VIA_GATEWAY = 10
DEFAULT_USER = "root"

#: Connection set-up: a freshly deployed host may refuse for a few seconds while its sshd starts.
DEFAULT_CONNECT_RETRY = RetryPolicy(attempts=4, initial_delay=1.0, multiplier=2.0, max_delay=8.0,
                                    what="ssh connect")


@dataclass(frozen=True)
class SshSettings:
    """Everything needed to open vm5k's SSH connections (see the module docstring).

    user: login user; None means the config file's ``User`` for that host, else ``root``. An explicit
        user wins over the config file, as ``ssh -l`` does.
    identity_files: private keys to offer, before the config's ``IdentityFile`` entries for the host (as
        ``ssh -i`` adds to them); empty means the config's entries, else the usual ``~/.ssh/id_*`` keys
        (and an agent if ``SSH_AUTH_SOCK`` is set).
    config_files: OpenSSH-style client config files (Host, HostName, Port, User, IdentityFile,
        ProxyJump, ProxyCommand, ...). Empty means none (not even ``~/.ssh/config``), so that a run
        depends only on what it was given.
    connect_timeout: seconds for TCP + key exchange + authentication of one attempt.
    command_timeout: default seconds for one command or copy; None means no limit.
    keepalive_interval, keepalive_count_max: how a silent dead connection is detected (a
        ``ProxyCommand`` such as ``nc`` does not always report that the far end went away).
    max_parallel: operations in flight at once (see the module docstring for the defaults).
    sessions_per_host: commands in flight at once on one host's connection (OpenSSH's sshd allows 10
        sessions per connection by default, ``MaxSessions``).
    connect_retry: the retry policy for opening a connection.
    """

    user: str | None = None
    identity_files: tuple[Path, ...] = ()
    config_files: tuple[Path, ...] = ()
    known_hosts: Path | None = None
    record_new_host_keys: bool = False
    connect_timeout: float = 30.0
    command_timeout: float | None = None
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 3
    max_parallel: int = PARALLEL_INSIDE_GRID5000
    sessions_per_host: int = 8
    connect_retry: RetryPolicy = field(default=DEFAULT_CONNECT_RETRY)

    def __post_init__(self) -> None:
        object.__setattr__(self, "identity_files", tuple(Path(p) for p in self.identity_files))
        object.__setattr__(self, "config_files", tuple(Path(p) for p in self.config_files))
        if self.known_hosts is not None:
            object.__setattr__(self, "known_hosts", Path(self.known_hosts))
        if self.record_new_host_keys and self.known_hosts is None:
            raise ValueError("record_new_host_keys needs a known_hosts file to record into")
        if self.max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")

    def with_(self, **changes: Any) -> SshSettings:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def login_user(self, config_user: str | None) -> str:
        """The user to log in as, given the config file's ``User`` for the host (or None)."""
        return self.user or config_user or DEFAULT_USER
