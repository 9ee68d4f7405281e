"""The Python API end to end on the testbed: what a notebook or a script does with a fleet.

Deploy, look at the VMs, run commands and copy files in parallel, load the run in a new process and from
inside a running event loop, the run's reservation killed under it; one owner at a time (a second
operation refused, a destroy that stops a deployment, the lock of a process killed with kill -9). Every run
is destroyed at the end of its test and nothing of it may be left on the nodes or in OAR.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from vm5k_driver import TINY, Runs, leftovers, live_jobs, record, run_id, ssh_vm

import vm5k
from lab_fixtures import LabTestbed

pytestmark = pytest.mark.integration


def test_a_fleet_from_python_and_its_reservation_killed_under_it(testbed: LabTestbed, runs: Runs,
                                                                 tmp_path: Path) -> None:
    out = runs.outdir("xp")
    run = vm5k.deploy(n_vm=2, resources="rennes:1", walltime=1800, vm_template=TINY, outdir=out)
    try:
        assert run.ok and run.status == "done" and run.ko == {}
        assert [vm.id for vm in run.vms] == ["vm-1", "vm-2"]
        assert all(vm.ip and vm.mac and vm.host and vm.state == "OK" for vm in run.vms)
        assert [host.id for host in run.hosts] == [run.vms[0].host]

        results = run.run("hostname", timeout=60)
        assert [(r.host, r.exit_status, r.stdout.strip()) for r in results] == [("vm-1", 0, "vm-1"),
                                                                                 ("vm-2", 0, "vm-2")]
        failing = run.run(["sh", "-c", "echo oops >&2; exit 3"], on="vm-2")
        assert failing["vm-2"].exit_status == 3 and failing["vm-2"].stderr == "oops\n"
        assert run.run("uname -n", on=run.hosts).all_ok

        script = tmp_path / "bench.sh"
        script.write_text("#!/bin/sh\necho bench on $(hostname)\n")
        script.chmod(0o755)
        assert run.put(script, "/root/").all_ok
        assert [r.stdout for r in run.run(["/root/bench.sh"])] == ["bench on vm-1\n", "bench on vm-2\n"]
        assert run.get("/root/bench.sh", tmp_path / "back").all_ok
        assert (tmp_path / "back" / "vm-1" / "bench.sh").read_text() == script.read_text()
        with pytest.raises(vm5k.UsageError, match="neither a VM nor a host"):
            run.run("true", on="vm-9")

        # the outdir is the truth: the command reaches the same VMs, another process loads the same run
        assert ssh_vm(out, "vm-1").stdout.strip() == "vm-1"
        code = (f"import vm5k; run = vm5k.Run.load({str(out)!r}); "
                "print(run.status, [vm.id for vm in run.vms], "
                "run.run('hostname', on='vm-2')[0].stdout.strip())")
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert other.stdout.split("\n")[0] == "done ['vm-1', 'vm-2'] vm-2", other.stderr

        # from inside a running event loop (Jupyter, asyncio programs): the sync calls and their a-variants
        async def inside() -> tuple[list[str], list[str]]:
            with vm5k.Run.load(out) as again:
                awaited = await again.arun("hostname")
                blocking = again.run("hostname")
            return [r.stdout.strip() for r in awaited], [r.stdout.strip() for r in blocking]

        assert asyncio.run(inside()) == (["vm-1", "vm-2"], ["vm-1", "vm-2"])
        assert run.resume().status == "done"  # nothing left to do: every VM still answers

        # the job killed outside vm5k (oardel): seen from the API, before anything is asked of the hosts
        jobs = live_jobs(testbed, "rennes", run.run_id)
        assert len(jobs) == 1
        reply = requests.delete(f"{testbed.api}/sites/rennes/jobs/{jobs[0]['uid']}", timeout=30)
        assert reply.status_code in (200, 202), reply.text
    finally:
        run.close()

    with pytest.raises(vm5k.DeploymentError) as over:
        vm5k.Run.load(out).resume()
    message = str(over.value)
    assert f"job rennes:{jobs[0]['uid']} is" in message and "the reservation of the run" in message
    assert f"vm5k --destroy {out}" in message and over.value.run.outdir == out
    closed = vm5k.Run.load(out).destroy()
    assert closed.status == "destroyed"
    assert "was already over" in (out / "vm5k.log").read_text()
    # whether or not the testbed reboots the job's nodes, what the run left there is the testbed's to
    # clean: the record says destroyed, OAR holds nothing
    assert live_jobs(testbed, "rennes", run.run_id) == []
    clean_nodes(testbed, run.run_id)


def clean_nodes(testbed: LabTestbed, run: str) -> None:
    """What an ended reservation's run left on the testbed's nodes (a testbed that does not reboot the
    nodes of an ended job keeps them): removed by the testbed's own access, so later tests start clean."""
    script = (f"for d in $(virsh -q -c qemu:///system list --all --name | grep -F -- {run}); do "
              f"virsh -q -c qemu:///system destroy $d; virsh -q -c qemu:///system undefine $d; done; "
              f"pkill -f '[d]nsmasq.*{run}'; rm -rf /tmp/vm5k/runs/{run}; "
              f"sed -i '/vm5k run {run}/d' /etc/resolv.conf; true")
    for node in testbed.nodes:
        testbed.ssh(node, "sh -s", input=script, timeout=120, check=False)
    assert leftovers(testbed, run) == {}


