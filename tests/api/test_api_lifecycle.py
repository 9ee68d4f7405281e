"""Changing a running fleet on the testbed: stop, start, reboot and reset, from Python and the command.

One deployment of two tiny VMs serves every check (a deployment is the expensive part): what a dry run
says and leaves untouched, one-line refusals, a stopped VM (its domain shut off on its host, the run still
ok, a resume keeping it stopped), a reboot (the guest's uptime starts again, its disk keeps a file), a
start, a reset (the file is gone, the new host key is in the outdir's known_hosts so ``ssh -F`` works).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vm5k_driver import TINY, Runs, ssh_vm, vms_of

import vm5k
from lab_fixtures import LabTestbed

pytestmark = pytest.mark.integration


def _domstate(run: vm5k.Run, vm_id: str) -> str:
    vm = next(vm for vm in run.vms if vm.id == vm_id)
    answer = run.run(["virsh", "-q", "-c", "qemu:///system", "domstate", vm.extra["domain"]], on=vm.host,
                     timeout=60)[0]
    assert answer.ok, answer.describe()
    return answer.stdout.strip()


def _uptime(out: Path, vm_id: str) -> float:
    answer = ssh_vm(out, vm_id, "cut -d' ' -f1 /proc/uptime")
    assert answer.returncode == 0, answer.stderr
    return float(answer.stdout)


def test_stop_start_reboot_reset(testbed: LabTestbed, runs: Runs) -> None:
    out = runs.outdir("fleet")
    run = vm5k.deploy(n_vm=2, resources="rennes:1", walltime=1800, vm_template=TINY, outdir=out)
    try:
        assert run.ok, run.ko
        # a dry run says what would happen and touches nothing (not even the record)
        before = (out / "topology.json").read_bytes()
        shown = runs.run("--stop", str(out), "vm-2", "--grace", "5", "--dry-run")
        assert shown.returncode == 0, shown.stderr
        assert "stop 1 VM (shut down, forced off after 5 s)" in shown.stdout and "vm-2 on" in shown.stdout
        assert (out / "topology.json").read_bytes() == before and _domstate(run, "vm-2") == "running"
        assert run.reset("vm-1", dry_run=True).change_plan.startswith("reset 1 VM")
        # bad input: one line, exit 2, nothing touched
        for argv, message in ((("--stop", str(out), "vm-9"), "vm-9 is not a VM of this run"),
                              (("--start", str(out), "vm-1", "extra"), "at most one comma separated list"),
                              (("--reboot", str(out), "-n", "3"), "--n-vm cannot be given with it"),
                              (("--start", str(out), "--grace", "3"), "--grace goes with --stop")):
            refused = runs.run(*argv)
            assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
            assert message in refused.stderr, refused.stderr
        with pytest.raises(vm5k.UsageError, match="vm-7 is not a VM"):
            run.stop(["vm-1", "vm-7"])
        assert (out / "topology.json").read_bytes() == before

        # stop from Python: the domain is shut off, the VM "stopped", the run still ok; a resume keeps it so
        assert run.stop("vm-2", grace=30).ok and run.ko == {}
        assert {vm.id: vm.state for vm in run.vms} == {"vm-1": "OK", "vm-2": "stopped"}
        assert _domstate(run, "vm-2") == "shut off"
        assert vms_of(out)["vm-2"]["state"] == "stopped"
        assert run.resume().ok, (run.status, run.message)
        assert _domstate(run, "vm-2") == "shut off" and run.vms[1].state == "stopped"

        # reboot from the command: a new uptime, the root disk kept
        marked = ssh_vm(out, "vm-1", "echo kept > /root/mark && sync")
        assert marked.returncode == 0, marked.stderr
        up = _uptime(out, "vm-1")
        rebooted = runs.run("--reboot", str(out), "vm-1", "--grace", "30")
        assert rebooted.returncode == 0, rebooted.stderr
        again = _uptime(out, "vm-1")
        assert again < up, (again, up)
        kept = ssh_vm(out, "vm-1", "cat /root/mark")
        assert kept.stdout == "kept\n", kept.stderr

        # start every VM (the running one is left as it is), then reset vm-1: a fresh disk, same address
        started = runs.run("--start", str(out))
        assert started.returncode == 0, started.stderr
        assert ssh_vm(out, "vm-2").stdout.strip() == "vm-2"
        first = {vm.id: (vm.ip, vm.mac, vm.host) for vm in run.reload().vms}
        assert run.reset(["vm-1"]).ok
        assert {vm.id: (vm.ip, vm.mac, vm.host) for vm in run.vms} == first
        gone = ssh_vm(out, "vm-1", "cat /root/mark || echo gone")
        assert gone.returncode == 0 and gone.stdout.strip().endswith("gone"), gone.stderr
        saved = json.loads((out / "topology.json").read_text())["meta"]["run"]
        assert saved["status"] == "done" and run.status == "done"
        assert "vm-1" in (out / "final_topo.xml").read_text()

        # more VMs: -n with --resume is the new total; a lower one points to --remove; no room is one line
        lower = runs.run("--resume", str(out), "-n", "1")
        assert lower.returncode == 2 and "vm5k --remove" in lower.stderr, lower.stderr
        full = runs.run("--resume", str(out), "-n", "900")
        assert full.returncode == 2 and full.stderr.strip().splitlines()[-1].startswith("vm5k: error:")
        before = (out / "topology.json").read_bytes()
        shown = runs.run("--resume", str(out), "-n", "3", "--dry-run")
        assert shown.returncode == 0 and "add 1 VM" in shown.stdout and "vm-3 on" in shown.stdout, shown
        assert (out / "topology.json").read_bytes() == before
        grown = runs.run("--resume", str(out), "-n", "3", "-t", '<vm mem="192" hdd="2" n_cpu="1"/>')
        assert grown.returncode == 0, grown.stderr
        run.reload()
        assert [(vm.id, vm.state) for vm in run.vms] == [("vm-1", "OK"), ("vm-2", "OK"), ("vm-3", "OK")]
        assert run.vms[2].mem == 192 and ssh_vm(out, "vm-3").stdout.strip() == "vm-3"
        host = run.vms[0].host
        names = f"/tmp/vm5k/runs/{run.run_id}/dnsmasq/hosts"

        def dns_names() -> dict[str, str]:
            answer = run.run(["cat", names], on=run.topology.meta["hypervisor"]["service_node"])[0]
            assert answer.ok, answer.describe()
            return {line.split()[1]: line.split()[0] for line in answer.stdout.splitlines()}

        assert dns_names() == {vm.id: vm.ip for vm in run.vms}

        # fewer VMs: vm-1 removed (domain, disk, address, name); its id is not reused, its address is
        removed = runs.run("--remove", str(out))
        assert removed.returncode == 2 and "--remove needs the VMs" in removed.stderr
        freed = run.vms[0].ip
        assert run.remove("vm-1").ok and [vm.id for vm in run.vms] == ["vm-2", "vm-3"]
        assert "vm-1" not in vms_of(out) and "vm-1" not in (out / "ssh_config").read_text()
        assert dns_names() == {vm.id: vm.ip for vm in run.vms}
        left = run.run(["sh", "-c", f"ls /tmp/vm5k/runs/{run.run_id}/disks; virsh -q list --all --name"],
                       on=host)[0]
        assert left.ok and "vm-1" not in left.stdout and "vm-2" in left.stdout, left.stdout
        assert [vm.id for vm in run.add(1).vms] == ["vm-2", "vm-3", "vm-4"]
        assert run.ok and run.vms[2].ip == freed and ssh_vm(out, "vm-4").stdout.strip() == "vm-4"
    finally:
        run.close()
