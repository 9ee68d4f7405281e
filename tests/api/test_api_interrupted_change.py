"""A change of a running fleet cut by Ctrl-C leaves a true record, and ``--resume`` finishes it.

A reboot is a shutdown then a start: cut between the two, its VMs are shut off while the record still
calls them OK. So the change stays pending in the record: the command exits 130 naming it and how to go
on, the run is ``interrupted``, another change is refused in one line until it is finished, and
``vm5k --resume`` does the reboot again, after which both VMs answer, freshly booted.
"""

from __future__ import annotations

import signal
import time

import pytest
from vm5k_driver import TINY, Runs, record, ssh_vm, state

from lab_fixtures import LabTestbed

pytestmark = pytest.mark.integration


def test_an_interrupted_reboot_is_finished_by_resume(testbed: LabTestbed, runs: Runs) -> None:
    out = runs.outdir()
    deployed = runs.start("-n", "2", "-r", "rennes:2", "-w", "0:20:00", "-t", TINY, "-o", str(out),
                          outdir=out).finish()
    assert deployed.returncode == 0, deployed.stderr[-3000:]

    began = time.monotonic()
    reboot = runs.start("--reboot", str(out), outdir=out)
    reboot.wait_for("reboot: reboot 2 VMs", timeout=120)
    time.sleep(1)  # the VMs are being shut down, or started again
    reboot.send(signal.SIGINT)
    cut = reboot.finish(timeout=120)
    assert cut.returncode == 130, cut.stderr[-3000:]
    assert "interrupted during the reboot of vm-1, vm-2" in cut.stderr
    assert f"vm5k --resume {out}" in cut.stderr
    assert "Traceback" not in cut.stderr
    assert record(out)["status"] == "interrupted"
    assert state(out)["meta"]["pending"]["operation"] == "reboot"

    refused = runs.start("--stop", str(out), "vm-1", outdir=out).finish(timeout=120)
    assert refused.returncode == 2
    assert refused.error_lines == [f"vm5k: error: the reboot of vm-1, vm-2 in {out} did not end: "
                                   f"vm5k --resume {out} finishes it first"]

    resumed = runs.start("--resume", str(out), outdir=out).finish()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert record(out)["status"] == "done" and "pending" not in state(out)["meta"]
    for vm in ("vm-1", "vm-2"):
        answer = ssh_vm(out, vm, "cut -d' ' -f1 /proc/uptime")
        assert answer.returncode == 0, answer.stderr
        assert float(answer.stdout) < time.monotonic() - began, vm  # booted after the reboot began
