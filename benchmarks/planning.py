"""Planning speed: vm5k's planner against execo's ``execo_g5k.planning``, fed the same OAR status.

    .venv/bin/python benchmarks/planning.py [--reservations 5000] [--repeat 5] [--execo-python PATH]

What it does, all on this machine (127.0.0.1 only):

1. starts the testbed's API in this process with all of its sites (11 have OAR clusters), clock frozen;
2. fills its OARs with `--reservations` advance reservations (random clusters, 1-4 nodes, 1-12 h, at
   random dates over the next 14 days; a date OAR refuses is drawn again), straight into the schedulers;
3. reads the reference and the status of the 11 sites through the API, as vm5k does (timed apart);
4. plans, best of `--repeat`, with vm5k's pure planner (``vm5k.platforms.grid5000.planning.plan_slot``):
   a. a common slot on all 11 sites, 3 nodes on each, for 4 h (``-r grenoble:3,lille:3,...``),
   b. ``-r grid5000:300`` for 12 h,
   c. VM-sized mode, 10,000 VMs of 1 GiB / 1 vCPU on ``-r grid5000`` (no count), for 4 h;
5. runs execo's slot computation on the same busy intervals of the same nodes, in another Python that
   has execo (`--execo-python`, else ``VM5K_EXECO_PYTHON``, else this Python if it has the ``bench`` extra,
   else a temp venv made with pip; HOME is a temp folder whose
   ``.execo.conf.py`` points execo's API at the local testbed, so nothing reaches api.grid5000.fr):
   ``compute_slots`` + ``find_first_slot`` (and ``find_free_slot``, which checks counts) for a and b,
   ``compute_slots`` + the original vm5k's VM-sized slot search (``get_vms_slot``'s test: total RAM and
   cores of the free nodes) for c;
6. prints both side by side with the ratio, and whether both found the same start.

The last line says whether vm5k was at least 10x faster than execo in every scenario (the target); the
exit status does not depend on it (timings belong to the reader, not to a pass/fail test).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from g5k_testbed.auth import AuthConfig
from g5k_testbed.http_server import ServerHandle, start_server
from g5k_testbed.jobs import Job
from g5k_testbed.oar import OarError
from g5k_testbed.testbed import TestbedConfig
from vm5k.platforms.grid5000.api import ApiClient
from vm5k.platforms.grid5000.credentials import ApiConfig
from vm5k.platforms.grid5000.planning import Availability, Demand, Inventory, plan_slot, select
from vm5k.platforms.grid5000.reference import fetch_reference, list_sites
from vm5k.platforms.grid5000.status import fetch_availability
from vm5k.request import Element
from vm5k.topology import MIB, VM

T0 = 1_700_000_000
EXECO_WINDOW = 4 * 7 * 86400 + 60  # execo's default planning window: now + 4 weeks + 1 minute
TARGET_RATIO = 10.0  # the target: vm5k at least 10x faster than execo
EXECO_VENV = Path(tempfile.gettempdir()) / "vm5k-bench-execo"

EXECO_SCRIPT = r'''
import json, sys, time
cfg = json.load(open(sys.argv[1]))
from execo_g5k.config import g5k_configuration
g5k_configuration["api_uri"] = cfg["api"]
g5k_configuration["api_username"] = None
import execo_g5k.planning as P
from execo_g5k.api_utils import get_g5k_clusters
get_g5k_clusters(queues=None)  # the reference data, fetched once and cached (not timed)
start, end = cfg["now"], cfg["now"] + cfg["window"]

def build():
    planning = {}
    for site, clusters in cfg["planning"].items():
        planning[site] = {}
        for cluster, hosts in clusters.items():
            planning[site][cluster] = {}
            for host, busy in hosts.items():
                el = {"busy": sorted(tuple(b) for b in busy), "free": []}
                P._merge_el_planning(el["busy"])
                P._trunc_el_planning(el["busy"], start, end)
                P._fill_el_planning_free(el, start, end)
                planning[site][cluster][host] = el
    return planning

out = {}
for scenario in cfg["scenarios"]:
    best, found = None, None
    for _ in range(cfg["repeat"]):
        planning = build()
        t = time.perf_counter()
        slots = P.compute_slots(planning, scenario["walltime"])
        if scenario["kind"] == "count":
            first = P.find_first_slot(slots, dict(scenario["wanted"]))
            free = P.find_free_slot(slots, dict(scenario["wanted"]))
            found = {"first": first[0], "free": free[0]}
        else:  # the original vm5k's get_vms_slot test, on execo's slots
            need_cpu = scenario["n_vms"] * scenario["n_cpu"] // 3
            need_ram = scenario["n_vms"] * scenario["mem"]
            found = {"free": None}
            for slot in slots:
                cores = sum(slot[2].get(c, 0) * a[1] for c, a in scenario["clusters"].items())
                ram = sum(slot[2].get(c, 0) * a[0] for c, a in scenario["clusters"].items())
                if cores > need_cpu and ram > need_ram:
                    found = {"free": slot[0]}
                    break
        elapsed = time.perf_counter() - t
        best = elapsed if best is None else min(best, elapsed)
    out[scenario["name"]] = {"seconds": best, "start": found, "slots": len(slots)}
print(json.dumps(out))
'''


def fill(server: ServerHandle, count: int, seed: int = 42) -> int:
    """Put `count` jobs into the testbed's OARs (in process, under its lock)."""
    tb = server.testbed
    rnd = random.Random(seed)
    clusters: dict[str, list[tuple[str, int]]] = {}
    for site, data in tb.reference.sites.items():
        for name, cluster in data.clusters.items():
            if "default" in (cluster.get("queues") or ["default"]) and data.nodes[name]:
                clusters.setdefault(site, []).append((name, len(data.nodes[name])))
    made = attempts = 0
    with tb.lock:
        while made < count and attempts < 20 * count:
            attempts += 1
            site = rnd.choice(sorted(clusters))
            name, size = rnd.choice(clusters[site])
            nodes, hours = rnd.randint(1, min(4, size)), rnd.randint(1, 12)
            job = Job(uid=tb.new_job_id(), site=site, user=f"user{rnd.randint(1, 50)}",
                      resources=f"{{cluster='{name}'}}/nodes={nodes},walltime={hours}:00:00",
                      walltime=hours * 3600, queue="default", project="default", types=["deploy"],
                      command="sleep 31536000", properties="", directory="/home/user", submitted_at=T0,
                      name=f"bench-{made}", reservation=T0 + rnd.randint(0, 14 * 86400))
            try:
                tb.oar[site].submit(job, T0)
            except OarError:
                continue  # that date is taken on that cluster: draw another reservation
            made += 1
    return made


