"""`up` twice, `down` after a crash in the middle of `up`, `down` leaving nothing, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab_fixtures import STATE_ROOT, LabTestbed, lab_available, run_testbed

pytestmark = pytest.mark.integration


def leaks() -> list[str]:
    """Anything of a rennes testbed visible in the machine's own namespaces (there must be nothing)."""
    def out(*argv: str) -> str:
        return subprocess.run(list(argv), capture_output=True, text=True, check=False).stdout

    marks = ("br-prod", "br-kavlan", "vtb-", "paradoxe", "172.16.9", "172.16.10", "172.16.11", "10.156.",
             "10.157.", "10.158.", "10.159.")
    lines = out("ip", "-o", "link", "show").splitlines() + out("ip", "-4", "route", "show", "table", "all"
                                                                ).splitlines()
    found = [line for line in lines if any(mark in line for mark in marks)]
    if "grid5000.fr" in Path("/etc/hosts").read_text():
        found.append("/etc/hosts names a grid5000.fr host")
    return found


def pids_of(state_dir: Path) -> list[tuple[int, int]]:
    data = json.loads((state_dir / "lab-runtime.json").read_text())
    return [(r["pid"], r["start"]) for r in data["resources"].values() if r["kind"] == "process"]


def alive(pid: int, start: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] not in ("Z", "X") and int(fields[19]) == start


def assert_nothing_left(state_dir: Path, testbed_id: str, pids: list[tuple[int, int]]) -> None:
    assert [p for p in pids if alive(*p)] == []
    assert [n for n in os.listdir("/run/netns") if n.startswith(f"vtb-{testbed_id}-")] == [] \
        if os.path.isdir("/run/netns") else True
    assert not Path(f"/sys/fs/cgroup/memory/vm5k-testbed/{testbed_id}").exists()
    assert str(state_dir) not in Path("/proc/self/mountinfo").read_text()
    leftovers = [entry.name for entry in state_dir.iterdir()] if state_dir.exists() else []
    assert set(leftovers) <= {"keys", "pytest-owner.pid"}


@pytest.fixture
def own_state_dir() -> Path:
    reason = lab_available()
    if reason:
        pytest.skip(reason)
    path = STATE_ROOT / f"pytest-{os.getpid()}-own-{time.monotonic_ns()}"
    path.mkdir(parents=True)
    (path / "pytest-owner.pid").write_text(str(os.getpid()))
    yield path
    run_testbed("down", "--state", str(path), timeout=300)
    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_up_twice_changes_nothing(lab_testbed: LabTestbed) -> None:
    before = lab_testbed.refresh()
    proc = run_testbed("up", "--state", str(lab_testbed.state_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    after = json.loads(proc.stdout)
    assert after["api"] == before["api"]
    assert {k: v["pid"] for k, v in after["pids"].items()} == {k: v["pid"] for k, v in before["pids"].items()}
    different = run_testbed("up", "--state", str(lab_testbed.state_dir), "--site", "nancy:1")
    assert different.returncode == 2 and "already up" in different.stderr


def test_down_after_a_crash_in_the_middle_of_up_leaves_nothing(own_state_dir: Path) -> None:
    assert leaks() == []
    up = subprocess.Popen([sys.executable, "-m", "g5k_testbed.cli", "up", "--site", "rennes:2", "--state",
                           str(own_state_dir)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert up.stderr is not None
    for line in up.stderr:  # let it create namespaces, a DNS server and a first node, then kill it
        if "node paradoxe-2" in line:
            break
    up.send_signal(signal.SIGKILL)
    up.wait()
    testbed_id = json.loads((own_state_dir / "lab.json").read_text())["testbed_id"]
    pids = pids_of(own_state_dir)
    assert pids, "the crash happened after processes were started and recorded"
    down = run_testbed("down", "--state", str(own_state_dir))
    assert down.returncode == 0, down.stderr
    assert_nothing_left(own_state_dir, testbed_id, pids)
    assert leaks() == []


def test_up_then_down_leaves_nothing(own_state_dir: Path) -> None:
    up = run_testbed("up", "--site", "rennes:1", "--state", str(own_state_dir), "--json")
    assert up.returncode == 0, up.stderr
    status = json.loads(up.stdout)
    assert leaks() == []  # even while it runs: no route, no link, no name in the machine's namespaces
    pids = pids_of(own_state_dir)
    down = run_testbed("down", "--state", str(own_state_dir))
    assert down.returncode == 0, down.stderr
    assert_nothing_left(own_state_dir, status["testbed_id"], pids)
    assert leaks() == []
    again = run_testbed("status", "--state", str(own_state_dir), "--json")
    assert json.loads(again.stdout)["state"] == "down" and again.returncode == 1
