"""How vm5k grows with the fleet: the real `vm5k` command on testbeds of 2, 8, ... hosts, 2 tiny VMs each.

    .venv/bin/python benchmarks/scale.py [--hosts 2,8] [--vms-per-host 2] [--max-vms N] [--mem 96] [--json]
                                         [--profile DIR]

Needs root. For each size N, in that order:

1. a testbed of its own, ``vm5k-testbed up --site rennes:N`` in /var/lib/vm5k-testbed/bench-scale-<pid>-N,
   always brought down at the end (also after a failure, Ctrl-C or SIGTERM);
2. on the first size only, the *floor's parts*, each measured apart and without vm5k
   (`benchmarks/workflow.py`'s ``by_hand`` with one VM): the first libvirt calls on a fresh node, the image
   copy on a node, one VM booting alone (start → SSH login); the Kadeploy duration is the testbed's
   configured one (its status, else its default of 5 s);
3. ``vm5k -n 2N -r rennes:N -t '<vm mem="96" hdd="2"/>' --forcedeploy`` with HOME in a temporary folder
   and ``VM5K_TESTBED_STATE`` pointing at this testbed, run through `benchmarks/vm5k_counted.py` (the same
   ``vm5k.cli.main``) which counts its SSH connections, SSH sessions (remote commands, copies),
   direct-tcpip channels (VM probes) and HTTP requests, in total and per step, with the CPU of each step;
   the whole process's CPU (children included) and peak RSS come from ``wait4``;
4. ``vm5k --destroy``, timed the same way.

"1st VM" and "last" are the seconds from the start of the VMs step until the first and the last VM
answered SSH (vm5k.log's dates).

The floors (on this machine, 2 cores shared by every node and VM):

- hosts step: Kadeploy (configured) + (libvirt's start-up + the image copy) × N ÷ cores, or one host's if
  larger: on the testbed every node's libvirtd starts (it probes QEMU's capabilities, CPU work) and copies
  on the machine's same cores and disk. (Until December 2026 only the copy was scaled, which put the
  floor of 32 hosts at 6.5 s while 32 libvirt start-ups alone take about 12 CPU-seconds on 2 cores.)
- VMs step: one VM booting alone × VMs ÷ cores (TCG boots are CPU-bound and share the 2 cores), or the
  single boot if larger.

Each figure is printed with its growth against the first size and, for the steps, the overhead over the
floor (step ÷ floor); the goals of issue 15 (at 64 hosts: CPU ≤ 30 ms per VM + 100 ms per host, steps within
1.25× their floor, peak RSS < 150 MB) are checked at every size. The machine is shared: every run comes
with the load average (1, 5, 15 min) before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lab_fixtures import LabTestbed
from workflow import LOG_LINE, bring_down, bring_up, by_hand, load, sigterm_as_interrupt

STATE_ROOT = Path("/var/lib/vm5k-testbed")
SITE = "rennes"
TEMPLATE = '<vm mem="{mem}" hdd="2"/>'
WALLTIME = "0:40:00"
DEFAULT_KADEPLOY_S = 5.0
COUNTER = Path(__file__).resolve().parent / "vm5k_counted.py"
GOAL_CPU_PER_VM = 0.030
GOAL_CPU_PER_HOST = 0.100
GOAL_FLOOR_RATIO = 1.25
GOAL_RSS_MB = 150


def run_measured(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> dict[str, Any]:
    """Run `argv` with its own wait4: wall time, CPU (children included) and peak RSS of this command."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.monotonic()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.05)
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"exit_status": proc.returncode, "wall_s": round(wall, 2),
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stdout": out.read(), "stderr": err.read()}


