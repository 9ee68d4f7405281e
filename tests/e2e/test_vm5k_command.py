"""The `vm5k` command against the testbed, typed as a user would, checked the way a user would check it.

No Grid'5000 API is configured (HOME is a temporary folder), so vm5k runs on the embedded testbed: the
session's testbed, named through VM5K_TESTBED_STATE. Every run is destroyed at the end of its test, and
the test checks that nothing of it is left on the nodes or in OAR.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab_fixtures import OWNER_FILE, STATE_ROOT, LabTestbed, lab_available, run_testbed
from waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

VM5K = str(Path(sys.executable).parent / "vm5k")
TINY = '<vm mem="256" hdd="2" n_cpu="1" cpuset="auto"/>'


@pytest.fixture
def testbed(lab_testbed: LabTestbed, monkeypatch: pytest.MonkeyPatch) -> LabTestbed:
    monkeypatch.setenv("VM5K_TESTBED_STATE", str(lab_testbed.state_dir))
    return lab_testbed


def vm5k(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VM5K, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


def state(out: Path) -> dict:
    return json.loads((out / "topology.json").read_text())


def vms_of(out: Path) -> list[dict]:
    with (out / "vms.csv").open() as handle:
        return list(csv.DictReader(handle))


def ssh_vm(out: Path, vm: str, command: str) -> subprocess.CompletedProcess[str]:
    """What the README says: ssh -F OUTDIR/ssh_config <vm id>."""
    return subprocess.run(["ssh", "-F", str(out / "ssh_config"), "-o", "BatchMode=yes",
                           "-o", "ConnectTimeout=30", vm, command],
                          capture_output=True, text=True, timeout=120, check=False)


def live_jobs(testbed: LabTestbed, run_id: str) -> list:
    site = testbed.grid5000().sites["rennes"]
    return site.jobs.list(name=f"vm5k-{run_id}", state="waiting,launching,running")


def leftovers(testbed: LabTestbed, run_id: str) -> dict[str, str]:
    """What a run left on each node: domains, files, dnsmasq, resolver lines carrying its id."""
    script = (f"virsh -q -c qemu:///system list --all --name | grep -F {run_id} ; "
              f"ls -d /tmp/vm5k/runs/{run_id} 2>/dev/null ; "
              f"pgrep -af '[d]nsmasq.*{run_id}' ; grep -F {run_id} /etc/resolv.conf ; true")
    found = {node: testbed.ssh(node, script).stdout.strip() for node in testbed.nodes}
    return {node: text for node, text in found.items() if text}


@pytest.fixture
def destroyed(testbed: LabTestbed, tmp_path: Path) -> Iterator[list[Path]]:
    """Outdirs to destroy at the end of the test, even when it fails; then nothing may be left."""
    outdirs: list[Path] = []
    yield outdirs
    for out in outdirs:
        if (out / "topology.json").exists():
            run_id = state(out)["meta"]["run_id"]
            done = vm5k("--destroy", str(out), cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            assert leftovers(testbed, run_id) == {}
            assert live_jobs(testbed, run_id) == []


def test_a_user_run_with_program_and_plot(testbed: LabTestbed, tmp_path: Path, destroyed: list[Path]) -> None:
    (tmp_path / "xp.sh").write_text(
        '#!/bin/sh\nset -e\nwhile read -r ip id; do ssh -n -F "$VM5K_SSH_CONFIG" "$id" hostname; done '
        '< "$VM5K_VMS_LIST" > hostnames.txt\necho "program saw $(wc -l < "$VM5K_VMS_LIST") VMs"\n')
    out = tmp_path / "out"
    destroyed.append(out)
    done = vm5k("-n", "4", "-r", "rennes:2", "-w", "0:20:00", "-t", TINY, "-o", str(out), "-p", "xp.sh",
                "--plot", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "platform: testbed" in done.stderr.splitlines()[0] + done.stderr.splitlines()[1]
    # the lists, as existing scripts read them
    vms = [line.split("\t") for line in (out / "vms.list").read_text().splitlines()]
    assert [vm for _, vm in vms] == ["vm-1", "vm-2", "vm-3", "vm-4"]
    hosts = (out / "hosts.list").read_text().split()
    assert len(hosts) == 2 and set(hosts) <= set(testbed.nodes)
    rows = vms_of(out)
    assert {row["state"] for row in rows} == {"OK"}
    assert {row["host"] for row in rows} == set(hosts)  # round-robin: both hosts used
    for row in rows:
        assert row["mac"].lower() == "00:16:3e:" + ":".join(f"{int(o):02x}" for o in row["ip"].split(".")[1:])
    # every VM answers ssh -F OUTDIR/ssh_config <id>, as itself, with the run's key only
    for _, vm in vms:
        answer = ssh_vm(out, vm, "hostname")
        assert answer.returncode == 0 and answer.stdout.strip() == vm, answer.stderr
    # names resolve through the service node
    assert "10." in ssh_vm(out, "vm-1", "nslookup vm-4").stdout
    # the program ran in the outdir, saw the lists, and its output went to the log
    assert (out / "hostnames.txt").read_text().split() == ["vm-1", "vm-2", "vm-3", "vm-4"]
    assert "program saw 4 VMs" in (out / "vm5k.log").read_text()
    for name in ("topology.png", "topology.svg", "timeline.png", "timeline.svg", "initial_topo.xml",
                 "final_topo.xml", "inventory.yaml", "known_hosts", "id_ed25519"):
        assert (out / name).exists(), name
    assert (out / "id_ed25519").stat().st_mode & 0o777 == 0o600
    assert 'state="OK"' in (out / "final_topo.xml").read_text()
    # the boot-time example reads the outdir alone
    example = Path(__file__).resolve().parents[2] / "examples" / "boot_time.py"
    boot = subprocess.run([sys.executable, str(example), str(out), "--plot"], capture_output=True, text=True,
                          timeout=300, check=False)
    assert boot.returncode == 0, boot.stderr
    assert boot.stdout.startswith("4 VMs: mean ") and (out / "boot_time.png").exists()
    record = state(out)["meta"]["run"]
    assert record["status"] == "done"
    assert list(record["steps"]) == ["topology", "reservation", "hosts", "network", "vms", "program"]
    assert len(live_jobs(testbed, record["run_id"])) == 1


def test_interrupted_then_resumed(testbed: LabTestbed, tmp_path: Path, destroyed: list[Path]) -> None:
    out = tmp_path / "out"
    destroyed.append(out)
    process = subprocess.Popen([VM5K, "-n", "3", "-r", "rennes:2", "-w", "0:20:00", "-t", TINY,
                                "-d", "concentrated", "-o", str(out)], cwd=tmp_path, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "vm5k.log"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and "vms: create and start the VMs" in log.read_text():
            break
        time.sleep(0.5)
    assert process.poll() is None, process.communicate()[1][-2000:]
    os.kill(process.pid, signal.SIGTERM)  # as a batch system would; Ctrl-C takes the same path
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert f"vm5k --resume {out}" in err and f"vm5k --destroy {out}" in err
    record = state(out)["meta"]["run"]
    assert record["status"] == "interrupted" and "vms" not in record["steps"]
    job_id = state(out)["meta"]["grid5000"]["jobs"][0]["id"]

    done = vm5k("--resume", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = state(out)["meta"]
    assert resumed["run"]["status"] == "done"
    assert [job["id"] for job in resumed["grid5000"]["jobs"]] == [job_id]  # no second reservation
    rows = vms_of(out)
    assert {row["state"] for row in rows} == {"OK"}
    assert len({row["host"] for row in rows}) == 1  # concentrated: one host holds them all
    assert ssh_vm(out, "vm-3", "hostname").stdout.strip() == "vm-3"


def test_a_topology_file_in_kavlan(testbed: LabTestbed, tmp_path: Path, destroyed: list[Path]) -> None:
    first, second = testbed.nodes[:2]
    short = [node.split(".")[0] for node in (first, second)]
    cluster = short[0].rsplit("-", 1)[0]
    (tmp_path / "topo.xml").write_text(f"""<vm5k>
  <site id="rennes">
    <cluster id="{cluster}">
      <host id="{short[0]}"><vm id="web-1" mem="256" hdd="2"/><vm id="web-2" mem="256" hdd="2"/></host>
      <host id="{short[1]}"><vm id="db-1" mem="256" hdd="2" n_cpu="1"/></host>
    </cluster>
  </site>
