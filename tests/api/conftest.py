"""Fixtures of the API's tests: the session's testbed, named for in-process calls and for the command.

The driver of the reliability tests (`vm5k_driver`: the command as a process, the outdir, the jobs and
what a run left on the nodes) is shared: it is how every test judges what a run left behind.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))

from vm5k_driver import Runs

from lab_fixtures import LabTestbed


@pytest.fixture
def testbed(lab_testbed: LabTestbed, monkeypatch: pytest.MonkeyPatch) -> LabTestbed:
    """The session's testbed, found by vm5k in this process as by the commands it starts."""
    monkeypatch.setenv("VM5K_TESTBED_STATE", str(lab_testbed.state_dir))
    return lab_testbed


@pytest.fixture
def runs(testbed: LabTestbed, tmp_path: Path) -> Iterator[Runs]:
    """The runs of this test (outdirs, processes), destroyed and checked clean at its end."""
    made = Runs(testbed, tmp_path)
    yield made
    made.clean_up()
