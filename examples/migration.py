#!/usr/bin/env python3
"""A migration experiment, in the spirit of the original vm5k's demo: deploy, move half the VMs, measure.

    python examples/migration.py --n-vm 4 --resources rennes:2 --walltime 0:30:00 --outdir mig_xp

The fleet is spread over the hosts (round-robin); then every other VM is live-migrated, one at a time, to
the next host of the run (`vm5k.Run.migrate`). For each migration: its time (the call, from the checks to
the VM answering SSH on its new host) and the VM's downtime seen from a host of the run (``ping -D -i
0.01`` through the outdir's ``ssh_config``: the longest gap between two replies). The results go to
``OUTDIR/migration.csv`` (vm, from, to, seconds, downtime_ms, error) and ``OUTDIR/migration.png``; then
the fleet is destroyed (``--keep`` leaves it running).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import subprocess
import sys
import time
from pathlib import Path

import vm5k


def downtime_probe(outdir: Path, host: str, address: str) -> subprocess.Popen[str]:
    """Pings `address` every 10 ms from `host` (a host of the run, reached as the outdir says)."""
    return subprocess.Popen(["ssh", "-F", str(outdir / "ssh_config"), "-o", "BatchMode=yes", host,
                             f"exec ping -D -n -i 0.01 {address}"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def longest_gap(probe: subprocess.Popen[str]) -> float:
    probe.terminate()
    out, _ = probe.communicate(timeout=60)
    stamps = [float(line[1:line.index("]")]) for line in out.splitlines()
              if line.startswith("[") and "bytes from" in line]
    return max((b - a for a, b in itertools.pairwise(stamps)), default=float("nan"))


def migrate_half(run: vm5k.Run, outdir: Path) -> list[dict[str, str]]:
    """Every other VM to the next host of the run, one at a time; one row per migration."""
    hosts = sorted({host.id for host in run.topology.hosts() if host.state == "OK"})
    rows = []
    for vm in run.vms[::2]:
        source = vm.host or ""
        dest = hosts[(hosts.index(source) + 1) % len(hosts)]
        row = {"vm": vm.id, "from": source, "to": dest, "seconds": "", "downtime_ms": "", "error": ""}
        watcher = next((host for host in hosts if host not in (source, dest)), dest)
        probe = downtime_probe(outdir, watcher, str(vm.ip))
        time.sleep(1)
        start = time.monotonic()
        try:
            run.migrate({vm.id: dest})
            row["seconds"] = f"{time.monotonic() - start:.2f}"
        except vm5k.Vm5kError as error:
            row["error"] = str(error)
        time.sleep(1)
        gap = longest_gap(probe)
        row["downtime_ms"] = "" if gap != gap else f"{gap * 1000:.0f}"  # NaN: no reply at all
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, str]], path: Path) -> Path:
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["vm", "from", "to", "seconds", "downtime_ms", "error"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot(rows: list[dict[str, str]], path: Path) -> Path:
    """Migration time and downtime per VM."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [row for row in rows if row["seconds"]]
    figure, (left, right) = plt.subplots(1, 2, figsize=(max(6, len(done) * 1.2), 4))
    left.bar([row["vm"] for row in done], [float(row["seconds"]) for row in done])
    left.set_ylabel("migration time (s)")
    right.bar([row["vm"] for row in done], [float(row["downtime_ms"] or 0) for row in done], color="tab:red")
    right.set_ylabel("downtime (ms)")
    figure.suptitle(f"live migration of {len(done)} VMs")
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-vm", type=int, default=4)
    parser.add_argument("--resources", default="rennes:2")
    parser.add_argument("--walltime", default="0:30:00")
    parser.add_argument("--vm-template", default='<vm mem="256" hdd="2" n_cpu="1"/>')
    parser.add_argument("--outdir", default="migration")
    parser.add_argument("--keep", action="store_true", help="leave the fleet running")
    args = parser.parse_args(argv)
    outdir = Path(args.outdir)
    run = vm5k.deploy(n_vm=args.n_vm, resources=args.resources, walltime=args.walltime,
                      vm_template=args.vm_template, outdir=outdir, progress=True)
    try:
        rows = migrate_half(run, outdir)
        table, picture = write_csv(rows, outdir / "migration.csv"), plot(rows, outdir / "migration.png")
        print(f"results in {table} and {picture}")
        return 0 if all(not row["error"] for row in rows) else 1
    finally:
        if not args.keep:
            run.destroy()
        run.close()


if __name__ == "__main__":
    sys.exit(main())
