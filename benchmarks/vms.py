"""Benchmarks of the hypervisor engine on a testbed node (root needed): real libvirt, real (tiny) VMs.

(a) The VMs-per-host boot curve: 1, 2, 4 and 8 tiny VMs on one node, started in waves of the node's
    ``nproc`` (what vm5k does): seconds from the start of the VM step until every VM accepts the run's key,
    and the slowest single boot (start → key login). With ``--all-at-once``, 8 VMs also started together,
    for comparison with the waves.
(b) What a rerun costs when everything is done already: the hosts step (packages, libvirt, bridge,
    accelerator, images in cache), the network step (dnsmasq reload) and the VM step (VMs found running and
    answering), against their first run.
(c) Where the image comes from: the local copy from the shared folder (``/grid5000``, as every node sees it)
    into the node's cache, against sending it from the frontend through the SSH layer (``transfer=chain``);
    both verified by sha256.
(d) Density: for each guest memory and TCG translation cache (``--density 96:16,96:24,192:64``; ``mem:auto``
    for vm5k's own sizing), 4 VMs booted in waves: mean and slowest boot, each QEMU's resident memory
    once they answer, and their idle CPU (share of one core, over ``--idle`` seconds after the last
    answered). This is what decides how many tiny VMs fit on this 24 GiB, 2-core machine.

TCG here (this machine's /dev/kvm is not hardware KVM) and every node shares this machine's cores, so the
figures come with the machine's load average, taken before each measurement. The VMs take addresses from a
/22 nobody reserved, served by vm5k's own dnsmasq (KaVLAN-like mode), so no OAR job is needed.

    .venv/bin/python benchmarks/vms.py              # its own testbed (rennes:1), brought down at the end
    .venv/bin/python benchmarks/vms.py --state /var/lib/vm5k-testbed/default --counts 1,2,4
    .venv/bin/python benchmarks/vms.py --only density --density 96:auto,96:16,192:64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from vm5k.hypervisor import (
    RunSettings,
    VmNetwork,
    deploy_vms,
    destroy_run,
    ko_vms,
    setup_hosts,
    setup_service,
)
from vm5k.hypervisor.images import distribute, load_image
from vm5k.hypervisor.layout import HostLayout
from vm5k.keys import ensure_run_key
from vm5k.remote import SshRunner, SshSettings
from vm5k.topology import VM, Host, Topology

BLOCK_BASE = (10, 159, 236)  # 10.159.236.0/22: far from the blocks OAR hands out first


def testbed(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "g5k_testbed.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def pair(index: int) -> tuple[str, str]:
    a, b, c = BLOCK_BASE
    third, fourth = c + index // 254, index % 254 + 1
    return f"{a}.{b}.{third}.{fourth}", f"00:16:3e:{b:02x}:{third:02x}:{fourth:02x}"


class Bench:
    def __init__(self, status: dict[str, Any], folder: Path) -> None:
        self.status = status
        self.node = status["nodes"][0]["name"]
        self.image = status["image"]
        self.key, self.public = ensure_run_key(folder, "vm5k-bench")
        self.ssh = SshSettings(config_files=(Path(status["ssh_config"]),), known_hosts=folder / "known_hosts",
                               record_new_host_keys=True, command_timeout=900)
        from grid5000 import Grid5000

        subnet = Grid5000(uri=status["api"]).sites[status["nodes"][0]["site"]].g5ksubnet
        self.network = VmNetwork(mode="kavlan", cidr=subnet["network"], gateway=subnet["gateway"],
                                 service_address=pair(1000)[0])

    def settings(self, run_id: str, **changes: Any) -> RunSettings:
        base = RunSettings(run_id=run_id, public_key=self.public, private_key=str(self.key),
                           network=self.network, boot_timeout=600, recreate=0)
        return replace(base, **changes)

    def topology(self, count: int, mem: int = 256) -> Topology:
        topo = Topology()
        topo.add_host(self.status["nodes"][0]["site"], self.status["nodes"][0]["cluster"], Host(self.node))
        for index in range(count):
            ip, mac = pair(index)
            vm = VM(f"vm-{index + 1}", mem=mem, hdd=2, backing_file=self.image, ip=ip, mac=mac)
            topo.place(vm, self.node)
        return topo

    async def timed(self, step: Callable[..., Awaitable[Topology]], topo: Topology,
                    settings: RunSettings) -> tuple[Topology, float]:
        async with SshRunner(self.ssh) as ssh:
            started = time.monotonic()
            topo = await step(topo, ssh, settings)
            return topo, time.monotonic() - started

    async def destroy(self, topo: Topology, settings: RunSettings) -> None:
        async with SshRunner(self.ssh) as ssh:
            await destroy_run(topo, ssh, settings)


async def boot_curve(bench: Bench, counts: list[int], all_at_once: bool) -> list[dict[str, Any]]:
    rows = []
    runs = [(count, None) for count in counts] + ([(max(counts), max(counts))] if all_at_once else [])
    for count, parallel in runs:
        settings = bench.settings(f"bench-{count}-{parallel or 'w'}", boot_parallel=parallel)
        topo = bench.topology(count)
        try:
            topo, _ = await bench.timed(setup_hosts, topo, settings)
            topo, _ = await bench.timed(setup_service, topo, settings)
            before = load()
            topo, seconds = await bench.timed(deploy_vms, topo, settings)
            failed = ko_vms(topo)
            boots = [float(vm.extra.get("boot_seconds", 0)) for vm in topo.vms()]
            window = parallel or topo.host(bench.node).extra.get("nproc")
            mean = sum(boots) / len(boots)
            rows.append({"vms": count, "window": window, "all_answer_s": round(seconds, 1),
                         "slowest_boot_s": round(max(boots), 1), "mean_boot_s": round(mean, 1),
                         "ko": len(failed), "load_before": before})
            print(f"  {count} VMs, waves of {window}: all answer in {seconds:.1f} s (slowest boot "
                  f"{max(boots):.1f} s, mean {mean:.1f} s, KO {len(failed)}, load {before})", flush=True)
        finally:
            await bench.destroy(topo, settings)
    return rows


async def rerun_costs(bench: Bench, count: int) -> dict[str, Any]:
    settings = bench.settings("bench-rerun")
    topo = bench.topology(count)
    figures: dict[str, Any] = {}
    try:
        for name, step in (("hosts", setup_hosts), ("network", setup_service), ("vms", deploy_vms)):
            topo, first = await bench.timed(step, topo, settings)
            topo, again = await bench.timed(step, topo, settings)
            figures[name] = {"first_s": round(first, 2), "rerun_s": round(again, 2)}
            print(f"  {name} step: first run {first:.2f} s, rerun {again:.2f} s (load {load()})", flush=True)
        assert not ko_vms(topo), [vm.reason for vm in ko_vms(topo)]
    finally:
        await bench.destroy(topo, settings)
    return figures


async def image_copies(bench: Bench) -> dict[str, Any]:
    """The image, kernel and initrd into an empty cache: from the shared folder vs from the frontend."""
    image = load_image(bench.image)
    files = image.files()
    size = sum(item.size for item in files)
    figures: dict[str, Any] = {"bytes": size}
    base = "/tmp/vm5k-bench-cache"
    layout = HostLayout("bench", base)
    async with SshRunner(bench.ssh) as ssh:
        for transfer in ("auto", "chain"):
            await ssh.run([bench.node], ["rm", "-rf", "--", base])
            await ssh.run([bench.node], ["mkdir", "-p", layout.run_dir])
            started = time.monotonic()
            report = await distribute(ssh, [bench.node], files, layout, transfer=transfer)
            seconds = time.monotonic() - started
            assert not report.failed, report.failed
            label = "local copy from /grid5000" if transfer == "auto" else "sent from the frontend"
            figures[transfer] = round(seconds, 2)
            print(f"  {size / 2**20:.0f} MiB ({len(files)} files), {label}: {seconds:.2f} s (load {load()})",
                  flush=True)
            started = time.monotonic()
            await distribute(ssh, [bench.node], files, layout, transfer=transfer)
            figures[f"{transfer}_cached"] = round(time.monotonic() - started, 2)
        await ssh.run([bench.node], ["rm", "-rf", "--", base])
    print(f"  already cached: {figures['auto_cached']:.2f} s", flush=True)
    return figures


def available_mib() -> float:
    """The machine's MemAvailable: what booting VMs took from it is the density figure that matters."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def qemu_usage(domains: list[str]) -> dict[str, tuple[int, float, int]]:
    """Each domain's QEMU: resident KiB, CPU seconds so far and proportional KiB (PSS: the kernel, initrd and
    QEMU's own pages are shared between VMs). The nodes' processes are this machine's."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[str, tuple[int, float, int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if not args or not args[0].endswith(b"qemu-system-x86_64"):
                continue
            option = next((a.decode() for a in args if a.startswith(b"guest=")), "")
            name = option[len("guest="):].split(",")[0]
            if name not in domains:
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            rss_kib = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
            pss_kib = next(int(line.split()[1]) for line in (proc / "smaps_rollup").read_text().splitlines()
                           if line.startswith("Pss:"))
            found[name] = (rss_kib, (int(fields[11]) + int(fields[12])) / tick, pss_kib)
        except StopIteration:
            continue
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
    return found


async def density(bench: Bench, combos: list[tuple[int, int | None]], idle: float) -> list[dict[str, Any]]:
    rows = []
    for mem, tb in combos:
        label = f"{mem}:{tb or 'auto'}"
        settings = bench.settings(f"bench-d{mem}-{tb or 'a'}", **({"tcg_tb_cache_mib": tb} if tb else {}))
        topo = bench.topology(4, mem=mem)
        try:
            topo, _ = await bench.timed(setup_hosts, topo, settings)
            topo, _ = await bench.timed(setup_service, topo, settings)
            before, free_before = load(), available_mib()
            topo, seconds = await bench.timed(deploy_vms, topo, settings)
            failed = ko_vms(topo)
            boots = [float(vm.extra.get("boot_seconds", 0)) for vm in topo.vms()]
            domains = [settings.layout.domain_name(vm.id) for vm in topo.vms()]
            first = qemu_usage(domains)
            await asyncio.sleep(idle)
            last = qemu_usage(domains)
            taken = (free_before - available_mib()) / len(domains)
            rss = [last[d][0] / 1024 for d in domains if d in last]
            pss = [last[d][2] / 1024 for d in domains if d in last]
            cpu = [(last[d][1] - first[d][1]) / idle for d in domains if d in last and d in first]
            row = {"mem_mib": mem, "tb_cache_mib": tb or "auto", "all_answer_s": round(seconds, 1),
                   "mean_boot_s": round(sum(boots) / len(boots), 1), "slowest_boot_s": round(max(boots), 1),
                   "rss_mib_mean": round(sum(rss) / max(len(rss), 1)),
                   "rss_mib_max": round(max(rss, default=0)),
                   "pss_mib_mean": round(sum(pss) / max(len(pss), 1)), "machine_mib_per_vm": round(taken),
                   "idle_cpu_share": round(sum(cpu) / max(len(cpu), 1), 4), "ko": len(failed),
                   "load_before": before, "load_after": load()}
            rows.append(row)
            print(f"  {label}: 4 VMs answer in {seconds:.1f} s (mean boot {row['mean_boot_s']} s, "
                  f"slowest {row['slowest_boot_s']} s, KO {len(failed)}); QEMU RSS mean "
                  f"{row['rss_mib_mean']} MiB, max {row['rss_mib_max']} MiB, PSS {row['pss_mib_mean']} MiB; "
                  f"the machine's MemAvailable fell by {row['machine_mib_per_vm']} MiB per VM; idle CPU "
                  f"{100 * row['idle_cpu_share']:.2f} % of a core per VM (load {before} -> "
                  f"{row['load_after']})",
                  flush=True)
        finally:
            await bench.destroy(topo, settings)
    return rows


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (e.g. from timeout) cleans up like Ctrl-C: VMs destroyed, testbed down


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", help="use this running testbed instead of starting one")
    parser.add_argument("--counts", default="1,2,4,8", help="VMs per host for the boot curve")
    parser.add_argument("--all-at-once", action="store_true", help="also start the largest count in one wave")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--only", choices=("image", "rerun", "curve", "density"), help="run one part only")
    parser.add_argument("--density", default="96:auto,96:16,96:32,192:auto,192:64",
                        help="guest MiB:translation-cache MiB (or auto) pairs for the density part")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measured per VM")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    counts = [int(x) for x in args.counts.split(",")]
    own = args.state is None
    state = args.state or tempfile.mkdtemp(prefix="bench-vms-", dir="/var/lib/vm5k-testbed")
    if own:
        print(f"starting a testbed in {state}", flush=True)
        up = testbed("up", "--site", "rennes:1", "--state", state, "--json")
        if up.returncode != 0:
            print(up.stderr[-2000:], file=sys.stderr)
            testbed("down", "--state", state)
            return 1
        status = json.loads(up.stdout)
    else:
        status = json.loads(testbed("status", "--json", "--state", state).stdout)
    results: dict[str, Any] = {"node": status["nodes"][0]["name"], "nproc": os.cpu_count()}
    try:
        with tempfile.TemporaryDirectory(prefix="vm5k-bench-vms-") as folder:
            bench = Bench(status, Path(folder))
            if args.only in (None, "image"):
                print(f"(c) image into the node's cache ({bench.node})", flush=True)
                results["image"] = asyncio.run(image_copies(bench))
            if args.only in (None, "rerun"):
                print("(b) first run vs rerun of each step (2 VMs)", flush=True)
                results["rerun"] = asyncio.run(rerun_costs(bench, 2))
            if args.only in (None, "curve"):
                print("(a) boot curve: VMs per host, waves of nproc", flush=True)
                results["boot_curve"] = asyncio.run(boot_curve(bench, counts, args.all_at_once))
            if args.only in (None, "density"):
                print("(d) density: guest memory and translation cache, 4 VMs", flush=True)
                combos = [(int(m), None if t == "auto" else int(t))
                          for m, t in (pair_.split(":") for pair_ in args.density.split(","))]
                results["density"] = asyncio.run(density(bench, combos, args.idle))
    finally:
        if own:
            down = testbed("down", "--state", state, timeout=600)
            subprocess.run(["rm", "-rf", state], check=False)
            print(f"testbed down ({down.returncode})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
