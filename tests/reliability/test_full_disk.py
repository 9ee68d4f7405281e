"""Fault matrix: the frontend's disk fills during a run (the outdir cannot be written).

The outdir is a small tmpfs of the test's own, filled up while vm5k submits its reservation (the API is
slowed down so that the fill lands between the submission and the record of its job). vm5k must stop with
one clear line, leave the last good state in place (every file is replaced atomically: nothing
half-written, no temporary file taken for a state), and a resume after space is freed must complete with
exactly one reservation alive.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from vm5k_driver import TINY, Runs, admin, jobs_named, live_jobs, record, run_id, state, vms_of

from lab_fixtures import LabTestbed

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, mounted for this test and unmounted after it (after its runs are destroyed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "vm5k-test-disk", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` to the last byte."""
    filler = folder / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=4k"], capture_output=True, check=False)
    return filler


def test_a_full_outdir_stops_the_run_clearly_and_a_resume_completes_once_space_is_freed(
        small_disk: Path, testbed: LabTestbed, runs: Runs) -> None:
    out = small_disk / "out"
    runs.outdirs.append(out)
    admin(testbed, "PATCH", "faults", {"latency": 1.0})
    process = runs.start("-n", "2", "-r", "rennes:2", "-w", "0:20:00", "-t", TINY, "-o", str(out), outdir=out)
    process.wait_for("submitting on rennes", timeout=180)
    filler = fill(small_disk)
    done = process.finish(timeout=300)
    admin(testbed, "PATCH", "faults", {"latency": 0})

    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Logging error" not in done.stderr, done.stderr
    (error,) = done.error_lines
    assert error.startswith(f"vm5k: error: cannot write the run's state in {out}: No space left on device")
    assert error.endswith("(the last state saved is kept: free space, then vm5k --resume)")
    # what is on disk is the last good state, whole; no temporary file is left to be mistaken for it
    saved = json.loads((out / "topology.json").read_text())
    assert "reservation" in saved["meta"]["run"]["reached"]
    assert [path.name for path in out.iterdir() if path.name.startswith(".")] == [".vm5k.lock"]

    filler.unlink()
    resumed = runs.run("--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert record(out)["status"] == "done"
    assert {vm["state"] for vm in vms_of(out).values()} == {"OK"}
    # one reservation alive, the recorded one: a job whose record was lost with the disk is never reused
    # nor left behind (it is killed)
    run = run_id(out)
    (recorded,) = state(out)["meta"]["grid5000"]["jobs"]
    assert [job["uid"] for job in live_jobs(testbed, "rennes", run)] == [recorded["id"]]
    assert len(jobs_named(testbed, "rennes", f"vm5k-{run}")) <= 2
