"""Placement benchmark: 10,000 VMs on the 904 VM-capable nodes of the real Grid'5000 reference data.

Reads the reference snapshot vendored in the repository (src/g5k_testbed/data/<site>.json.xz, by path:
vm5k never imports g5k_testbed), builds one host per node whose ``supported_job_types.virtual`` is
truthy (RAM = ``main_memory.ram_size``, cores = ``architecture.nb_cores``, threads =
``architecture.nb_threads``), and places 10,000 VMs of the default template (1024 MiB, 1 vCPU) with each
distribution. Prints, per distribution, the best and median wall time of several runs, then the peak
memory (tracemalloc, measured in a separate run so that tracing does not slow the timed ones) and the
process's maximum resident size. Target: under 0.5 s and under 200 MB.

    .venv/bin/python benchmarks/placement.py [--vms 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import lzma
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

from vm5k.placement import DISTRIBUTIONS, Limits, place
from vm5k.topology import Capacity, Host, Topology, VMTemplate

DATA = Path(__file__).resolve().parents[1] / "src" / "g5k_testbed" / "data"
TARGET_SECONDS = 0.5
TARGET_MB = 200


def load_hosts(data: Path = DATA) -> Topology:
    """A topology with one host per VM-capable node of the reference snapshot, in natural order."""
    topo = Topology()
    files = sorted(data.glob("*.json.xz"))
    if not files:
        sys.exit(f"no reference data in {data}")
    for path in files:
        document = json.loads(lzma.decompress(path.read_bytes()))
        if not isinstance(document, dict) or "nodes" not in document:
            continue  # sites.json, environments.json, network_equipments.json
        site = document["site"]["uid"]
        for cluster, nodes in document["nodes"].items():
            for node in nodes:
                if not (node.get("supported_job_types") or {}).get("virtual"):
                    continue
                arch = node["architecture"]
                capacity = Capacity(ram=node["main_memory"]["ram_size"], cores=arch["nb_cores"],
                                    threads=arch.get("nb_threads"))
                topo.add_host(site, cluster, Host(f"{node['uid']}.{site}.grid5000.fr", capacity))
    return topo


def equal_share_hosts(hosts: list[Host], count: int, template: VMTemplate, limits: Limits) -> list[Host]:
    """The hosts that can each hold an equal share of `count` VMs (n_by_hosts refuses smaller ones)."""
    chosen = hosts
    while True:
        share = -(-count // len(chosen))
        kept = [host for host in chosen if (limits.budget(host.capacity).count(template) or 0) >= share]
        if len(kept) == len(chosen):
            return chosen
        chosen = kept


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    started = time.perf_counter()
    hosts = load_hosts().hosts()
    loaded = time.perf_counter() - started
    template = VMTemplate()
    started = time.perf_counter()
    vms = [template.make_vm(f"vm-{number}") for number in range(1, args.vms + 1)]
    built = time.perf_counter() - started
    limits = Limits()
    print(f"{len(hosts)} VM-capable hosts (reference data read in {loaded:.2f} s), "
          f"{len(vms)} VMs of {template.mem} MiB / {template.n_cpu} vCPU built in {built * 1000:.1f} ms; "
          f"{limits.describe()}")
    header = f"{'distribution':<14}{'best (s)':>10}{'median (s)':>12}{'peak (MB)':>11}{'hosts used':>12}"
    print(header + "  verdict")
    worst_time = worst_memory = 0.0
    for distribution in DISTRIBUTIONS:
        on = hosts
        if distribution == "n_by_hosts":  # the same count everywhere: only hosts that can hold the share
            on = equal_share_hosts(hosts, len(vms), template, limits)
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            placement = place(vms, on, distribution, limits=limits, seed=1)
            times.append(time.perf_counter() - started)
        assert len(placement.assignment) == len(vms)
        tracemalloc.start()
        place(vms, on, distribution, limits=limits, seed=1)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peak_mb = peak / 1e6
        used = len(set(placement.assignment.values()))
        ok = min(times) < TARGET_SECONDS and peak_mb < TARGET_MB
        worst_time, worst_memory = max(worst_time, min(times)), max(worst_memory, peak_mb)
        print(f"{distribution:<14}{min(times):>10.4f}{statistics.median(times):>12.4f}{peak_mb:>11.2f}"
              f"{used:>12}  {'ok' if ok else 'TOO SLOW OR TOO BIG'}")

    # The whole step as the workflow runs it, from the hosts' topology: VMs created, placed, moved in.
    def whole_step() -> Topology:
        topo = load_hosts()
        for number in range(1, args.vms + 1):
            topo.unplaced.append(template.make_vm(f"vm-{number}"))
        topo.assign(place(topo.unplaced, topo.hosts(), limits=limits).assignment)
        return topo

    started = time.perf_counter()
    whole_step()
    whole = time.perf_counter() - started
    tracemalloc.start()
    whole_step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"whole step (read and decompress the reference data, build VMs, place, assign): {whole:.2f} s, "
          f"traced peak {peak / 1e6:.1f} MB (mostly the JSON documents); process max RSS {max_rss_mb:.0f} MB")
    print(f"target: placement under {TARGET_SECONDS} s and {TARGET_MB} MB -> "
          f"{'met' if worst_time < TARGET_SECONDS and worst_memory < TARGET_MB else 'MISSED'} "
          f"(slowest {worst_time:.4f} s, largest {worst_memory:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
