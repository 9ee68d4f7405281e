"""Live migration on the testbed: a VM moved between two nodes while a process runs inside it and a TCP
connection to it stays open; both survive, a file synced to its root disk before is read back after the
destination's and the guest's page caches were dropped, and the outdir shows the new host. A migration to
a full host (each host holds one tiny VM: ``--host-reserve``) is refused in one line and nothing moves.
A migration whose vm5k is killed once it has begun is settled by a resume (the VM kept where it runs, the
other host cleaned). Destroy removes the run's migration key from the hosts.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from vm5k_driver import TINY, Runs, node_script, record, ssh_vm, state, vms_of

import vm5k
from lab_fixtures import LabTestbed

pytestmark = pytest.mark.integration

COUNTER = "setsid sh -c 'while :; do echo $$ > /root/pid; date +%s > /root/tick; sleep 1; done' " \
          "</dev/null >/dev/null 2>&1 &"


def test_live_migration(testbed: LabTestbed, runs: Runs) -> None:
    planned = vm5k.plan(n_vm=2, resources="rennes:2", walltime=1800, vm_template=TINY)
    ram_mib = min(host.capacity.ram for host in planned.hosts if host.capacity) // 2**20
    reserve = ram_mib - 300  # room for one tiny VM per host, not two
    out = runs.outdir("mig")
    run = vm5k.deploy(n_vm=2, resources="rennes:2", walltime=1800, vm_template=TINY, host_reserve=reserve,
                      outdir=out)
    try:
        assert run.ok, run.ko
        first, second = run.vms[0].host, run.vms[1].host
        assert first != second
        short = second.split(".")[0]
        before = (out / "topology.json").read_bytes()
        for argv, message in ((("--migrate", str(out), f"vm-1={short}"), "no room for vm-1"),
                              (("--migrate", str(out), "vm-1=nohost-9"), "nohost-9 is not a host of"),
                              (("--migrate", str(out), f"vm-7={short}"), "vm-7 is not a VM of this run"),
                              (("--migrate", str(out)), "--migrate needs VM=HOST pairs"),
                              (("--migrate", str(out), f"vm-1={first}"), "vm-1 is already on")):
            refused = runs.run(*argv)
            assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
            assert message in refused.stderr, refused.stderr
        assert (out / "topology.json").read_bytes() == before
        shown = runs.run("--migrate", str(out), f"vm-2={first.split('.')[0]}", "--dry-run")
        assert shown.returncode == 2 and "no room for vm-2" in shown.stderr  # both hosts are full

        # room on the second host; a process and a TCP connection in vm-1, a file synced to its disk
        assert run.remove("vm-2").ok
        assert ssh_vm(out, "vm-1", COUNTER).returncode == 0
        assert ssh_vm(out, "vm-1", "echo on-disk > /root/file && sync").returncode == 0
        time.sleep(2)
        pid = ssh_vm(out, "vm-1", "cat /root/pid").stdout.strip()
        stream = subprocess.Popen(["ssh", "-F", str(out / "ssh_config"), "-o", "BatchMode=yes", "vm-1",
                                   "cat > /root/stream"], stdin=subprocess.PIPE, text=True)
        try:
            assert stream.stdin is not None
            stream.stdin.write("before\n")
            stream.stdin.flush()
            shown = runs.run("--migrate", str(out), f"vm-1={short}", "--dry-run")
            assert shown.returncode == 0 and f"vm-1: {first} -> {second}" in shown.stdout, shown.stderr

            assert run.migrate({"vm-1": short}).ok
            assert [(vm.id, vm.host, vm.state) for vm in run.vms] == [("vm-1", second, "OK")]
            stream.stdin.write("after\n")
            stream.stdin.close()
            assert stream.wait(timeout=120) == 0
        finally:
            if stream.poll() is None:
                stream.kill()
        assert ssh_vm(out, "vm-1", "cat /root/stream").stdout == "before\nafter\n"
        tick = int(ssh_vm(out, "vm-1", "cat /root/tick").stdout)
        assert ssh_vm(out, "vm-1", f"kill -0 {pid} && echo alive").stdout.strip() == "alive"
        assert tick >= int(time.time()) - 30  # still ticking on the new host
        assert run.run("sync; echo 3 > /proc/sys/vm/drop_caches", on=second)[0].ok
        again = ssh_vm(out, "vm-1", "sync; echo 3 > /proc/sys/vm/drop_caches; cat /root/file")
        assert again.stdout == "on-disk\n", again.stderr

        # the record: every file says vm-1 is on the second host
        assert vms_of(out)["vm-1"]["host"] == second
        entry = (out / "ssh_config").read_text().split("Host vm-1")[1].split("Host ")[0]
        assert f"ProxyJump {second}" in entry
        assert f'"vm-1": {{"vm5k_host": "{second}"' in (out / "inventory.yaml").read_text()
        assert "migrations" not in run.topology.meta
        listed = run.run(["virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name"], on=first)[0]
        assert listed.ok and f"vm5k_{run.run_id}_" not in listed.stdout

        # a migration back, its vm5k killed (-9) once it has begun: a resume keeps the VM where it runs
        back = runs.start("--migrate", str(out), f"vm-1={first.split('.')[0]}", outdir=out)
        back.wait_for("live migration from", timeout=300)
        time.sleep(1)
        back.send(signal.SIGKILL)
        back.finish(timeout=60)
        assert record(out)["status"] == "running" and "migrations" in state(out)["meta"]
        assert run.resume().ok, run.ko
        where = run.vms[0].host
        assert "migrations" not in run.topology.meta and vms_of(out)["vm-1"]["host"] == where
        for host in (first, second):
            names = run.run(["virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name"], on=host)[0]
            assert names.ok and (f"vm5k_{run.run_id}_vm-1" in names.stdout) == (host == where), (host, where)
        assert ssh_vm(out, "vm-1", "cat /root/stream").stdout == "before\nafter\n"

        run.destroy()
        for node in (first, second):
            keys = node_script(testbed, node, "cat /root/.ssh/authorized_keys").stdout
            assert f"vm5k-migration-{run.run_id}" not in keys
    finally:
        run.close()