def test_one_owner_at_a_time_and_destroy_stops_a_deployment(testbed: LabTestbed, runs: Runs) -> None:
    out = runs.outdir("held")
    deploying = runs.start("-n", "2", "-r", "rennes:1", "-w", "0:30:00", "-t", TINY, "-o", str(out),
                           outdir=out)
    deploying.wait_for("hosts: ")  # reserved, the hosts being set up
    # a second operation is refused at once, naming the holder
    second = runs.run("--resume", str(out), timeout=120)
    assert second.returncode == 2, second.stderr
    (line,) = second.error_lines
    assert line.startswith(f"vm5k: error: the run in {out} is held by another vm5k: deploy by pid "
                           f"{deploying.process.pid} on ")
    with pytest.raises(vm5k.RunBusy):
        vm5k.Run.load(out).resume()

    # destroy asks the deployment to stop, waits for it, then destroys
    destroyed = vm5k.Run.load(out).destroy()
    done = deploying.finish(timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"the run is being destroyed by pid {os.getpid()}" in done.error_lines[-1]
    assert destroyed.status == "destroyed" and record(out)["status"] == "destroyed"
    assert live_jobs(testbed, "rennes", destroyed.run_id) == []
    assert leftovers(testbed, destroyed.run_id) == {}


def test_a_plan_from_python_deployed_by_the_command_whose_process_is_killed_with_kill_9(
        testbed: LabTestbed, runs: Runs) -> None:
    out = runs.outdir("planned")
    plan = vm5k.plan(n_vm=1, resources="rennes:1", walltime="0:30:00", vm_template=TINY, outdir=out)
    assert plan.platform == "testbed" and plan.outdir == out
    assert [vms for vms in plan.placement.values()] == [["vm-1"]]
    assert "Would reserve 1 host" in plan.text and record(out)["dry_run"]
    # the command deploys the plan (as after vm5k --dry-run -o), and dies by kill -9 on the way
    deploying = runs.start("--resume", str(out), outdir=out)
    deploying.wait_for("hosts: ")
    deploying.send(signal.SIGKILL)
    deploying.finish(timeout=60)
    assert record(out)["status"] == "running"  # what the dead process last wrote
    run = vm5k.Run.load(out)
    assert run.status == "running"
    run.destroy()  # the kernel freed the lock: no wait, no refusal
    assert run.status == "destroyed"
    assert live_jobs(testbed, "rennes", run_id(out)) == []
    assert leftovers(testbed, run_id(out)) == {}
