"""The whole run and its destroy at the largest size a 2-core machine affords in CI: 16 hosts, 32 VMs.

Bigger sizes (32 and 64 hosts) are `benchmarks/scale.py`'s; this test proves that nothing breaks when
the fleet is wider than the other tests' two to four hosts: every VM answers, the outputs name all of
them, the run's timeline has every VM's times, and the destroy leaves nothing on any node or in OAR.
The testbed is this module's own (16 nodes of rennes), brought down at its end.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import vm5k
from lab_fixtures import STATE_ROOT, LabTestbed, bring_down, bring_up, lab_available
from vm5k.timeline import ANSWERED, CREATED, STARTED, times_of

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

VM5K = str(Path(sys.executable).parent / "vm5k")
HOSTS, VMS = 16, 32
SMALL = '<vm mem="192" hdd="2" n_cpu="1"/>'


@pytest.fixture(scope="module")
def wide_testbed() -> Iterator[LabTestbed]:
    reason = lab_available()
    if reason:
        pytest.skip(f"no testbed on this machine: {reason}")
    testbed = bring_up(STATE_ROOT / f"pytest-{os.getpid()}-scale", f"rennes:{HOSTS}")
    try:
        yield testbed
    finally:
        bring_down(testbed)


def vm5k_command(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VM5K, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1500,
                          stdin=subprocess.DEVNULL, check=False)


def leftovers(testbed: LabTestbed, run_id: str) -> dict[str, str]:
    """What the run left on each node: domains, files or dnsmasq processes carrying its id."""
    script = (f"virsh -q -c qemu:///system list --all --name | grep -F {run_id} ; "
              f"ls -d /tmp/vm5k/runs/{run_id} 2>/dev/null ; pgrep -af '[d]nsmasq.*{run_id}' ; true")
    found = {node: testbed.ssh(node, script).stdout.strip() for node in testbed.nodes}
    return {node: text for node, text in found.items() if text}


def test_sixteen_hosts_and_thirty_two_vms(wide_testbed: LabTestbed, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # no Grid'5000 API configured (HOME is the test's): the command and the API use this testbed
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("VM5K_TESTBED_STATE", str(wide_testbed.state_dir))
    env = dict(os.environ)
    out = tmp_path / "out"
    done = vm5k_command("-n", str(VMS), "-r", f"rennes:{HOSTS}", "-w", "0:40:00", "-t", SMALL, "-o", str(out),
                        "--plot", cwd=tmp_path, env=env)
    run_id = json.loads((out / "topology.json").read_text())["meta"]["run_id"] if out.exists() else None
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        with (out / "vms.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == VMS and {row["state"] for row in rows} == {"OK"}
        hosts = (out / "hosts.list").read_text().split()
        assert sorted(hosts) == sorted(wide_testbed.nodes)
        assert Counter(row["host"] for row in rows) == dict.fromkeys(hosts, VMS // HOSTS)  # round-robin
        # every VM answers through the API, as itself
        with vm5k.Run.load(out) as run:
            answers = run.run("hostname", timeout=120)
            assert sorted(answers.ok_hosts) == sorted(vm.id for vm in run.vms)
            assert all(result.stdout.strip() == result.host for result in answers)
            # the timeline has each VM's creation, start and login, in that order
            for vm in run.topology.vms():
                times = times_of(vm)
                assert times[CREATED] <= times[STARTED] <= times[ANSWERED], (vm.id, times)
        for name in ("topology.png", "timeline.png"):
            assert (out / name).read_bytes().startswith(b"\x89PNG"), name
    finally:
        if run_id is not None:
            destroyed = vm5k_command("--destroy", str(out), cwd=tmp_path, env=env)
            assert destroyed.returncode == 0, destroyed.stderr[-3000:]
            assert leftovers(wide_testbed, run_id) == {}
            site = wide_testbed.grid5000().sites["rennes"]
            assert site.jobs.list(name=f"vm5k-{run_id}", state="waiting,launching,running") == []
