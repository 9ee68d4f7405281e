"""Fault matrix: Ctrl-C (SIGINT) and SIGTERM at each step; --resume completes; --destroy cleans all.

One run is stopped once in every step of the workflow, each time resumed, until it completes; the signals
alternate, and the second chain starts with the other one, so every step meets both. The SIGTERMs of the
second chain go to a vm5k started the way a script starts a background job (SIGINT ignored), which is
what batch systems stop with SIGTERM.

Each step is held long enough to be stopped *inside* it, by means a user could meet:
- topology and reservation: a slow API (the testbed's ``latency`` fault);
- hosts: Kadeploy at work (the testbed's deployment takes seconds, as a real one takes minutes);
- network: another process holding the hosts' resolver lock (vm5k waits for it, as for another run);
- vms: the VMs booting;
- program: a program that waits for the test to let it end.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests
from vm5k_driver import (
    TINY,
    Runs,
    Vm5kProcess,
    admin,
    domains,
    ignore_sigint,
    jobs_named,
    live_jobs,
    node_script,
    record,
    run_id,
    ssh_vm,
    state,
    vms_of,
)

from lab_fixtures import LabTestbed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROGRAM = """#!/bin/sh
echo $$ > program.pid
while [ ! -e ../let-the-program-end ]; do sleep 0.2; done
echo "the program saw $(wc -l < "$VM5K_VMS_LIST") VMs"
"""
#: where the hosts' resolver lock lives (vm5k's default folder on hosts, see vm5k.hypervisor.layout)
RESOLVER_LOCK = "/tmp/vm5k/host/resolv.lock"


@pytest.fixture(scope="module")
def signal_testbed(lab_testbed_factory) -> LabTestbed:  # type: ignore[no-untyped-def]
    """A testbed of this module's own: its API is slowed down on purpose."""
    return lab_testbed_factory("rennes:2", ("--api-arg=--admin",))


def stop(process: Vm5kProcess, sig: signal.Signals, step: str) -> str:
    """Stop a run with `sig` and check it stopped as promised; returns its stderr."""
    process.send(sig)
    done = process.finish(timeout=300)
    assert done.returncode == 130, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr
    assert f"vm5k: interrupted during the {step} step" in done.stderr, done.stderr
    return done.stderr


def hold_resolver_lock(testbed: LabTestbed, node: str) -> int:
    """Take the hosts' resolver lock on `node` with a process of ours; returns its PID on the node."""
    holder = f"exec 9>>{RESOLVER_LOCK}; flock 9; exec sleep 600"  # the PID we get is the one holding it
    answer = node_script(testbed, node, f"mkdir -p {os.path.dirname(RESOLVER_LOCK)}\n"
                                        f"nohup sh -c '{holder}' >/dev/null 2>&1 &\necho $!\n")
    pid = int(answer.stdout.strip())
    deadline = time.monotonic() + 30
    while node_script(testbed, node, f"flock -n {RESOLVER_LOCK} true").returncode == 0:
        assert time.monotonic() < deadline, "the lock holder did not take the lock"
        time.sleep(0.1)
    return pid


