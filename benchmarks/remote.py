"""Benchmarks of vm5k.remote on throw-away SSH hosts in network namespaces (root needed).

(a) Chain broadcast vs star copy of a big file (default 1 GiB) to 4 and 8 hosts, every link (the
    frontend's included) limited by tc to the same rate, like the ports of one switch. A star copy
    shares the frontend's link between N streams, so it should take about N times one copy; the chain
    carries the file once per link and should stay within about 1.3x of one copy.
(b) The same command on 16 hosts vs on 1 host: the fan-out overhead of the runner, with connections
    already open (steady state) and including connection set-up (cold).

Every figure includes the sha256 verification on the hosts. All "hosts" share this machine's cores,
so each figure comes with the machine's CPU busy share while it was taken: near 100% means the figure
is CPU-bound here (on Grid'5000 every host brings its own cores), not network-bound. Files live in a
temporary directory; the namespaces, daemons and files are removed at the end, also on Ctrl-C.

    .venv/bin/python benchmarks/remote.py                 # 1 GiB at 200 Mbit/s, 4 and 8 hosts
    .venv/bin/python benchmarks/remote.py --size-mib 256 --rate 100mbit --hosts 4
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "remote"))

from nshosts import NsLab

from vm5k.remote import SshRunner, SshSettings, broadcast_file, file_sha256

DEST_DIR = "/srv/vm5k-bench"
DEST = f"{DEST_DIR}/base.img"
CHAIN_TARGET = 1.3  # the target: a chain broadcast within 1.3x the time of one copy


def settings(lab: NsLab, state: Path) -> SshSettings:
    # One known_hosts per lab: two labs reuse the same addresses with different host keys.
    return SshSettings(config_files=(lab.config_path,), known_hosts=state / lab.prefix / "known_hosts",
                       record_new_host_keys=True, connect_timeout=10)


class CpuMeter:
    """Share of the machine's CPU time that was busy between start() and stop() (all processes).

    Every "host" of the lab shares this machine's cores: a figure taken at ~100% busy is CPU-bound here,
    where real hosts would each bring their own cores.
    """

    def __init__(self) -> None:
        self.busy = self.total = 0.0

    @staticmethod
    def _read() -> tuple[float, float]:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def start(self) -> None:
        self.busy, self.total = self._read()

    def stop(self) -> float:
        busy, total = self._read()
        return 100.0 * (busy - self.busy) / max(total - self.total, 1.0)


def make_file(path: Path, size_mib: int) -> str:
    with open(path, "wb") as stream:
        for _ in range(size_mib):
            stream.write(os.urandom(1 << 20))
    return file_sha256(path)


async def clean(ssh: SshRunner, hosts: list[str]) -> None:
    (await ssh.run(hosts, ["sh", "-c", f"rm -rf {DEST_DIR} && sync"])).raise_on_failure("clean-up")


async def copy_star(ssh: SshRunner, hosts: list[str], source: Path, digest: str) -> tuple[float, float]:
    await clean(ssh, hosts)
    meter = CpuMeter()
    meter.start()
    started = time.monotonic()
    (await ssh.put(hosts, source, DEST, sha256=digest)).raise_on_failure("star copy")
    return time.monotonic() - started, meter.stop()


async def copy_chain(ssh: SshRunner, hosts: list[str], source: Path, digest: str) -> tuple[float, float]:
    await clean(ssh, hosts)
    meter = CpuMeter()
    meter.start()
    started = time.monotonic()
    report = await broadcast_file(ssh, hosts, source, DEST, work_dir=DEST_DIR, sha256=digest)
    elapsed, cpu = time.monotonic() - started, meter.stop()
    report.raise_on_failure()
    if report.direct:
        print(f"    note: {report.direct} needed a direct copy", flush=True)
    return elapsed, cpu


async def bench_broadcast(args: argparse.Namespace, state: Path) -> None:
    counts = sorted({int(n) for n in args.hosts.split(",")})
    lab = NsLab.create(max(counts), rate=args.rate, disk=True)
    try:
        source = state / "base.img"
        print(f"(a) {args.size_mib} MiB file, every link limited to {args.rate}; generating the file...",
              flush=True)
        digest = make_file(source, args.size_mib)
        async with SshRunner(settings(lab, state)) as ssh:
            names = list(lab.hosts)
            one, cpu = await copy_star(ssh, names[:1], source, digest)
            rate = args.size_mib * 8 * 1.048576 / one
            print(f"    one copy (frontend -> 1 host): {one:7.1f} s  ({rate:.0f} Mbit/s effective)"
                  f"   CPU busy {cpu:3.0f}%", flush=True)
            rows = []
            for count in counts:
                chain, cpu = await copy_chain(ssh, names[:count], source, digest)
                print(f"    chain to {count} hosts:           {chain:7.1f} s  = {chain / one:.2f} x one copy"
                      f"   CPU busy {cpu:3.0f}%", flush=True)
                star, cpu = await copy_star(ssh, names[:count], source, digest)
                print(f"    star to {count} hosts:            {star:7.1f} s  = {star / one:.2f} x one copy"
                      f"   CPU busy {cpu:3.0f}%", flush=True)
                rows.append((count, chain, star))
            await clean(ssh, names)
        print("\n    hosts | one copy | chain (x one) | star (x one) | star / chain")
        for count, chain, star in rows:
            print(f"    {count:5d} | {one:7.1f}s | {chain:6.1f}s ({chain / one:.2f}) "
                  f"| {star:6.1f}s ({star / one:.2f}) | {star / chain:.2f}")
        worst = max(chain / one for _, chain, _ in rows)
        stars = [star for _, _, star in rows]
        grows = all(later > earlier for earlier, later in itertools.pairwise(stars))
        met = "met" if worst <= CHAIN_TARGET else "MISSED"
        print(f"    target: chain within {CHAIN_TARGET}x one copy: {met} (worst {worst:.2f}x); "
              f"star grows with the hosts: {'yes' if grows else 'NO'}")
    finally:
        lab.close()


async def bench_fanout(args: argparse.Namespace, state: Path) -> None:
    lab = NsLab.create(16)
    try:
        names = list(lab.hosts)
        print(f"\n(b) fan-out: `true` on 1 host vs on 16 hosts ({args.repeat} runs each, median)", flush=True)
        results = {}
        for label, hosts in (("1 host", names[:1]), ("16 hosts", names)):
            cold = []
            warm = []
            for _ in range(args.repeat):
                async with SshRunner(settings(lab, state)) as ssh:
                    started = time.monotonic()
                    (await ssh.run(hosts, ["true"])).raise_on_failure("cold run")
                    cold.append(time.monotonic() - started)
                    for _ in range(5):
                        started = time.monotonic()
                        (await ssh.run(hosts, ["true"])).raise_on_failure("warm run")
                        warm.append(time.monotonic() - started)
            results[label] = (statistics.median(cold), statistics.median(warm))
            print(f"    {label:9s}: cold (connect + run) {results[label][0] * 1000:7.1f} ms, "
                  f"warm (reused connections) {results[label][1] * 1000:6.1f} ms", flush=True)
        one, many = results["1 host"], results["16 hosts"]
        print(f"    16 vs 1: cold x{many[0] / one[0]:.2f}, warm x{many[1] / one[1]:.2f}")
    finally:
        lab.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rate", default="200mbit", help="tc rate of every link (default 200mbit)")
    parser.add_argument("--hosts", default="4,8", help="host counts for the broadcast (default 4,8)")
    parser.add_argument("--repeat", type=int, default=5, help="cold runs per fan-out case")
    parser.add_argument("--only", choices=("broadcast", "fanout"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/remote.py needs root (network namespaces)", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="    [%(levelname)s %(name)s] %(message)s")
    # Clean up on SIGTERM and on SIGINT even when started in the background (where SIGINT is ignored).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="vm5k-bench-remote-", dir="/var/tmp") as tmp:
        state = Path(tmp)
        if args.only in (None, "fanout"):
            asyncio.run(bench_fanout(args, state))
        if args.only in (None, "broadcast"):
            asyncio.run(bench_broadcast(args, state))
    return 0


if __name__ == "__main__":
    sys.exit(main())
