"""Fault matrix: 20% of API calls fail (500/502/504) or are slow, and job submissions are executed but their
reply is lost.

A testbed of its own, two sites, started with the API's fault injection: 20% of calls answered 500, 502 or
504 at once (nothing done), 20% of replies delayed by a second, and *every* POST and DELETE that is not
failed outright executed but answered with a 5xx (the reply is lost: the job or deployment exists, the
client was told it failed). The run must succeed with exactly one job per site ever created, one Kadeploy
per site, and its destroy must end them through the same faults.
"""

from __future__ import annotations

import pytest
import requests
from vm5k_driver import TINY, Runs, admin, jobs_named, live_jobs, record, run_id, ssh_vm, state, vms_of

from lab_fixtures import LabTestbed

pytestmark = pytest.mark.integration

SITES = ("rennes", "nancy")
FAULTS = ("--api-arg=--admin", "--api-arg=--fail-rate=0.2", "--api-arg=--slow-rate=0.2",
          "--api-arg=--slow-seconds=1", "--api-arg=--lost-reply-rate=1", "--api-arg=--seed=7")


def deployments_on(testbed: LabTestbed, site: str) -> list[dict]:
    for _ in range(50):
        reply = requests.get(f"{testbed.api}/sites/{site}/deployments", params={"limit": 100}, timeout=30)
        if reply.status_code == 200:
            return list(reply.json()["items"])
    raise AssertionError("the API kept failing")


def test_a_run_through_api_faults_succeeds_with_one_job_per_site(lab_testbed_factory, runs_on) -> None:  # type: ignore[no-untyped-def]
    testbed: LabTestbed = lab_testbed_factory("rennes:1,nancy:1", FAULTS)
    runs: Runs = runs_on(testbed)
    out = runs.outdir()
    done = runs.run("-n", "2", "-r", "rennes:1,nancy:1", "-w", "0:20:00", "-t", TINY, "-o", str(out))

    assert done.returncode == 0, done.stderr[-3000:]
    assert record(out)["status"] == "done"
    vms = vms_of(out)
    assert {vm["site"] for vm in vms.values()} == set(SITES)
    assert {vm["state"] for vm in vms.values()} == {"OK"}
    for vm in vms:
        assert ssh_vm(out, vm).stdout.strip() == vm
    # the faults happened, the lost submissions were looked up instead of sent again
    injected = admin(testbed, "GET", "state")["faults_injected"]
    assert injected["errors"] > 0 and injected["slow"] > 0 and injected["lost_replies"] >= len(SITES)
    assert "looking it up before trying again" in (out / "vm5k.log").read_text()
    # exactly one job per site was ever created, the recorded one, running; one deployment per site
    run = run_id(out)
    recorded = {job["site"]: job["id"] for job in state(out)["meta"]["grid5000"]["jobs"]}
    for site in SITES:
        jobs = jobs_named(testbed, site, f"vm5k-{run}")
        assert [(job["uid"], job["state"]) for job in jobs] == [(recorded[site], "running")], site
        assert len(deployments_on(testbed, site)) == 1, site

    # destroy, through the same faults: the jobs end
    destroyed = runs.run("--destroy", str(out))
    assert destroyed.returncode == 0, destroyed.stderr[-3000:]
    assert record(out)["status"] == "destroyed"
    for site in SITES:
        assert live_jobs(testbed, site, run) == []
