"""Fixtures for the remote layer: throw-away SSH hosts in network namespaces (see nshosts.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from nshosts import MISSING, NsLab


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