def best_of(repeat: int, call: Any) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - started)
    return best, result


def execo_python(given: str | None) -> str:
    """A Python that imports execo_g5k: the given one (or VM5K_EXECO_PYTHON), this one, or a temp venv."""
    given = given or os.environ.get("VM5K_EXECO_PYTHON")
    candidates = [given] if given else [sys.executable, str(EXECO_VENV / "bin" / "python")]
    for python in candidates:
        if python and Path(python).exists() and subprocess.run(
                [python, "-c", "import execo_g5k.planning"], capture_output=True,
                env=_execo_env(Path(tempfile.gettempdir()))).returncode == 0:
            return python
    if given:
        raise SystemExit(f"{given} cannot import execo_g5k")
    print(f"installing execo into {EXECO_VENV} (pip) ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(EXECO_VENV)], check=True)
    subprocess.run([str(EXECO_VENV / "bin" / "pip"), "install", "-q", "execo"], check=True)
    return str(EXECO_VENV / "bin" / "python")


def _execo_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    env["HOME"] = str(home)
    return env


def run_execo(python: str, api: str, payload: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vm5k-bench-execo-home-") as home:
        Path(home, ".execo.conf.py").write_text(
            f"g5k_configuration = {{'api_uri': {api!r}, 'api_username': None}}\n")
        data = Path(home, "input.json")
        data.write_text(json.dumps({**payload, "api": api}))
        script = Path(home, "execo_bench.py")
        script.write_text(EXECO_SCRIPT)
        result = subprocess.run([python, str(script), str(data)], capture_output=True, text=True,
                                env=_execo_env(Path(home)), timeout=3600)
        if result.returncode != 0:
            raise SystemExit(f"execo failed:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])


def execo_planning(inventory: Inventory, availability: Availability, demand: Demand) -> dict[str, Any]:
    """The busy intervals of the nodes vm5k may use, in execo's planning layout."""
    sel = select(inventory, demand)
    planning: dict[str, dict[str, dict[str, list[list[int]]]]] = {}
    for cluster, nodes in sel.eligible.items():
        site = inventory.clusters[cluster].site
        status = availability.sites.get(site)
        for node in nodes:
            usage = status.nodes.get(node.fqdn) if status else None
            if usage is None or not usage.usable:
                continue
            planning.setdefault(site, {}).setdefault(cluster, {})[node.fqdn] = [list(b) for b in usage.busy]
    return planning


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reservations", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--execo-repeat", type=int, default=1)
    parser.add_argument("--execo-python", help="a Python that imports execo_g5k (default: a temp venv)")
    parser.add_argument("--no-execo", action="store_true", help="only vm5k's figures")
    args = parser.parse_args()

    server = start_server(TestbedConfig(sites=None, frozen_clock=T0, tick_interval=0,
                                        auth=AuthConfig(users=None, inside_user="bench")))
    try:
        started = time.perf_counter()
        made = fill(server, args.reservations)
        print(f"testbed: {made} reservations in the OARs ({time.perf_counter() - started:.1f} s to make)")
        api = ApiClient(ApiConfig(server.url))
        sites = [s for s in list_sites(api) if server.testbed.reference.sites[s].clusters]
        fetch_ref, reference = best_of(1, lambda: fetch_reference(api, sites))
        fetch_status, availability = best_of(1, lambda: fetch_availability(api, sites))
        nodes = sum(len(s.nodes) for s in availability.sites.values())
        busy = sum(len(u.busy) for s in availability.sites.values() for u in s.nodes.values())
        print(f"API reads (HTTP, 127.0.0.1): reference of {len(sites)} sites {fetch_ref * 1000:.0f} ms, "
              f"status {fetch_status * 1000:.0f} ms ({nodes} nodes, {busy} busy intervals)")
        inventory = reference.inventory
        vms = tuple(VM(f"vm-{i}", mem=1024, n_cpu=1) for i in range(1, 10_001))
        common = f"{len(sites)} sites x 3 nodes, 4 h"
        scenarios = {
            common: Demand(elements=tuple(Element(s, 3) for s in sites), walltime=4 * 3600, vms=vms[:10]),
            "grid5000:300, 12 h": Demand(elements=(Element("grid5000", 300),), walltime=12 * 3600,
                                         vms=vms[:10]),
            "VM-sized, 10,000 VMs, 4 h": Demand(elements=(Element("grid5000"),), walltime=4 * 3600, vms=vms),
        }
        ours: dict[str, tuple[float, Any]] = {}
        for name, demand in scenarios.items():
            ours[name] = best_of(args.repeat, lambda d=demand: plan_slot(inventory, availability, d))
        theirs: dict[str, Any] = {}
        if not args.no_execo:
            python = execo_python(args.execo_python)
            wanted_sites = {s: 3 for s in sites}
            clusters = {}
            grid = scenarios["grid5000:300, 12 h"]
            for name in select(inventory, grid).eligible:
                node = inventory.clusters[name].nodes[0]
                clusters[name] = [node.capacity.ram // MIB, node.capacity.cores]
            payload = {
                "now": availability.now, "window": EXECO_WINDOW, "repeat": args.execo_repeat,
                "planning": execo_planning(inventory, availability, grid),
                "scenarios": [
                    {"name": common, "kind": "count", "wanted": wanted_sites, "walltime": 4 * 3600},
                    {"name": "grid5000:300, 12 h", "kind": "count", "wanted": {"grid5000": 300},
                     "walltime": 12 * 3600},
                    {"name": "VM-sized, 10,000 VMs, 4 h", "kind": "vms", "n_vms": 10_000, "mem": 1024,
                     "n_cpu": 1, "clusters": clusters, "walltime": 4 * 3600},
                ],
            }
            theirs = run_execo(python, server.url.replace("/stable", "/3.0/"), payload)
        print()
        print(f"{'scenario':38} {'vm5k':>10} {'execo':>12} {'ratio':>8}  start (vm5k / execo)")
        ratios: list[float] = []
        for name, (seconds, plan) in ours.items():
            other = theirs.get(name)
            mine = plan.start - T0
            if other:
                ratios.append(other["seconds"] / seconds)
                start = other["start"].get("free")
                found = "none in its 4-week window" if start is None else f"+{start - T0} s"
                same = f"same, now + {mine} s" if start == plan.start else f"+{mine} s / {found}"
                print(f"{name:38} {seconds * 1000:8.1f} ms {other['seconds'] * 1000:9.0f} ms "
                      f"{other['seconds'] / seconds:7.0f}x  {same}"
                      f"{'' if same.startswith('same') else ' (different criteria)'}")
            else:
                print(f"{name:38} {seconds * 1000:8.1f} ms {'-':>12} {'-':>8}  +{mine} s")
        vm_plan = ours["VM-sized, 10,000 VMs, 4 h"][1]
        hosts = sum(p.node_count for p in vm_plan.sites.values())
        print(f"\nVM-sized plan: {hosts} hosts on {', '.join(vm_plan.sites)}; "
              f"vm5k best of {args.repeat}, execo best of {args.execo_repeat} (compute_slots + search)")
        if ratios:
            verdict = "met" if min(ratios) >= TARGET_RATIO else "MISSED"
            print(f"target: vm5k at least {TARGET_RATIO:.0f}x faster than execo in every scenario: {verdict} "
                  f"(lowest ratio {min(ratios):.0f}x)")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
