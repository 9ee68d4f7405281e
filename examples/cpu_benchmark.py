#!/usr/bin/env python3
"""A CPU micro-benchmark on every VM of a fresh fleet, in parallel: a CSV, a plot, then the fleet destroyed.

    python examples/cpu_benchmark.py --n-vm 4 --resources rennes:2 --walltime 0:30:00 --outdir cpu_xp

Each VM hashes the same amount of zeros with ``sha256sum`` and times it with its own clock
(``/proc/uptime``): its throughput in MB/s says how much processor it gets, which on a shared host
depends on its neighbours. The results go to ``OUTDIR/cpu_benchmark.csv`` (one row per VM: id, host,
seconds, MB/s, or why it could not be measured) and ``OUTDIR/cpu_benchmark.png`` (throughput per VM,
grouped by host). ``--keep`` leaves the fleet running; ``measure()`` is what `sweep.py` reuses.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import vm5k

#: prints "<seconds> <MB hashed>"; only the guest's own clock is used
PROBE = r"""
mb={mb}
start=$(cut -d' ' -f1 /proc/uptime)
dd if=/dev/zero bs=1048576 count=$mb 2>/dev/null | sha256sum >/dev/null || exit 1
end=$(cut -d' ' -f1 /proc/uptime)
awk -v s="$start" -v e="$end" -v mb="$mb" 'BEGIN {{ printf "%.2f %d\n", e - s, mb }}'
"""


def measure(run: vm5k.Run, megabytes: int = 32) -> list[dict[str, str]]:
    """One row per VM of `run`: its host, the seconds and MB/s of the benchmark, or why it failed."""
    hosts = {vm.id: vm.host or "" for vm in run.vms}
    rows = []
    for result in run.run(PROBE.format(mb=megabytes), timeout=300):
        row = {"vm": result.host, "host": hosts.get(result.host, ""), "seconds": "", "mb_per_s": "",
               "error": ""}
        try:
            seconds, size = result.stdout.split()
            row["seconds"] = seconds
            row["mb_per_s"] = f"{int(size) / max(float(seconds), 0.01):.1f}"
        except ValueError:
            row["error"] = result.describe()
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, str]], path: Path, **constant: str) -> Path:
    """The rows (with `constant` columns first, e.g. the fleet size of a sweep) as a CSV file."""
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=[*constant, "vm", "host", "seconds", "mb_per_s", "error"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**constant, **row})
    return path


def plot(rows: list[dict[str, str]], path: Path) -> Path:
    """Throughput per VM, the VMs of one host side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = sorted((row for row in rows if row["mb_per_s"]), key=lambda row: (row["host"], row["vm"]))
    figure, axes = plt.subplots(figsize=(max(5, len(measured) * 0.6), 4))
    hosts = sorted({row["host"] for row in measured})
    colours = {host: plt.get_cmap("tab10")(index % 10) for index, host in enumerate(hosts)}
    axes.bar([row["vm"] for row in measured], [float(row["mb_per_s"]) for row in measured],
             color=[colours[row["host"]] for row in measured])
    axes.set_ylabel("sha256 throughput (MB/s)")
    axes.set_title(f"CPU benchmark on {len(measured)} VMs of {len(hosts)} hosts")
    axes.tick_params(axis="x", rotation=45)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-vm", type=int, default=4)
    parser.add_argument("--resources", default="rennes:2")
    parser.add_argument("--walltime", default="0:30:00")
    parser.add_argument("--vm-template", default='<vm mem="256" hdd="2" n_cpu="1"/>')
    parser.add_argument("--outdir", default="cpu_benchmark")
    parser.add_argument("--megabytes", type=int, default=32)
    parser.add_argument("--keep", action="store_true", help="leave the fleet running")
    args = parser.parse_args(argv)
    try:
        run = vm5k.deploy(n_vm=args.n_vm, resources=args.resources, walltime=args.walltime,
                          vm_template=args.vm_template, outdir=args.outdir, progress=True)
    except vm5k.Vm5kError as error:
        print(f"cpu_benchmark: {error}", file=sys.stderr)
        return 2 if isinstance(error, vm5k.UsageError) else 1
    with run:
        deployed = run.ok  # every VM answered (before destroy, which changes the record)
        rows = measure(run, args.megabytes)
        print(f"results: {write_csv(rows, run.outdir / 'cpu_benchmark.csv')}")
        print(f"plot: {plot(rows, run.outdir / 'cpu_benchmark.png')}")
        if not args.keep:
            run.destroy()
    failed = [row for row in rows if row["error"]]
    for row in failed:
        print(f"{row['vm']}: not measured: {row['error']}", file=sys.stderr)
    return 1 if failed or not deployed else 0


if __name__ == "__main__":
    sys.exit(main())
