"""How long ``--plot`` takes at scale: both pictures of a made-up fleet, timed on this machine.

    .venv/bin/python benchmarks/plot.py [--hosts 300] [--vms 3000] [--repeat 3]

The fleet is `tests/unit/synthetic_fleet.py`'s: hosts spread unevenly over 6 sites and 12 clusters, VMs
spread unevenly over them (some hosts hold none) in mixed states, with the times a run records. Nothing
remote, no VM: the layout (pure), then the topology's PNG+SVG and the timeline's PNG+SVG are each timed
(wall clock, best and worst of `--repeat`), with the machine's load average (1, 5, 15 min) before and after,
since the machine is shared. The goal: each picture in under 10 s at 300 hosts / 3,000 VMs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from synthetic_fleet import synthetic_fleet

from vm5k.plot import plot_topology
from vm5k.timeline import plot_timeline
from vm5k.topology_layout import layout_topology


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=300)
    parser.add_argument("--vms", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    topo = synthetic_fleet(args.hosts, args.vms)
    print(f"{args.hosts} hosts, {args.vms} VMs; load before: {load()}")
    timed = {"layout (pure)": lambda out: layout_topology(topo),
             "topology.png+svg": lambda out: plot_topology(topo, out),
             "timeline.png+svg": lambda out: plot_timeline(topo, out)}
    with tempfile.TemporaryDirectory() as folder:
        for name, work in timed.items():
            seconds = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                work(Path(folder))
                seconds.append(time.perf_counter() - start)
            print(f"{name:18s} best {min(seconds):6.2f} s   worst {max(seconds):6.2f} s")
        sizes = {path.name: path.stat().st_size for path in Path(folder).iterdir()}
    print("files: " + ", ".join(f"{name} {size // 1024} KiB" for name, size in sorted(sizes.items())))
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