def vm5k_env(testbed: LabTestbed, home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VM5K_")}
    env.update(HOME=str(home), VM5K_TESTBED_STATE=str(testbed.state_dir))
    return env


def run_vm5k(testbed: LabTestbed, hosts: int, vms: int, mem: int, work: Path,
             profile: Path | None) -> dict[str, Any]:
    """vm5k with `vms` VMs of `mem` MiB on `hosts` hosts, then --destroy: wall, CPU, RSS, counts per step."""
    outdir = work / f"vm5k-{hosts}"
    home = work / "home"
    home.mkdir(exist_ok=True)
    env = vm5k_env(testbed, home)
    counts = work / f"counts-{hosts}.json"
    launcher = [sys.executable, str(COUNTER), str(counts)]
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        launcher += ["--profile", str(profile / f"vm5k-{hosts}-hosts.prof")]
    argv = [*launcher, "--", "-n", str(vms), "-r", f"{SITE}:{hosts}", "-w", WALLTIME,
            "-t", TEMPLATE.format(mem=mem), "--forcedeploy", "-o", str(outdir)]
    before = load()
    run = run_measured(argv, env, work, 3600)
    result: dict[str, Any] = {k: v for k, v in run.items() if k not in ("stdout", "stderr")}
    result.update(hosts=hosts, vms=vms, mem_mib=mem, load_before=before, load_after=load())
    if run["exit_status"] != 0:
        result["stderr_tail"] = run["stderr"][-2000:]
    try:
        topology = json.loads((outdir / "topology.json").read_text())
        result["steps"] = {name: round(float(s), 2) for name, s in topology["meta"]["run"]["steps"].items()}
        listed = [vm for site in topology.get("sites", []) for cluster in site.get("clusters", [])
                  for host in cluster.get("hosts", []) for vm in host.get("vms", [])]
        result["vms_ok"] = sum(1 for vm in listed if vm.get("state") == "OK")
        boots = sorted(float(vm["boot_seconds"]) for vm in listed if vm.get("boot_seconds") is not None)
        result["first_vm_boot_s"] = boots[0] if boots else None
        result["last_vm_boot_s"] = boots[-1] if boots else None
        result.update(answers(outdir / "vm5k.log"))
    except (OSError, KeyError, ValueError) as error:
        result["error"] = f"cannot read the outdir: {error}"
    try:
        counted = json.loads(counts.read_text())
        result["counts"] = counted["total"]
        result["per_step"] = counted["steps"]
    except (OSError, ValueError, KeyError) as error:
        result["counts_error"] = str(error)
    destroy = run_measured([*launcher[:2], str(work / f"counts-{hosts}-destroy.json"), "--", "--destroy",
                            str(outdir)], env, work, 1800)
    result["destroy"] = {k: v for k, v in destroy.items() if k not in ("stdout", "stderr")}
    if destroy["exit_status"] != 0:
        result["destroy"]["stderr_tail"] = destroy["stderr"][-1500:]
    return result


def answers(log: Path) -> dict[str, float]:
    """Seconds from the start of the VMs step until the first and the last VM answered, from vm5k.log."""
    start, answered = None, []
    for line in log.read_text().splitlines():
        match = LOG_LINE.match(line)
        if match is None:
            continue
        when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if start is None and re.search(r"^vms: create and start", match.group(3)):
            start = when
        elif start is not None and re.search(r"^\S+ answers on \S+ after", match.group(3)):
            answered.append(when - start)
    if start is None or not answered:
        return {}
    return {"first_answer_s": round(min(answered), 1), "last_answer_s": round(max(answered), 1)}


def measure_floor(testbed: LabTestbed, work: Path) -> dict[str, Any]:
    """The floor's parts, measured apart on this testbed (see the module docstring)."""
    hand = by_hand(testbed, 1, "nodes=1+slash_22=1", work, "floor")
    config = testbed.status.get("kadeploy_duration") or testbed.status.get("config", {}).get(
        "kadeploy_duration") if isinstance(testbed.status, dict) else None
    return {"kadeploy_configured_s": float(config or DEFAULT_KADEPLOY_S),
            "kadeploy_measured_s": hand["kadeploy_s"], "libvirt_s": hand["libvirt_s"],
            "image_copy_s": hand["image_copy_s"], "boot_alone_s": hand["vm_boot_s"][0],
            "cores": os.cpu_count() or 1, "load_before": hand["load_before"],
            "load_after": hand["load_after"]}


def floors(floor: dict[str, Any], hosts: int, vms: int) -> dict[str, float]:
    cores = floor["cores"]
    per_host = floor["libvirt_s"] + floor["image_copy_s"]  # both work the node's (here: the shared) cores
    set_up = max(per_host, per_host * hosts / cores)
    boot = max(floor["boot_alone_s"], floor["boot_alone_s"] * vms / cores)
    return {"hosts": round(floor["kadeploy_configured_s"] + set_up, 2), "vms": round(boot, 2)}


def analyse(run: dict[str, Any], base: dict[str, Any] | None, floor: dict[str, Any]) -> dict[str, Any]:
    steps = run.get("steps", {})
    floor_of = floors(floor, run["hosts"], run["vms"])
    exact = {step: steps[step] / floor_of[step] for step in floor_of if step in steps and floor_of[step]}
    ratio = {step: round(value, 3) for step, value in exact.items()}
    budget = GOAL_CPU_PER_VM * run["vms"] + GOAL_CPU_PER_HOST * run["hosts"]
    growth: dict[str, float] = {}
    if base is not None:
        for key in ("wall_s", "cpu_s"):
            if base.get(key):
                growth[key] = round(run[key] / base[key], 2)
        for step in ("hosts", "vms"):
            if base.get("steps", {}).get(step) and step in steps:
                growth[step] = round(steps[step] / base["steps"][step], 2)
        for key in ("ssh_connections", "ssh_sessions", "ssh_tunnels", "http_requests"):
            mine, theirs = run.get("counts", {}).get(key), base.get("counts", {}).get(key)
            if mine and theirs:
                growth[key] = round(mine / theirs, 2)
    return {"floor": floor_of, "over_floor": ratio, "growth": growth, "cpu_budget_s": round(budget, 2),
            "goals": {"cpu": run["cpu_s"] <= budget,
                      "floor": all(value <= GOAL_FLOOR_RATIO for value in exact.values()) and len(exact) == 2,
                      "rss": run["peak_rss_mb"] < GOAL_RSS_MB}}


def report(runs: list[dict[str, Any]], floor: dict[str, Any]) -> None:
    print(f"\nfloor's parts (measured apart, load {floor['load_before']} → {floor['load_after']}): Kadeploy "
          f"{floor['kadeploy_configured_s']:.1f} s configured ({floor['kadeploy_measured_s']:.1f} s "
          f"POST → terminated), libvirt {floor['libvirt_s']:.2f} s, image copy "
          f"{floor['image_copy_s']:.2f} s, "
          f"one VM alone {floor['boot_alone_s']:.1f} s; {floor['cores']} cores")
    head = (f"{'hosts/VMs':>9} {'ok':>4} {'hosts s':>8} {'floor':>6} {'×':>5} {'vms s':>7} {'floor':>6} "
            f"{'×':>5} {'total':>7} {'CPU s':>6} {'budget':>6} {'RSS MB':>6} {'conn':>5} {'sess':>6} "
            f"{'tunnels':>7} {'http':>5} {'1st VM':>6} {'last':>5} {'destroy':>7}  load before → after")
    print(head)
    for run in runs:
        a = run["analysis"]
        steps, counts = run.get("steps", {}), run.get("counts", {})
        print(f"{run['hosts']:>4}/{run['vms']:<4} {run.get('vms_ok', 0):>4} {steps.get('hosts', 0):>8.1f} "
              f"{a['floor']['hosts']:>6.1f} {a['over_floor'].get('hosts', 0):>5.3f} "
              f"{steps.get('vms', 0):>7.1f} "
              f"{a['floor']['vms']:>6.1f} {a['over_floor'].get('vms', 0):>5.3f} {run['wall_s']:>7.1f} "
              f"{run['cpu_s']:>6.2f} {a['cpu_budget_s']:>6.2f} {run['peak_rss_mb']:>6.0f} "
              f"{counts.get('ssh_connections', 0):>5} {counts.get('ssh_sessions', 0):>6} "
              f"{counts.get('ssh_tunnels', 0):>7} {counts.get('http_requests', 0):>5} "
              f"{run.get('first_answer_s') or 0:>6.1f} {run.get('last_answer_s') or 0:>5.1f} "
              f"{run['destroy']['wall_s']:>7.1f}  "
              f"{run['load_before']} → {run['load_after']}")
    print("\nper step (CPU s / SSH sessions / tunnels / HTTP requests):")
    for run in runs:
        parts = []
        for step, figures in run.get("per_step", {}).items():
            parts.append(f"{step} {figures.get('cpu_s', 0):.2f}/{figures.get('ssh_sessions', 0):.0f}/"
                         f"{figures.get('ssh_tunnels', 0):.0f}/{figures.get('http_requests', 0):.0f}")
        print(f"  {run['hosts']:>3} hosts: " + ", ".join(parts))
    print("\ngrowth against the first size, and the goals (CPU ≤ 30 ms/VM + 100 ms/host; steps ≤ 1.25× "
          "floor; RSS < 150 MB):")
    for run in runs:
        a = run["analysis"]
        growth = ", ".join(f"{k} ×{v}" for k, v in a["growth"].items()) or "(the reference)"
        goals = ", ".join(f"{k} {'met' if ok else 'NOT met'}" for k, ok in a["goals"].items())
        print(f"  {run['hosts']:>3} hosts: {growth}; {goals}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="2,8", help="host counts (default 2,8)")
    parser.add_argument("--vms-per-host", type=int, default=2)
    parser.add_argument("--max-vms", type=int, help="at most this many VMs at any size (what memory allows)")
    parser.add_argument("--mem", type=int, default=96, help="guest MiB (default 96: tiny image)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--profile", metavar="DIR", help="write a cProfile of each vm5k run in DIR")
    parser.add_argument("--floor", metavar="JSON", help="reuse the floor's parts of an earlier --json output")
    parser.add_argument("--keep", metavar="DIR", help="keep vm5k's outdirs in DIR")
    args = parser.parse_args()
    sizes = [int(n) for n in args.hosts.split(",") if n]
    if os.geteuid() != 0:
        print("scale: error: needs root (it brings testbeds up)", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count()} cores, load {load()}", flush=True)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vm5k-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    floor: dict[str, Any] | None = json.loads(Path(args.floor).read_text())["floor"] if args.floor else None
    runs: list[dict[str, Any]] = []
    try:
        with sigterm_as_interrupt():
            for size in sizes:
                testbed = None
                try:
                    start = time.monotonic()
                    testbed = bring_up(STATE_ROOT / f"bench-scale-{os.getpid()}-{size}", f"{SITE}:{size}")
                    print(f"{size} hosts: testbed up in {time.monotonic() - start:.1f} s  [load {load()}]",
                          flush=True)
                    if floor is None:
                        floor = measure_floor(testbed, work)
                    vms = min(size * args.vms_per_host, args.max_vms or size * args.vms_per_host)
                    run = run_vm5k(testbed, size, vms, args.mem, work,
                                   Path(args.profile) if args.profile else None)
                    run["analysis"] = analyse(run, runs[0] if runs else None, floor)
                    runs.append(run)
                    print(f"{size} hosts: vm5k {run['exit_status']} in {run['wall_s']:.1f} s, CPU "
                          f"{run['cpu_s']:.2f} s, destroy {run['destroy']['exit_status']}  [load {load()}]",
                          flush=True)
                finally:
                    if testbed is not None:
                        bring_down(testbed)
    except KeyboardInterrupt:
        print("interrupted: the testbed was brought down", file=sys.stderr)
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if floor is not None and runs:
        report(runs, floor)
    if args.json:
        print(json.dumps({"floor": floor, "runs": runs}, indent=1))
    return 0 if runs and all(r["exit_status"] == 0 and r["destroy"]["exit_status"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
