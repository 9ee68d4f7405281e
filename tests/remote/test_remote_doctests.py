"""The runnable examples in the docstrings of the retry policy and the remote layer stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["vm5k.retry", "vm5k.remote", "vm5k.remote.results", "vm5k.remote.settings",
           "vm5k.remote.known_hosts", "vm5k.remote.connections", "vm5k.remote.runner",
           "vm5k.remote.local", "vm5k.remote.sync", "vm5k.remote.ssh", "vm5k.remote.broadcast"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    failures, _ = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert failures == 0
