#!/usr/bin/env python3
"""How long did each VM of a vm5k run take to boot? ``python examples/boot_time.py OUTDIR [--plot]``

A VM's boot time, seen from inside the guest, is its uptime when its SSH server started: no clock of the
frontend or of the hosts is involved, so it holds whatever their clocks say (the original script compared
syslog dates with the frontend's clock, with a hard-coded year). The start of sshd is read from
``/run/vm5k/sshd-started`` (written by the testbed's guest images), or else from the modification time
of sshd's (or dropbear's) pid file compared with the boot instant the guest's own clock gives.

It uses vm5k's Python API on the run's outdir: ``vm5k.Run.load(OUTDIR)`` gives the VMs, and ``run.run``
asks every one of them in parallel, through its host, with the run's own key (as ``ssh -F OUTDIR/ssh_config
vm-1`` does). Run by vm5k itself with ``-p examples/boot_time.py``, it finds the outdir in
``VM5K_OUTDIR``. With ``--plot``, a histogram goes to ``OUTDIR/boot_time.png``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import vm5k

#: prints "<sshd start, in seconds of guest uptime>"; every branch uses the guest's own clock only
PROBE = r"""
if [ -r /run/vm5k/sshd-started ]; then cat /run/vm5k/sshd-started; exit 0; fi
for pid in /run/sshd.pid /var/run/sshd.pid /run/dropbear.pid /var/run/dropbear.pid; do
    if [ -e "$pid" ]; then
        now=$(date +%s); up=$(cut -d' ' -f1 /proc/uptime); started=$(stat -c %Y "$pid")
        awk -v now="$now" -v up="$up" -v started="$started" 'BEGIN { printf "%.2f\n", started - (now - up) }'
        exit 0
    fi
done
echo "no sshd start time found" >&2; exit 1
"""


def measure(run: vm5k.Run) -> tuple[dict[str, float], dict[str, str]]:
    """VM id → boot time in seconds, and VM id → why it could not be measured (every VM of the run is
    asked, KO ones included: their failure is reported, not raised)."""
    times, failures = {}, {}
    for result in run.run(PROBE, timeout=60):
        value = _seconds(result.stdout) if result.ok else None
        if value is None:
            failures[result.host] = result.describe()
        else:
            times[result.host] = value
    return times, failures


def _seconds(text: str) -> float | None:
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return None


def summary(times: dict[str, float]) -> str:
    values = sorted(times.values())
    lines = [f"{len(values)} VMs: mean {statistics.fmean(values):.2f} s, "
             f"median {statistics.median(values):.2f} s, min {values[0]:.2f} s, max {values[-1]:.2f} s"]
    if len(values) > 1:
        lines[0] += f", std {statistics.stdev(values):.2f} s"
    lines += [f"  {vm}\t{seconds:.2f} s" for vm, seconds in sorted(times.items(), key=lambda item: item[1])]
    return "\n".join(lines)


def histogram(times: dict[str, float], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    axes.hist(list(times.values()), bins=min(20, max(5, len(times) // 3)), color="#1f77b4")
    axes.set_xlabel("boot time: guest uptime when sshd started (s)")
    axes.set_ylabel("VMs")
    axes.set_title(f"Boot time of {len(times)} VMs")
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", nargs="?", default=os.environ.get("VM5K_OUTDIR"),
                        help="the run's outdir (default: $VM5K_OUTDIR, set when vm5k runs this with -p)")
    parser.add_argument("--plot", action="store_true", help="write a histogram to OUTDIR/boot_time.png")
    args = parser.parse_args(argv)
    if not args.outdir:
        parser.error("give the outdir of a vm5k run")
    outdir = Path(args.outdir)
    try:
        run = vm5k.Run.load(outdir)
    except vm5k.UsageError as error:
        parser.error(str(error))
    if not run.vms:
        print("the run has no VM", file=sys.stderr)
        return 1
    with run:
        times, failures = measure(run)
    for vm, why in sorted(failures.items()):
        print(f"{vm}: not measured: {why}", file=sys.stderr)
    if not times:
        return 1
    print(summary(times))
    if args.plot:
        print(f"histogram: {histogram(times, outdir / 'boot_time.png')}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
