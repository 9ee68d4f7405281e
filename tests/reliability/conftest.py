"""Fixtures of the fault matrix: the shared testbed, and runs that are always destroyed and checked clean.

Every test here is marked `integration` (real nodes, real VMs). Tests whose faults touch the whole API
(error rates, lost replies, latency, the clock) get a testbed of their own from `lab_testbed_factory`;
the others share the session's testbed (rennes, 3 nodes, admin endpoints on) and restore its fault
settings when they end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from vm5k_driver import Runs, admin

from lab_fixtures import LabTestbed


@pytest.fixture
def testbed(lab_testbed: LabTestbed) -> Iterator[LabTestbed]:
    """The session's shared testbed, its faults reset after the test whatever happened."""
    yield lab_testbed
    admin(lab_testbed, "PUT", "faults", {})


@pytest.fixture
def runs_on(tmp_path: Path) -> Iterator[Callable[[LabTestbed], Runs]]:
    """`runs_on(testbed)`: the runs of this test on a testbed of its own, cleaned up at its end."""
    made: list[Runs] = []

    def factory(testbed: LabTestbed) -> Runs:
        folder = tmp_path / f"work{len(made)}"
        folder.mkdir()
        made.append(Runs(testbed, folder))
        return made[-1]

    yield factory
    for each in made:
        each.clean_up()


@pytest.fixture
def runs(testbed: LabTestbed, runs_on: Callable[[LabTestbed], Runs]) -> Runs:
    """The runs of this test on the shared testbed."""
    return runs_on(testbed)
