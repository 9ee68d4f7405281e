"""Benchmark of the testbed's real nodes: `up` with 1, 2, 4 nodes; boot-to-SSH of the tiny image with 1, 2, 4
VMs on one node; memory per node and per VM.

    .venv/bin/python benchmarks/testbed_lab.py [--nodes 1,2,4] [--vms 1,2,4] [--job-end 1,2] [--json]

Needs root (it brings testbeds up and down in its own state folders, /var/lib/vm5k-testbed/bench-*,
and always brings them down). Times are wall-clock on this machine and depend on its load: the load
average is printed with the figures. Boot-to-SSH is given three ways: the guest's own uptime when sshd
started (/run/vm5k/sshd-started: the boot itself), the QEMU CPU time spent until SSH answered (what a
boot costs, whatever else the machine does), and the wall time from the first `virsh create` (each VM's
disk, seed and domain made over SSH, one after the other) until each VM answers `ssh true` through its
node (polled every half second over SSH: it includes the harness's own round trips, 2-3 s).
Job end: a deploy job on N nodes (deployed) is killed; the time from `DELETE` until the job's final state
(`finishing` while its nodes reboot into the standard environment, in parallel).
Memory: a node's cgroup usage (its daemons, its tmpfs, the page cache it touched) and the proportional
set size (PSS) of its processes; a VM's QEMU PSS and RSS, and the node's cgroup growth per VM.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from g5k_testbed.lab.cgroups import memory_file
from g5k_testbed.lab.layout import Layout
from lab_fixtures import (
    LabTestbed,
    bring_down,
    bring_up,
    create_vm,
    destroy_vm,
    prepare_bridge,
    run_testbed,
    serial,
    subnet_pairs,
    wait_ready,
)

STATE_ROOT = Path("/var/lib/vm5k-testbed")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def mib(value: float) -> str:
    return f"{value / (1 << 20):.0f} MiB"


def pss_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of a process in KiB, from /proc/PID/smaps_rollup."""
    pss = rss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return pss, rss


def cgroup_of(testbed: LabTestbed, node: str) -> Path:
    return Layout(testbed.state_dir).node_cgroup(node.split(".")[0])


def memory_usage(cgroup: Path) -> int:
    return int(memory_file(cgroup, "usage").read_text())


def qemu_cpu_seconds(name: str) -> float | None:
    """CPU time (user + system) the QEMU of domain `name` used so far: a boot's cost, whatever the load."""
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if not cmdline[0].endswith(b"qemu-system-x86_64"):
                continue
            if f"guest={name},".encode() not in b" ".join(cmdline):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        return (int(fields[11]) + int(fields[12])) / ticks
    return None


def node_processes(cgroup: Path) -> dict[int, str]:
    procs = {}
    for folder, _, _ in os.walk(cgroup):
        for pid in Path(folder, "cgroup.procs").read_text().split():
            try:
                procs[int(pid)] = Path(f"/proc/{pid}/comm").read_text().strip()
            except FileNotFoundError:
                continue
    return procs


def bench_up(counts: list[int]) -> list[dict[str, Any]]:
    rows = []
    for count in counts:
        state = STATE_ROOT / f"bench-{os.getpid()}-up{count}"
        start = time.monotonic()
        testbed = bring_up(state, f"rennes:{count}")
        took = time.monotonic() - start
        try:
            usages = []
            pss = []
            for node in testbed.nodes:
                cgroup = cgroup_of(testbed, node)
                usages.append(memory_usage(cgroup))
                pss.append(sum(pss_kib(pid)[0] for pid in node_processes(cgroup)) * 1024)
            first = time.monotonic()
            probe = "virsh -q -c qemu:///system domcapabilities --virttype qemu > /dev/null"
            testbed.ssh(testbed.nodes[-1], probe)
            libvirt_first = time.monotonic() - first
            again_start = time.monotonic()
            proc = run_testbed("up", "--state", str(state))
            again = time.monotonic() - again_start
            assert proc.returncode == 0, proc.stderr
        finally:
            down_start = time.monotonic()
            bring_down(testbed)
            down = time.monotonic() - down_start
        rows.append({"nodes": count, "up_s": round(took, 2), "up_again_s": round(again, 2),
                     "first_virsh_domcapabilities_s": round(libvirt_first, 2),
                     "down_s": round(down, 2), "node_cgroup_bytes": int(statistics.mean(usages)),
                     "node_pss_bytes": int(statistics.mean(pss)), "load": load()})
        print(f"up {count} node(s): {took:5.1f} s (again {again:.1f} s, down {down:.1f} s; first "
              f"`virsh domcapabilities` on a fresh node {libvirt_first:.2f} s); per node: cgroup "
              f"{mib(statistics.mean(usages))}, processes PSS {mib(statistics.mean(pss))}  [load {load()}]",
              flush=True)
    return rows


