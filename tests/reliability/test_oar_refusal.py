"""Fault matrix: OAR refuses the reservation ("This reservation could run at <date>").

A testbed of its own. Another user (bob) holds both nodes for an hour, so vm5k plans a dated reservation
after bob's job (a dry run: the plan is recorded, nothing is submitted). Bob then takes one node again
across that very slot. When the run goes on (``--resume`` of the dry run), OAR refuses the planned date and
proposes another: vm5k plans again from the proposed date and submits there, says so, and waits. The test
stops it while it waits (the wait is hours on the testbed's clock), moves the testbed's clock to the start,
and resumes: the waiting job is taken up, never submitted twice, and the run completes.
"""

from __future__ import annotations

import signal
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import requests
from vm5k_driver import TINY, Runs, admin, jobs_named, record, run_id, ssh_vm, state, vms_of

from lab_fixtures import LabTestbed

pytestmark = pytest.mark.integration

PARIS = ZoneInfo("Europe/Paris")


def as_bob(testbed: LabTestbed, payload: dict[str, object]) -> dict[str, object]:
    """A job of another user, through the API."""
    reply = requests.post(f"{testbed.api}/sites/rennes/jobs", json={"command": "sleep 86400", **payload},
                          headers={"X-Api-User-CN": "bob"}, timeout=30)
    reply.raise_for_status()
    return dict(reply.json())


def paris(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, PARIS).strftime("%Y-%m-%d %H:%M:%S")


def test_a_refused_date_is_planned_again_at_the_proposed_date_and_the_run_completes(
        lab_testbed_factory, runs_on) -> None:  # type: ignore[no-untyped-def]
    testbed: LabTestbed = lab_testbed_factory("rennes:2", ("--api-arg=--admin",))
    runs: Runs = runs_on(testbed)
    as_bob(testbed, {"resources": "{cluster='paradoxe'}/nodes=2,walltime=1:00:00", "name": "bob-now"})
    out = runs.outdir()
    planned = runs.run("--dry-run", "-n", "2", "-r", "rennes:2", "-w", "0:20:00", "-t", TINY, "-o", str(out))
    assert planned.returncode == 0, planned.stderr[-2000:]
    start = int(state(out)["meta"]["grid5000"]["plan"]["start"])
    # bob takes a node across the planned slot
    as_bob(testbed, {"resources": "nodes=1,walltime=0:30:00", "reservation": paris(start - 60),
                     "name": "bob-later"})

    process = runs.start("--resume", str(out), outdir=out)
    process.wait_for("refused the reservation", timeout=180)
    process.wait_for("waiting for 1 of 1 job", timeout=180)
    process.send(signal.SIGINT)
    stopped = process.finish(timeout=120)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    log = (out / "vm5k.log").read_text()
    refusal = next(line for line in log.splitlines() if "refused the reservation" in line)
    assert "OAR on rennes refused the reservation: it could run at " in refusal
    assert "(Europe/Paris): planning again from " in refusal
    (job,) = state(out)["meta"]["grid5000"]["jobs"]
    assert job["start"] >= start - 60 + 1800  # after bob's second job, as OAR proposed
    assert f"at {paris(job['start'])} (Europe/Paris)" in log  # submitted for that date
    assert job["state"] == "waiting"

    # the testbed's clock jumps to the start; the resumed run takes up the waiting job
    now = admin(testbed, "GET", "clock")["now"]
    admin(testbed, "POST", "clock", {"advance": job["start"] - now + 5})
    done = runs.run("--resume", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert record(out)["status"] == "done"
    assert {vm["state"] for vm in vms_of(out).values()} == {"OK"}
    assert ssh_vm(out, "vm-1").stdout.strip() == "vm-1"
    jobs = jobs_named(testbed, "rennes", f"vm5k-{run_id(out)}")
    assert [(j["uid"], j["state"]) for j in jobs] == [(job["id"], "running")]  # one job, ever