</vm5k>
""")
    out = tmp_path / "out"
    destroyed.append(out)
    done = vm5k("-i", "topo.xml", "-k", "-w", "0:20:00", "-o", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["id"]: row for row in vms_of(out)}
    assert {row["state"] for row in rows.values()} == {"OK"}
    vlan = state(out)["meta"]["grid5000"]["vlan"]
    assert vlan is not None
    # the file's placement is kept, on the hosts it names (in their KaVLAN names)
    assert rows["web-1"]["host"] == rows["web-2"]["host"] == f"{short[0]}-kavlan-{vlan}.rennes.grid5000.fr"
    assert rows["db-1"]["host"] == f"{short[1]}-kavlan-{vlan}.rennes.grid5000.fr"
    # KaVLAN: vm5k's dnsmasq gave the addresses (locally administered MACs) and serves the names
    assert all(row["mac"].lower().startswith("02:56:") for row in rows.values())
    assert ssh_vm(out, "db-1", "hostname").stdout.strip() == "db-1"
    assert rows["web-1"]["ip"] in ssh_vm(out, "db-1", "nslookup web-1").stdout


def test_n_by_hosts_spreads_evenly(testbed: LabTestbed, tmp_path: Path, destroyed: list[Path]) -> None:
    out = tmp_path / "out"
    destroyed.append(out)
    done = vm5k("-n", "4", "-r", "rennes:2", "-d", "n_by_hosts", "-w", "0:20:00", "-t", TINY, "-o", str(out),
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = vms_of(out)
    per_host: dict[str, int] = {}
    for row in rows:
        per_host[row["host"]] = per_host.get(row["host"], 0) + 1
    assert sorted(per_host.values()) == [2, 2]
    assert {row["state"] for row in rows} == {"OK"}
    # the VMs' host keys were recorded in the outdir at first contact and are checked from then on: a VM
    # whose key changes (another machine at its address, to ssh) is refused, the others still answer
    key = "/etc/dropbear/dropbear_ed25519_host_key"
    new_key = (f"rm -f {key}; dropbearkey -t ed25519 -f {key} >/dev/null 2>&1; "
               "kill $(cat /run/dropbear.pid); sleep 0.5; "  # the listener: this session lives on
               f"dropbear -s -p 22 -P /run/dropbear.pid -r {key}")
    assert ssh_vm(out, "vm-1", new_key).returncode == 0
    # the new listener takes a moment to come up: until then ssh fails for another reason
    refused = wait_for(lambda: (r := ssh_vm(out, "vm-1", "true")).returncode != 0
                       and "Host key verification failed" in r.stderr and r, 30, 1)
    assert "Host key verification failed" in refused.stderr
    assert ssh_vm(out, "vm-2", "hostname").stdout.strip() == "vm-2"


def test_keep_job_then_a_new_fleet_in_the_same_reservation_with_j(testbed: LabTestbed, tmp_path: Path,
                                                                   destroyed: list[Path]) -> None:
    """--destroy --keep-job removes the VMs and keeps the reservation; -j takes it up again; destroying that
    run leaves the given job alone. The -j run has a run key of its own, which the first run's deployment
    did not install: its hosts are not provably deployed for it, so it deploys them again (on Grid'5000 as
    here: no key but the ones Kadeploy installed lets it in)."""
    first = tmp_path / "first"
    destroyed.append(first)
    done = vm5k("-n", "2", "-r", "rennes:2", "-w", "0:20:00", "-t", TINY, "-o", str(first), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = state(first)["meta"]["run_id"]
    (job,) = live_jobs(testbed, run_id)
    kept = vm5k("--destroy", str(first), "--keep-job", cwd=tmp_path)
    assert kept.returncode == 0, kept.stderr
    assert "the reservation is kept (--keep-job)" in kept.stderr
    assert leftovers(testbed, run_id) == {} and [j.uid for j in live_jobs(testbed, run_id)] == [job.uid]
    destroyed.remove(first)  # destroyed; its job is handed to the next run, and ended below

    second = tmp_path / "second"
    destroyed.append(second)
    done = vm5k("-n", "3", "-j", f"rennes:{job.uid}", "-t", TINY, "-o", str(second), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # deployed again: the first run's deployment (its key) proves nothing to this run
    assert "already deployed" not in done.stderr and "attempt 1)" in done.stderr
    assert {row["state"] for row in vms_of(second)} == {"OK"}
    assert set((second / "hosts.list").read_text().split()) == set((first / "hosts.list").read_text().split())
    assert ssh_vm(second, "vm-3", "hostname").stdout.strip() == "vm-3"
    again = state(second)["meta"]["run_id"]
    gone = vm5k("--destroy", str(second), cwd=tmp_path)
    assert gone.returncode == 0, gone.stderr
    assert leftovers(testbed, again) == {}
    assert [j.uid for j in live_jobs(testbed, run_id)] == [job.uid]  # -j: the user's job, not the run's
    destroyed.remove(second)  # destroyed; what remains is the given job, ended here
    job.delete()
    wait_for(lambda: not live_jobs(testbed, run_id), 120, interval=0.5)


def test_hosts_you_already_have(testbed: LabTestbed, tmp_path: Path, destroyed: list[Path]) -> None:
    """--hosts: no reservation, no Kadeploy; capacity read from the hosts, a VM network described by hand
    and served by vm5k's dnsmasq (the testbed's DHCP ignores MACs of subnets nobody reserved)."""
    subnet = testbed.grid5000().sites["rennes"].g5ksubnet
    network = f"{subnet['network']},gateway={subnet['gateway']},block=10.156.252.0/22,mac=local"
    out = tmp_path / "out"
    destroyed.append(out)
    testbed.wait_nodes_up()
    done = vm5k("--hosts", ",".join(testbed.nodes[:2]), "--ssh-config", testbed.ssh_config, "--vm-network",
                network, "-n", "2", "-t", TINY, "-o", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "platform: hosts" in done.stderr
    rows = vms_of(out)
    assert {row["state"] for row in rows} == {"OK"}
    assert all(row["ip"].startswith("10.156.25") and row["mac"].lower().startswith("02:56:") for row in rows)
    assert "meta" in state(out) and "grid5000" not in state(out)["meta"]  # nothing was reserved
    assert ssh_vm(out, "vm-2", "hostname").stdout.strip() == "vm-2"


def test_with_no_testbed_up_vm5k_starts_one_and_repairs_it_when_a_node_died(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's first command on a fresh machine: no Grid'5000, no testbed up. vm5k starts the
    embedded testbed itself (sized by -r), and restarts it when one of its nodes has died since."""
    reason = lab_available()
    if reason:
        pytest.skip(reason)
    state_dir = STATE_ROOT / f"pytest-{os.getpid()}-autostart"
    state_dir.mkdir(parents=True)
    (state_dir / OWNER_FILE).write_text(str(os.getpid()))  # brought down by the next session if this dies
    monkeypatch.setenv("VM5K_TESTBED_STATE", str(state_dir))
    try:
        done = vm5k("--dry-run", "-n", "2", "-r", "rennes:1", "-w", "0:10:00", "-o", str(tmp_path / "plan"),
                    cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "starting the embedded testbed (vm5k-testbed up --site rennes:1)" in done.stderr
        assert "platform: testbed" in done.stderr and "OAR job on rennes (types deploy" in done.stdout
        status = json.loads(run_testbed("status", "--json", "--state", str(state_dir)).stdout)
        assert status["state"] == "up" and len(status["nodes"]) == 1
        node = status["nodes"][0]["name"]
        os.kill(status["pids"][f"node:{node.split('.')[0]}"]["pid"], signal.SIGKILL)
        def testbed_state() -> str:
            return json.loads(run_testbed("status", "--json", "--state", str(state_dir)).stdout)["state"]

        wait_for(lambda: testbed_state() != "up", 30)  # the killed node no longer counts as up

        again = vm5k("--dry-run", "-n", "2", "-r", "rennes:1", "-w", "0:10:00", "-o", str(tmp_path / "plan2"),
                     cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"the embedded testbed is degraded ({node} not up): restarting it" in again.stderr
        status = json.loads(run_testbed("status", "--json", "--state", str(state_dir)).stdout)
        assert status["state"] == "up" and [n["name"] for n in status["nodes"]] == [node]
    finally:
        down = run_testbed("down", "--state", str(state_dir), timeout=300)
        subprocess.run(["rm", "-rf", str(state_dir)], check=False)
    assert down.returncode == 0, down.stderr