def wait_deployments_ended(testbed: LabTestbed, out: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for deployment in state(out)["meta"]["grid5000"]["deployments"]:
        url = f"{testbed.api}/sites/{deployment['site']}/deployments/{deployment['uid']}"
        while requests.get(url, timeout=30).json()["status"] not in ("terminated", "error", "canceled"):
            assert time.monotonic() < deadline
            time.sleep(0.5)


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM], ids=["INT-first", "TERM-first"])
def test_stopped_in_every_step_then_resumed_to_the_end(signal_testbed: LabTestbed, runs_on, first) -> None:  # type: ignore[no-untyped-def]
    testbed = signal_testbed
    runs: Runs = runs_on(testbed)
    signals = [first, signal.SIGTERM if first == signal.SIGINT else signal.SIGINT] * 3
    (runs.workdir / "xp.sh").write_text(PROGRAM)
    out = runs.outdir()
    # --forcedeploy: Kadeploy runs even on nodes deployed by an earlier test: the hosts step can stop in it
    command = ("-n", "2", "-r", "rennes:2", "-w", "0:20:00", "-t", TINY, "-p", "xp.sh", "--forcedeploy",
               "-o", str(out))

    def start(*args: str, sig: signal.Signals) -> Vm5kProcess:
        # a SIGTERM goes to a vm5k that ignores SIGINT, as the background job of a script does
        return runs.start(*args, outdir=out, preexec=ignore_sigint if sig == signal.SIGTERM else None)

    # topology: nothing reserved yet, so the message says to run the command again, and the outdir can be
    admin(testbed, "PATCH", "faults", {"latency": 0.5})
    process = start(*command, sig=signals[0])
    process.wait_for(timeout=180, text="topology: choose the hosts")
    err = stop(process, signals[0], "topology")
    assert "before anything was reserved or started: run the same command again" in err
    assert record(out)["status"] == "interrupted" and record(out)["steps"] == {}
    assert jobs_named(testbed, "rennes", f"vm5k-{run_id(out)}") == []

    # reservation: from here on, the message says how to resume or destroy
    process = start(*command, sig=signals[1])
    process.wait_for(timeout=180, text="reservation: reserve the hosts")
    err = stop(process, signals[1], "reservation")
    assert f"continue it:   vm5k --resume {out}" in err and f"or remove all: vm5k --destroy {out}" in err
    run = run_id(out)
    assert record(out)["status"] == "interrupted"
    assert record(out)["message"] == "interrupted during reservation"
    assert len(live_jobs(testbed, "rennes", run)) <= 1
    admin(testbed, "PATCH", "faults", {"latency": 0})

    # hosts: stopped while Kadeploy works; the deployment is on record, so the resumed run waits for it
    process = start("--resume", str(out), sig=signals[2])
    process.wait_for(timeout=180, text="deploying debian12-min")
    stop(process, signals[2], "hosts")
    assert state(out)["meta"]["grid5000"]["deployments"], "the running deployment was not recorded"
    assert "hosts" not in record(out)["steps"]
    wait_deployments_ended(testbed, out)

    # network: held on the resolver lock of a host
    holder = hold_resolver_lock(testbed, testbed.nodes[0])
    try:
        process = start("--resume", str(out), sig=signals[3])
        process.wait_for(timeout=180, text="network: serve the VMs' names")
        time.sleep(1)  # well inside the step: vm5k waits for the lock
        stop(process, signals[3], "network")
        assert "hosts" in record(out)["steps"] and "network" not in record(out)["steps"]
    finally:
        node_script(testbed, testbed.nodes[0], f"kill {holder}")

    # vms: stopped while they boot
    process = start("--resume", str(out), sig=signals[4])
    process.wait_for(timeout=180, text="vms: create and start the VMs")
    stop(process, signals[4], "vms")

    # program: the program is stopped with vm5k, not left running
    process = start("--resume", str(out), sig=signals[5])
    process.wait_for(timeout=180, text="running the program")
    deadline = time.monotonic() + 60
    while not (out / "program.pid").exists() or not (out / "program.pid").read_text().strip():
        assert time.monotonic() < deadline, "the program did not start"
        time.sleep(0.1)
    program_pid = int((out / "program.pid").read_text())
    stop(process, signals[5], "program")
    assert not Path(f"/proc/{program_pid}").exists(), "the program outlived vm5k"
    assert "vms" in record(out)["steps"] and "program" not in record(out)["steps"]

    # the last resume completes: everything answers, nothing was done twice
    (runs.workdir / "let-the-program-end").touch()
    done = runs.run("--resume", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert record(out)["status"] == "done"
    assert list(record(out)["steps"]) == ["topology", "reservation", "hosts", "network", "vms", "program"]
    assert "the program saw 2 VMs" in (out / "vm5k.log").read_text()
    vms = vms_of(out)
    assert {vm["state"] for vm in vms.values()} == {"OK"}
    for vm in vms:
        assert ssh_vm(out, vm).stdout.strip() == vm
    # one reservation alive, the recorded one; any other job of the run was ended, none is lost
    (recorded,) = state(out)["meta"]["grid5000"]["jobs"]
    assert [job["uid"] for job in live_jobs(testbed, "rennes", run)] == [recorded["id"]]
    # one domain per VM, on its host
    for node in testbed.nodes:
        expected = sorted(f"vm5k_{run}_{vm}" for vm, row in vms.items() if row["host"] == node)
        assert domains(testbed, node, run) == expected
