#!/usr/bin/env python3
"""A sweep over fleet sizes in one reservation: what the original vm5k's experiment engine did.

    python examples/sweep.py --counts 2,4,8 --resources rennes:2 --walltime 1:00:00 --outdir sweep_xp

The first fleet reserves and deploys the hosts; each later fleet is deployed in the same reservation
(``job_id=run.job_id``: the hosts are already deployed, only the VMs are new). Each fleet is measured
with the CPU micro-benchmark of `cpu_benchmark.py` and destroyed with ``keep_job=True``; at the end, the
first run (whose reservation it is) is destroyed again, which ends the reservation. Every fleet keeps its
own outdir (``OUTDIR/n<count>``); the results of all of them go to ``OUTDIR/sweep.csv``, one row per VM
with the fleet's size.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

import vm5k

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_benchmark import measure, write_csv  # the example beside this one


def sweep(counts: list[int], resources: str, walltime: str, template: str, outdir: Path,
          megabytes: int) -> tuple[Path, bool]:
    """Deploy, measure and destroy one fleet per count in one reservation; returns the CSV and whether
    every VM of every fleet was measured."""
    outdir.mkdir(parents=True, exist_ok=True)
    table = outdir / "sweep.csv"
    job_id = None
    first: Path | None = None
    complete = True
    with table.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["n_vm", "vm", "host", "seconds", "mb_per_s", "error"])
        for count in counts:
            where: dict[str, Any] = ({"job_id": job_id} if job_id else
                                     {"resources": resources, "walltime": walltime})
            with vm5k.deploy(n_vm=count, vm_template=template, outdir=outdir / f"n{count}", progress=True,
                             **where) as run:
                job_id, first = job_id or run.job_id, first or run.outdir
                rows = measure(run, megabytes)
                write_csv(rows, run.outdir / "cpu_benchmark.csv", n_vm=str(count))
                for row in rows:
                    writer.writerow([count, row["vm"], row["host"], row["seconds"], row["mb_per_s"],
                                     row["error"]])
                complete = complete and run.ok and not any(row["error"] for row in rows)
                run.destroy(keep_job=True)
    if first is not None:
        vm5k.Run.load(first).destroy()  # the reservation is the first run's: this ends it
    return table, complete


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="2,4", help="fleet sizes, comma separated")
    parser.add_argument("--resources", default="rennes:2")
    parser.add_argument("--walltime", default="1:00:00")
    parser.add_argument("--vm-template", default='<vm mem="256" hdd="2" n_cpu="1"/>')
    parser.add_argument("--outdir", default="sweep")
    parser.add_argument("--megabytes", type=int, default=32)
    args = parser.parse_args(argv)
    try:
        counts = [int(item) for item in args.counts.split(",")]
    except ValueError:
        parser.error(f"--counts: not a list of numbers: {args.counts}")
    try:
        table, complete = sweep(counts, args.resources, args.walltime, args.vm_template, Path(args.outdir),
                                args.megabytes)
    except vm5k.Vm5kError as error:
        print(f"sweep: {error}", file=sys.stderr)
        if isinstance(error, vm5k.DeploymentError) and error.run is not None:
            print(f"sweep: the fleet is left as it is: vm5k --destroy {error.run.outdir}", file=sys.stderr)
        return 2 if isinstance(error, vm5k.UsageError) else 1
    print(f"results: {table}")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