def bench_vms(counts: list[int]) -> list[dict[str, Any]]:
    rows = []
    state = STATE_ROOT / f"bench-{os.getpid()}-vms"
    testbed = bring_up(state, "rennes:1")
    try:
        node = testbed.nodes[0]
        site = testbed.grid5000().sites["rennes"]
        job = site.jobs.create({"resources": "slash_22=1,walltime=1:00:00", "command": "sleep 3600"})
        while (job.refresh(), job.state)[1] != "running":
            time.sleep(0.3)
        pairs = subnet_pairs(job.resources_by_type["subnets"][0])[10:]
        prepare_bridge(testbed, node)
        cgroup = cgroup_of(testbed, node)
        serial_no = 0
        for count in counts:
            base = memory_usage(cgroup)
            vms = []
            start = time.monotonic()
            for _ in range(count):
                ip, mac = pairs[serial_no]
                serial_no += 1
                vms.append(create_vm(testbed, node, f"bench-{serial_no}", mac, ip, memory_mib=256))
            created = time.monotonic() - start
            def ready_with_cpu(vm: Any) -> tuple[float, float | None]:
                seconds = wait_ready(testbed, vm, timeout=300)
                return seconds, qemu_cpu_seconds(vm.name)

            with ThreadPoolExecutor(max_workers=count) as pool:
                answers = list(pool.map(ready_with_cpu, vms))
            ready = [seconds for seconds, _ in answers]
            cpu = [round(c, 1) for _, c in answers if c is not None]
            ready = [created + seconds for seconds in ready]  # wait_ready starts once all were created
            uptimes = [float(testbed.ssh_vm(vm, "cat /run/vm5k/sshd-started").stdout) for vm in vms]
            time.sleep(2)
            qemus = {pid: comm for pid, comm in node_processes(cgroup).items() if comm.startswith("qemu")}
            sizes = [pss_kib(pid) for pid in qemus]
            grown = memory_usage(cgroup) - base
            row = {"vms": count, "create_s": round(created, 2), "ssh_s": [round(s, 1) for s in ready],
                   "all_ssh_s": round(max(ready), 1), "guest_uptime_at_sshd": uptimes, "qemu_cpu_s": cpu,
                   "qemu_pss_bytes": int(statistics.mean(p for p, _ in sizes) * 1024),
                   "qemu_rss_bytes": int(statistics.mean(r for _, r in sizes) * 1024),
                   "cgroup_growth_per_vm_bytes": grown // count, "load": load()}
            rows.append(row)
            print(f"{count} VM(s) on one node: all answer SSH after {max(ready):5.1f} s "
                  f"(each {', '.join(f'{s:.1f}' for s in ready)} s; guest uptime at sshd "
                  f"{', '.join(f'{u:.1f}' for u in uptimes)} s; QEMU CPU time until then "
                  f"{', '.join(f'{c:.1f}' for c in cpu)} s); per VM: QEMU PSS "
                  f"{mib(row['qemu_pss_bytes'])}, RSS {mib(row['qemu_rss_bytes'])}, node cgroup "
                  f"+{mib(grown / count)}  [load {load()}]",
                  flush=True)
            for vm in vms:
                if "sshd up" not in serial(testbed, vm):
                    print(f"  {vm.name}: no sshd marker", flush=True)
                destroy_vm(testbed, vm)
        job.delete()
    finally:
        bring_down(testbed)
    return rows


def bench_job_end(counts: list[int]) -> list[dict[str, Any]]:
    rows = []
    for count in counts:
        testbed = bring_up(STATE_ROOT / f"bench-{os.getpid()}-end{count}", f"rennes:{count}")
        try:
            site = testbed.grid5000().sites["rennes"]
            job = site.jobs.create({"resources": f"nodes={count},walltime=1:00:00", "command": "sleep 1d",
                                    "types": ["deploy"]})
            while job.state != "running":
                time.sleep(0.2)
                job.refresh()
            key = Path(f"{testbed.private_key}.pub").read_text()
            dep = site.deployments.create({"nodes": job.assigned_nodes, "environment": "debian12-min",
                                           "key": key})
            while dep.status == "processing":
                time.sleep(0.2)
                dep.refresh()
            start = time.monotonic()
            job.delete()
            while job.state not in ("error", "terminated"):
                time.sleep(0.05)
                job.refresh()
            took = time.monotonic() - start
        finally:
            bring_down(testbed)
        rows.append({"nodes": count, "job_end_s": round(took, 2), "load": load()})
        print(f"job end, {count} deployed node(s): final state {took:.2f} s after DELETE  [load {load()}]",
              flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="1,2,4", help="node counts for `up` (default 1,2,4)")
    parser.add_argument("--vms", default="1,2,4", help="VM counts on one node (default 1,2,4)")
    parser.add_argument("--job-end", default="1,2", help="node counts of a killed deploy job (default 1,2)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("testbed_lab: error: needs root (it brings testbeds up)", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count()} cores, load {load()}", flush=True)
    # One warm-up `up` so that the image and the QEMU capability probe are cached before timing.
    warm = bring_up(STATE_ROOT / f"bench-{os.getpid()}-warm", "rennes:1")
    bring_down(warm)
    results = {
        "up": bench_up([int(n) for n in args.nodes.split(",") if n]),
        "vms": bench_vms([int(n) for n in args.vms.split(",") if n]),
        "job_end": bench_job_end([int(n) for n in args.job_end.split(",") if n]),
    }
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
