"""What a run does on the frontend when it is stopped or cannot write: its log, its program, its outdir.

These are the frontend halves of the reliability promises (docs/reliability.md); the end-to-end halves,
on the testbed, are in tests/reliability/.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vm5k import log as vm5k_log
from vm5k import outdir, program
from vm5k.errors import UsageError
from vm5k.runstate import DESTROYED, DONE, INTERRUPTED, RunRecord, check_outdir_reusable
from vm5k.topology import Topology


def test_a_log_file_that_cannot_be_written_is_said_once_and_never_stops_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "vm5k.log").symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    vm5k_log.add_file_handler(tmp_path)
    logger = logging.getLogger("vm5k.test")
    try:
        for index in range(5):
            logger.info("line %d", index)
    finally:
        vm5k_log.remove_file_handler()  # closing flushes again: must not raise either
    assert "Traceback" not in err.getvalue()
    lines = err.getvalue().splitlines()
    assert lines == [f"vm5k: warning: cannot write {tmp_path / 'vm5k.log'} (No space left on device): "
                     "the log goes on on the console only"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_an_interrupted_program_is_stopped_with_what_it_started(tmp_path: Path) -> None:
    """SIGTERM to vm5k becomes a KeyboardInterrupt in the main thread: the program (and its children, a
    ``sleep`` here) must not outlive vm5k."""
    pids = tmp_path / "pids"
    script = f"sleep 300 & echo $$ $! > {pids}; wait\n"
    (tmp_path / "out").mkdir()

    def interrupt_when_started() -> None:
        deadline = time.monotonic() + 30
        while not pids.exists() or not pids.read_text().strip():
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_when_started)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        program.run_program(f"/bin/sh -c {script!r}", outdir=tmp_path / "out", run_id="r1",
                            key_path=tmp_path / "key", start_dir=tmp_path)
    interrupter.join()
    shell, sleeper = (int(word) for word in pids.read_text().split())
    assert not _alive(shell) and not _alive(sleeper)


def _record(folder: Path, **fields: object) -> None:
    record = RunRecord(run_id="20261125000000-abcdef", platform="testbed", start_dir="/")
    for name, value in fields.items():
        setattr(record, name, value)
    outdir.write_state(folder, record.save(Topology()))


@pytest.mark.parametrize("fields, reusable", [
    ({"dry_run": True, "steps": {"topology": 0.1}, "reached": ["topology"], "status": DONE}, True),
    ({"reached": ["topology"], "status": INTERRUPTED}, True),  # stopped while planning: holds nothing
    ({"reached": ["topology", "reservation"], "steps": {"topology": 0.1}, "status": INTERRUPTED}, False),
    ({"reached": ["topology", "reservation", "hosts"], "status": "failed"}, False),
    ({"reached": ["topology", "reservation", "hosts", "network", "vms", "program"], "status": DONE}, False),
    ({"reached": ["topology", "reservation", "hosts"], "status": DESTROYED}, True),
])
def test_an_outdir_is_reused_only_when_its_run_owns_nothing(tmp_path: Path, fields: dict[str, object],
                                                             reusable: bool) -> None:
    """topology.json is the only way to find a run's reservation and VMs: a new run (a dry run too) never
    overwrites it while they may exist."""
    _record(tmp_path, **fields)
    if reusable:
        check_outdir_reusable(tmp_path)
    else:
        with pytest.raises(UsageError, match="already holds run 20261125000000-abcdef"):
            check_outdir_reusable(tmp_path)


def test_a_dry_run_of_a_file_never_overwrites_a_live_run(tmp_path: Path) -> None:
    _record(tmp_path, reached=["topology", "reservation"], steps={"topology": 0.1}, status=DONE)
    before = (tmp_path / outdir.STATE_FILE).read_bytes()
    examples = Path(__file__).resolve().parents[2] / "examples" / "two_sites.xml"
    done = subprocess.run([str(Path(sys.executable).parent / "vm5k"), "--dry-run", "-i", str(examples),
                           "-o", str(tmp_path)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"vm5k: error: {tmp_path} already holds run")
    assert (tmp_path / outdir.STATE_FILE).read_bytes() == before
    assert json.loads(before)["meta"]["run"]["status"] == DONE
