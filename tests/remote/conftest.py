"""Fixtures for the remote layer: throw-away SSH hosts in network namespaces (see nshosts.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from nshosts import NsLab
from vm5k.remote import SshRunner, SshSettings
from vm5k.retry import RetryPolicy

T = TypeVar("T")

MISSING = [tool for tool in ("ip", "unshare", "nsenter", "nc", "ssh-keygen", "sshd", "sha256sum")
           if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}")]

needs_lab = pytest.mark.skipif(os.geteuid() != 0 or bool(MISSING),
                               reason=f"needs root and {', '.join(MISSING) or 'namespaces'}")

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


@pytest.fixture(scope="module")
def lab() -> Iterator[NsLab]:
    """Four hosts h1..h4, shared by the tests of a module that do not break them."""
    if os.geteuid() != 0 or MISSING:
        pytest.skip("needs root, network namespaces and OpenSSH")
    with NsLab.create(4) as created:
        yield created


@pytest.fixture
def private_lab() -> Iterator[NsLab]:
    """Hosts of its own for a test that kills daemons, changes keys or cuts links."""
    if os.geteuid() != 0 or MISSING:
        pytest.skip("needs root, network namespaces and OpenSSH")
    with NsLab.create(4) as created:
        yield created
