"""vm5k's control plane at 1,000 hosts and 10,000 VMs, by simulation (issue 15, "beyond this machine").

    .venv/bin/python benchmarks/simulate_scale.py [--hosts 1000] [--vms 10000] [--ssh 125,250,500,1000]
                                                  [--image-mib 1] [--json FILE] [--wait-while FILE]

What runs for real, on this machine, all on 127.0.0.0/8 (HOME is a temporary folder, no proxy):

1. **The API side.** The testbed's REST API in a child process (all 12 sites, clock frozen, NullBackend:
   Kadeploy succeeds at once), its reference extended with synthetic nodes of real default-queue
   clusters (`g5k_testbed.reference_synthetic.with_synthetic_nodes`) so that ``-r grid5000:1000`` finds
   1,000 hosts. In another child, vm5k's own code for ``vm5k -n 10000 -r grid5000:1000 -w 2:00:00
   --forcedeploy``: the command line parsed, `Grid5000Platform` plan (reference + OAR status of every site,
   slot, placement), reserve and wait, resources (the /22s held, 10,000 IP/MAC pairs), Kadeploy (submit,
   poll), the outputs saved at every checkpoint as a run does, the service node's dnsmasq files, and the
   destroy (jobs killed). The platform's waits move the testbed's clock (no sleeping).
2. **The SSH side.** One child process serves N lightweight SSH endpoints (asyncssh, one listener per
   endpoint on 127.66.x.y:2222, each session a real ``/bin/sh -c`` of the command); for each N, a fresh
   child runs vm5k's `SshRunner` against them with the run's settings and runs the hosts step's commands
   that leave this machine alone: the facts script, the run's folders, the image distribution (the
   Grid'5000 path: a copy from the shared folder, checked by sha256), the service node's dnsmasq files,
   and one more command on every host with the connections open. Packages, libvirt, the bridge and the
   accelerator would change this machine: they are modelled, not run.
3. **The model** (`model`, one function, inputs printed): what cannot run here (libvirt, disks, 10,000
   boots, Kadeploy's real duration), from per-host and per-VM costs measured here and in docs/scale.md.

vm5k's CPU and memory are measured in child processes that hold nothing else (``getrusage`` of the
child: the API server and the SSH endpoints are other processes). Everything started is stopped by PID,
temporary folders removed, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vm5k_counted import Counting, counting

T0 = 1_700_000_000
SSH_PORT = 2222
RUN_ID = "sim1"
SITES_NOTE = "all 12 sites of the vendored reference"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTheSimulation vm5k-sim"


# -- measuring ---------------------------------------------------------------------------------------------


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # KiB on Linux


class Phases:
    """Wall, CPU, RSS and counted requests of each phase of one child process."""

    def __init__(self, counter: Counting) -> None:
        self.counter = counter
        self.rows: list[dict[str, Any]] = []

    @contextmanager
    def __call__(self, name: str, **extra: Any) -> Iterator[dict[str, Any]]:
        before = dict(self.counter.counts)
        wall, cpu = time.perf_counter(), cpu_seconds()
        row: dict[str, Any] = {"phase": name, **extra}
        yield row
        row.update(wall_s=round(time.perf_counter() - wall, 3), cpu_s=round(cpu_seconds() - cpu, 3),
                   rss_mb=round(rss_mb(), 1), peak_mb=round(peak_mb(), 1))
        for key, value in self.counter.counts.items():
            row[key] = value - before.get(key, 0)
        self.rows.append(row)


# -- the testbed (child process) ---------------------------------------------------------------------------


def eligible(doc: dict[str, Any], cluster: dict[str, Any]) -> bool:
    """A node vm5k's ``-r grid5000`` may take in the default queue: VM-capable, deployable, not exotic."""
    jobs = doc.get("supported_job_types") or {}
    queues = jobs.get("queues") or cluster.get("queues") or ["admin", "default"]
    return bool(jobs.get("virtual")) and bool(jobs.get("deploy", True)) and "default" in queues \
        and not cluster.get("exotic") and not doc.get("exotic")


def synthetic_counts(reference: Any, hosts: int) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    """How many synthetic nodes each default-queue VM-capable cluster gets so that `hosts` are eligible
    (in proportion to its size, largest remainders first), and the reference's own counts."""
    sizes: dict[tuple[str, str], int] = {}
    facts = {"nodes": 0, "vm_capable": 0, "vm_capable_default_queue": 0}
    for site, data in reference.sites.items():
        for name, nodes in data.nodes.items():
            cluster = data.clusters[name]
            for doc in nodes:
                facts["nodes"] += 1
                jobs = doc.get("supported_job_types") or {}
                facts["vm_capable"] += bool(jobs.get("virtual")) and bool(jobs.get("deploy", True))
                if eligible(doc, cluster):
                    facts["vm_capable_default_queue"] += 1
                    sizes[(site, name)] = sizes.get((site, name), 0) + 1
    need = max(0, hosts - facts["vm_capable_default_queue"])
    total = sum(sizes.values())
    shares = {key: need * size / total for key, size in sizes.items()}
    counts = {key: int(share) for key, share in shares.items()}
    left = need - sum(counts.values())
    for key in sorted(shares, key=lambda k: shares[k] - counts[k], reverse=True)[:left]:
        counts[key] += 1
    return {k: v for k, v in counts.items() if v}, facts


def serve_testbed(hosts: int) -> int:
    """Child: the testbed's API with synthetic nodes; prints one JSON line (URL, counts); stops at EOF."""
    from g5k_testbed.auth import AuthConfig
    from g5k_testbed.http_server import start_server
    from g5k_testbed.reference import Reference
    from g5k_testbed.reference_synthetic import with_synthetic_nodes
    from g5k_testbed.testbed import TestbedConfig

    started = time.perf_counter()
    base = Reference.load(None)
    counts, facts = synthetic_counts(base, hosts)
    reference = with_synthetic_nodes(base, counts)
    config = TestbedConfig(sites=None, admin=True, frozen_clock=T0, tick_interval=0,
                           auth=AuthConfig(users=None, inside_user="alice"), kadeploy_duration=5)
    handle = start_server(config, reference=reference)
    print(json.dumps({"url": handle.url, "base": handle.url.removesuffix("/stable"), **facts,
                      "synthetic": sum(counts.values()), "synthetic_clusters": len(counts),
                      "start_s": round(time.perf_counter() - started, 2), "peak_mb": round(peak_mb(), 1)}),
          flush=True)
    sys.stdin.read()  # the parent closes our stdin (or kills us by PID)
    handle.stop()
    return 0


# -- the API side (child process) --------------------------------------------------------------------------


def api_worker(url: str, base: str, folder: Path, hosts: int, vms: int) -> dict[str, Any]:
    """Child: vm5k's Grid'5000 platform code for the whole API side of the run, phase by phase."""
    import logging

    counter = counting(("urllib3.connectionpool", logging.DEBUG))
    phases = Phases(counter)
    with phases("import vm5k"):
        from vm5k import outdir, render
        from vm5k.addresses import POOL_KEY, AddressPool
        from vm5k.cli import parse_request
        from vm5k.hypervisor import dnsmasq
        from vm5k.hypervisor.layout import HostLayout
        from vm5k.pipeline import SAVED_APART, vm_network
        from vm5k.platforms.grid5000 import Grid5000Platform
        from vm5k.platforms.grid5000.api import ApiClient
        from vm5k.platforms.grid5000.credentials import ApiConfig
        from vm5k.topology import Topology

    admin = urlsplit(base)

    def advance(seconds: float) -> None:
        """The platform's waits move the testbed's clock (http.client: not counted as vm5k's requests)."""
        conn = http.client.HTTPConnection(admin.hostname or "127.0.0.1", admin.port, timeout=60)
        conn.request("POST", "/_testbed/clock", json.dumps({"advance": max(1.0, seconds)}),
                     {"Content-Type": "application/json", "X-Api-User-CN": "alice"})
        conn.getresponse().read()
        conn.close()

    out = folder / "outdir"
    key = str(folder / "id_run")
    ssh = render.SshConfigSettings(identity_file=key, known_hosts_file=str(out / "known_hosts"),
                                   host_options={"*": {"User": "root", "IdentityFile": key}})
    saves = {"count": 0, "cpu_s": 0.0, "wall_s": 0.0}

    lists = [n for n in outdir.OUTPUTS if n not in SAVED_APART]

    def save(topology: Topology) -> Topology:
        """What `RunContext.save` writes at every checkpoint: the state, then the lists."""
        wall, cpu = time.perf_counter(), cpu_seconds()
        outdir.write_state(out, topology)
        outdir.write_outputs(out, topology, ssh=ssh, names=lists)
        saves["count"] += 1
        saves["cpu_s"] += cpu_seconds() - cpu
        saves["wall_s"] += time.perf_counter() - wall
        return topology

    with phases("parse the command line"):
        request, _ = parse_request(["-n", str(vms), "-r", f"grid5000:{hosts}", "-w", "2:00:00",
                                    "--forcedeploy", "-o", str(out), "--api", url])
        outdir.make_outdir(out)
    platform = Grid5000Platform(ApiClient(ApiConfig(url)), public_key=PUBLIC_KEY, poll=10.0, sleep=advance,
                                checkpoint=save)
    with phases("plan: reference, OAR status, slot, placement") as row:
        topo = save(platform.plan(request.topology, request))
        outdir.write_atomic(out / outdir.INITIAL_XML, topo.to_xml())
        row["hosts"], row["vms"] = len(topo.hosts()), len(topo.vms())
    with phases("reserve and wait (OAR)"):
        topo = save(platform.reserve(topo))
        topo = save(platform.wait_running(topo))
    with phases("resources: hosts, /22 subnets, addresses") as row:
        topo = save(platform.resources(topo))
        pool = AddressPool.from_dict(topo.meta.get(POOL_KEY))
        row["subnets"] = sum(len(r.blocks) for r in pool.ranges)
        row["addressed"] = sum(1 for vm in topo.vms() if vm.ip and vm.mac)
    with phases("Kadeploy: submit, poll"):
        topo = save(platform.deploy_hosts(topo))
    with phases("outputs: state, lists, inventory, ssh_config, XML") as row:
        save(topo)
        outdir.write_atomic(out / outdir.FINAL_XML, topo.to_xml())
        row["bytes"] = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    with phases("dnsmasq files of the service node") as row:
        network, service = vm_network(topo)
        files = dnsmasq.DnsmasqFiles.of(HostLayout(RUN_ID))
        listen = network.service_address or "10.0.0.1"
        texts = {"dnsmasq.conf": dnsmasq.config(files, network, listen, RUN_ID, max_leases=len(topo.vms())),
                 "hosts": dnsmasq.hosts_file((vm.id, vm.ip or "") for vm in topo.vms())}
        if network.dhcp:  # KaVLAN mode only; in subnet mode Grid'5000's DHCP knows the pairs
            texts["dhcp-hosts"] = dnsmasq.dhcp_hosts_file((vm.id, vm.ip or "", vm.mac or "")
                                                          for vm in topo.vms())
        (folder / "dnsmasq").mkdir(exist_ok=True)
        for name, text in texts.items():
            (folder / "dnsmasq" / name).write_text(text)
        row["bytes"] = sum(len(t) for t in texts.values())
        row["mode"] = network.mode
    with phases("destroy: jobs killed, waited for"):
        topo = save(platform.destroy(topo))
    per_site = {site.id: sum(len(c.hosts) for c in site.clusters) for site in topo.sites}
    threads = [h.capacity.hw_threads for h in topo.hosts() if h.capacity and h.capacity.hw_threads]
    return {"phases": phases.rows, "saves": {k: round(v, 3) for k, v in saves.items()},
            "sites": per_site, "service_node": service, "network_mode": network.mode,
            "ranges": [{"sites": list(r.sites), "blocks": len(r.blocks)} for r in pool.ranges],
            "min_threads": min(threads, default=1), "max_vms_per_host": max(len(h.vms) for h in topo.hosts()),
            "hosts_with_vms": sum(1 for h in topo.hosts() if h.vms),
            "peak_mb": round(peak_mb(), 1), "cpu_s": round(cpu_seconds(), 3),
            "wall_s": round(sum(p["wall_s"] for p in phases.rows), 3),
            "http_requests": sum(p.get("http_requests", 0) for p in phases.rows)}


# -- the SSH endpoints (child process) ---------------------------------------------------------------------


def endpoint_address(index: int) -> str:
    """Endpoint `index` (from 0) listens on its own loopback address, as a host has its own."""
    return f"127.66.{index // 250}.{index % 250 + 1}"


def host_name(index: int) -> str:
    return f"sim-{index + 1}"


async def _session(process: Any) -> None:
    """One SSH session: the command run by ``/bin/sh -c`` on this machine, stdin forwarded until EOF."""
    command = process.command
    if not command:
        process.exit(1)
        return
    proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", command, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, start_new_session=True)

    async def feed() -> None:
        assert proc.stdin is not None
        try:
            while data := await process.stdin.read(65536):
                proc.stdin.write(data)
                await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            proc.stdin.close()

    feeder = asyncio.ensure_future(feed())
    assert proc.stdout is not None and proc.stderr is not None
    out, err = await asyncio.gather(proc.stdout.read(), proc.stderr.read())
    code = await proc.wait()
    feeder.cancel()
    process.stdout.write(out)
    process.stderr.write(err)
    process.exit(code)


def serve_ssh(count: int, folder: Path) -> int:
    """Child: `count` SSH endpoints accepting the run's key; prints "ready" once all listen; stops at EOF."""
    import asyncssh

    async def main() -> None:
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        authorized = asyncssh.import_authorized_keys((folder / "id_run.pub").read_text())
        servers = []
        for index in range(count):
            servers.append(await asyncssh.create_server(
                asyncssh.SSHServer, endpoint_address(index), SSH_PORT, server_host_keys=[host_key],
                authorized_client_keys=authorized, process_factory=_session, encoding=None,
                allow_scp=False, keepalive_interval=0))
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for server in servers:
            server.close()

    asyncio.run(main())
    return 0


# -- the SSH side (child process, one per size) ------------------------------------------------------------


def ssh_worker(count: int, folder: Path, parallel: int) -> dict[str, Any]:
    """Child: vm5k's SshRunner on `count` endpoints; the hosts step's commands that leave this machine
    alone."""
    import logging

    counter = counting(("asyncssh", logging.INFO))
    phases = Phases(counter)
    with phases("import vm5k"):
        from vm5k.hypervisor import dnsmasq
        from vm5k.hypervisor.facts import gather_facts
        from vm5k.hypervisor.images import LocalFile, distribute
        from vm5k.hypervisor.layout import HostLayout
        from vm5k.hypervisor.provision import folders_command
        from vm5k.remote import SshRunner, SshSettings, file_sha256

    hosts = [host_name(i) for i in range(count)]
    settings = SshSettings(config_files=(folder / "ssh_config",), identity_files=(folder / "id_run",),
                           known_hosts=folder / f"known_hosts-{count}", record_new_host_keys=True,
                           connect_timeout=60, keepalive_interval=5, keepalive_count_max=3,
                           max_parallel=parallel)
    layout = HostLayout(RUN_ID, base=str(folder / f"hosts-{count}"))  # each size starts with empty caches
    image = folder / "shared" / "debian12-x64-min.qcow2"
    disk = LocalFile(image, file_sha256(image), image.stat().st_size)
    texts = {name: (folder / "dnsmasq" / name).read_text() for name in ("dnsmasq.conf", "hosts")}
    files = dnsmasq.DnsmasqFiles.of(layout)
    base_rss = rss_mb()

    async def run() -> dict[str, Any]:
        failures: dict[str, int] = {}
        async with SshRunner(settings) as runner:
            with phases("connect + facts script") as row:
                facts, results = await gather_facts(runner, hosts, layout)
                failures["facts"] = len(results.ko)
                row["nproc"] = sorted({f.nproc for f in facts.values()})
            with phases("run's folders"):
                failures["folders"] = len((await runner.run(hosts, folders_command(layout), timeout=120)).ko)
            with phases("image: cache check, copy from the shared folder, sha256"):
                report = await distribute(runner, hosts, [disk], layout, timeout=600)
                failures["image"] = len(report.failed)
            with phases("dnsmasq files to the service node"):
                await runner.write_text(hosts[:1], files.conf, texts["dnsmasq.conf"])
                await runner.write_text(hosts[:1], files.hosts, texts["hosts"])
            with phases("one more command on every host (connections open)"):
                failures["again"] = len((await runner.run(hosts, ["true"], timeout=120)).ko)
        return failures

    failures = asyncio.run(run())
    return {"hosts": count, "phases": phases.rows, "failures": failures, "base_rss_mb": round(base_rss, 1),
            "peak_mb": round(peak_mb(), 1), "cpu_s": round(cpu_seconds(), 3),
            "counts": dict(counter.counts)}


# -- known_hosts (child process) ---------------------------------------------------------------------------


def known_hosts_worker(folder: Path, hosts: int, vms: int, sample: int = 10) -> dict[str, Any]:
    """Child: vm5k's `KnownHostsStore` recording new host keys into the run's known_hosts, as every first
    login to a host or a VM does, timed at several sizes of the file (`sample` new keys at each size).

    Why: a run records `hosts` + `vms` keys. Until this benchmark found it, a recorded key invalidated the
    parsed file, so the next login parsed it all again: a cost that grew with the square of the fleet
    (59 ms per key at 11,000 lines), invisible at 64 VMs. A recorded key now joins the parsed file; this
    shows that the cost per key stays flat as the file grows.
    """
    import asyncssh

    from vm5k.remote.known_hosts import KnownHostsStore, known_hosts_line

    pool = [asyncssh.generate_private_key("ssh-ed25519").convert_to_public() for _ in range(sample + 64)]
    sizes = sorted({hosts, (hosts + vms) // 4, (hosts + vms) // 2, 3 * (hosts + vms) // 4, hosts + vms})
    rows = []
    for size in sizes:
        path = folder / f"known_hosts-sample-{size}"
        with open(path, "w") as stream:  # the lines other hosts and VMs recorded before (distinct keys)
            stream.writelines(known_hosts_line(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", None,
                                               pool[i % 64]) + "\n" for i in range(size))
        store = KnownHostsStore(path, record_new=True)
        store.load()
        batches = []
        for batch in range(3):  # the best of 3 batches: other processes' load only ever adds to a figure
            cpu = cpu_seconds()
            for i in range(sample):  # a VM login: the store read, then the new key accepted and recorded
                store.load()
                store.accept(f"vm-new-{batch}-{i}", None, pool[64 + i], f"10.255.{batch}.{i + 1}")
            batches.append((cpu_seconds() - cpu) / sample)
        rows.append({"lines": size, "cpu_per_key_s": min(batches), "batches": batches})
        path.unlink()
    return {"samples": rows}


# -- the model ---------------------------------------------------------------------------------------------

#: Figures the model takes from elsewhere: (value, where it comes from). "measured" ones were measured on this
#: machine by benchmarks/scale.py and workflow.py (docs/scale.md); "assumption" ones are not measurable here.
ANCHORS: dict[str, tuple[float, str]] = {
    "hosts_step_sessions_per_host": (11, "measured (docs/scale.md: SSH sessions of the hosts step per host)"),
    "hosts_step_cpu_per_host_s": (0.028, "measured (docs/scale.md: hosts step at 64 hosts, all 11 sessions)"),
    "vms_step_cpu_per_vm_low_s": (0.028, "measured (docs/scale.md: VMs step at 8 hosts, 16 VMs)"),
    "vms_step_cpu_per_vm_high_s": (0.046, "measured (docs/scale.md: VMs step at 64 hosts, 96 VMs, 355 s)"),
    "vms_step_mb_per_vm_bound": (0.12, "bound from runs (docs/scale.md: peak RSS 61 MB at 4 VMs, 72 at 96)"),
    "libvirt_first_calls_s": (0.73, "measured (docs/scale.md: libvirt's first calls on a fresh node)"),
    "boot_tcg_s": (5.9, "measured (docs/scale.md: one VM alone, TCG, start to SSH login, 64-host run C)"),
    "boot_kvm_s": (5.0, "assumption (a KVM boot of debian12-min on a Grid'5000 node: a few seconds)"),
    "kadeploy_s": (300.0, "assumption (one Kadeploy of a -min environment on Grid'5000: some minutes)"),
    "packages_s": (60.0, "assumption (apt-get of libvirt/qemu on a -min node from the site's mirror)"),
    "image_gb": (0.3, "assumption (debian12-x64-min.qcow2 read once per host from the site's NFS)"),
    "nfs_gb_per_s": (1.25, "assumption (one 10 Gbit/s NFS server per site)"),
    "gateway_rtt_s": (0.02, "assumption (round trip outside -> access.grid5000.fr, e.g. from France)"),
    "probe_channels_per_vm": (3.4, "measured (docs/scale.md: 324 probe channels for 96 VMs, 64 hosts)"),
}


def known_hosts_cost(samples: list[dict[str, float]], lines: float) -> float:
    """CPU of recording one new key into a file of `lines` lines: the samples, linearly interpolated
    (extrapolated in proportion to the lines beyond them)."""
    points = sorted((s["lines"], s["cpu_per_key_s"]) for s in samples)
    if not points:
        return 0.0
    if lines <= points[0][0]:
        return points[0][1] * lines / points[0][0]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if lines <= x1:
            return y0 + (y1 - y0) * (lines - x0) / (x1 - x0)
    return points[-1][1] * lines / points[-1][0]


def model(hosts: int, vms: int, api: dict[str, Any], ssh: dict[str, Any],
          known_hosts: list[dict[str, float]], per_site: dict[str, int], min_nproc: int,
          max_vms_per_host: int, parallel: int,
          gateway_parallel: int) -> dict[str, Any]:
    """The whole run at `hosts`/`vms`: vm5k's CPU and memory (the goals) and the wall time, from the API side
    measured here at full size, the SSH side measured here per host, and `ANCHORS` for the rest."""
    a = {key: value for key, (value, _) in ANCHORS.items()}
    # the hosts step: one connection and 11 sessions per host, at the CPU measured here per connection
    # (connect + facts) and per further session, or docs/scale.md's whole-step figure if higher
    further = a["hosts_step_sessions_per_host"] - 1
    per_host_here = ssh["connect_cpu_per_host_s"] + further * ssh["session_cpu_s"]
    hosts_cpu_host = max(a["hosts_step_cpu_per_host_s"], per_host_here)
    cpu_fixed = api["cpu_s"]
    cpu_hosts = hosts_cpu_host * hosts
    # every VM's first login records its key: one parse of the whole file, which holds hosts + k lines for
    # the k-th VM; the cost per key is linear in the file's lines (sampled above): summed over the VMs
    cpu_known = sum(known_hosts_cost(known_hosts, hosts + k) for k in range(vms))
    cpu_vms = (a["vms_step_cpu_per_vm_low_s"] * vms + cpu_known,
               a["vms_step_cpu_per_vm_high_s"] * vms + cpu_known)
    cpu_total = (cpu_fixed + cpu_hosts + cpu_vms[0], cpu_fixed + cpu_hosts + cpu_vms[1])
    budget = 0.030 * vms + 0.100 * hosts
    mem_base = max(api["peak_mb"], ssh["base_rss_mb"])
    mem_ssh = ssh["mb_per_host"] * hosts
    mem = (mem_base + mem_ssh, mem_base + mem_ssh + a["vms_step_mb_per_vm_bound"] * vms)
    # wall: hosts work in parallel on their own cores; vm5k's event loop is one thread on one core
    sites = max(1, len(per_site))
    image_s = a["image_gb"] * max(per_site.values(), default=hosts) / a["nfs_gb_per_s"]
    # each host's own path (packages, libvirt, its image) runs on its own cores; vm5k's event loop is one
    # thread: the step lasts at least its CPU
    hosts_wall = max(a["packages_s"] + a["libvirt_first_calls_s"] + image_s, cpu_hosts)
    waves = math.ceil(max_vms_per_host / max(1, min_nproc))
    vms_wall = (max(waves * a["boot_kvm_s"], cpu_vms[0]), max(waves * a["boot_kvm_s"], cpu_vms[1]))
    total_wall = tuple(api["wall_s"] + a["kadeploy_s"] + hosts_wall + v for v in vms_wall)
    # from outside: one more hop per connection, at most `gateway_parallel` operations in flight
    sessions = a["hosts_step_sessions_per_host"] * hosts + 2 * vms  # + the VMs step's ~2 sessions per VM
    probes = a["probe_channels_per_vm"] * vms
    gateway_extra = (hosts * 3 * a["gateway_rtt_s"] + (sessions + probes) * 2 * a["gateway_rtt_s"]) \
        / gateway_parallel + api["http_requests"] * a["gateway_rtt_s"]
    return {
        "inputs": {"hosts": hosts, "vms": vms, "sites": sites, "api_cpu_s": api["cpu_s"],
                   "api_wall_s": api["wall_s"], "api_peak_mb": api["peak_mb"],
                   "api_http_requests": api["http_requests"],
                   "ssh_connect_cpu_per_host_s": round(ssh["connect_cpu_per_host_s"], 4),
                   "ssh_session_cpu_s": round(ssh["session_cpu_s"], 4),
                   "ssh_mb_per_host": round(ssh["mb_per_host"], 4),
                   "min_nproc": min_nproc, "max_vms_per_host": max_vms_per_host, "max_parallel": parallel,
                   "gateway_parallel": gateway_parallel,
                   "known_hosts_ms_per_key": {int(k["lines"]): round(1e3 * k["cpu_per_key_s"], 2)
                                              for k in known_hosts}, **a},
        "cpu": {"api_side_s": cpu_fixed, "hosts_step_s": cpu_hosts, "vms_step_s": cpu_vms,
                "vms_known_hosts_s": cpu_known,
                "total_s": cpu_total, "budget_s": budget},
        "memory_mb": {"api_peak": api["peak_mb"], "ssh_connections": mem_ssh, "total": mem, "budget": 150.0},
        "cpu_per_host_s": {"measured_here": per_host_here, "used": hosts_cpu_host},
        "wall_s": {"api_side": api["wall_s"], "kadeploy": a["kadeploy_s"], "hosts_step": hosts_wall,
                   "image_from_nfs": image_s, "boot_waves": waves, "vms_step": vms_wall,
                   "total": total_wall},
        "gateway": {"connections": hosts + 1, "sessions": sessions, "probe_channels": probes,
                    "extra_wall_s": gateway_extra},
    }


# -- the parent: children, tables, goals -------------------------------------------------------------------


def child_env(home: Path) -> dict[str, str]:
    """Children's environment: HOME in the temporary folder, no proxy, nothing pointing at Grid'5000."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("VM5K_")}
    env.update(HOME=str(home), NO_PROXY="*", PYTHONDONTWRITEBYTECODE="1",
               PYTHONWARNINGS="ignore")  # asyncssh's import warns about DSA, once per child
    return env


SERVERS = ("testbed", "ssh-server")  # children that run until their stdin closes


class Children:
    """The processes this benchmark started, stopped by PID at the end (also on Ctrl-C)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen[str]]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, __file__, "--child", *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, env=self.env)
        self.procs.append((args[0], proc))
        return proc

    def run(self, *args: str) -> dict[str, Any]:
        """A worker: its last stdout line is its JSON report."""
        proc = self.start(*args)
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"child {' '.join(args[:2])} failed ({proc.returncode})")
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    def stop(self) -> None:
        """Servers are asked to stop (their stdin closed), workers still running get SIGTERM; whatever is
        left after 10 s gets SIGKILL. Only our own children, by PID."""
        for kind, proc in self.procs:
            if proc.poll() is None:
                if proc.stdin is not None and not proc.stdin.closed:
                    proc.stdin.close()
                if kind not in SERVERS:
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_until_idle(flag: str | None) -> None:
    """With ``--wait-while FILE``: wait while FILE exists (a shared machine's way for a heavier benchmark
    to ask others not to start: the figures of both would be the load's)."""
    while flag and Path(flag).exists():
        print(f"the machine is busy ({flag} exists): waiting 30 s", file=sys.stderr)
        time.sleep(30)


def prepare(folder: Path, size: int, image_mib: int) -> None:
    """The run's key, the ssh_config naming the endpoints, the image in the 'shared' folder."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519", comment="vm5k-sim")
    key.write_private_key(str(folder / "id_run"))
    key.write_public_key(str(folder / "id_run.pub"))
    os.chmod(folder / "id_run", 0o600)
    lines = [f"Host {host_name(i)}\n    HostName {endpoint_address(i)}\n    Port {SSH_PORT}\n    User root\n"
             for i in range(size)]
    (folder / "ssh_config").write_text("\n".join(lines))
    (folder / "shared").mkdir()
    with open(folder / "shared" / "debian12-x64-min.qcow2", "wb") as stream:
        for _ in range(image_mib):
            stream.write(os.urandom(1 << 20))


def ssh_summary(result: dict[str, Any]) -> dict[str, Any]:
    work = [p for p in result["phases"] if p["phase"] != "import vm5k"]
    hosts = result["hosts"]
    cpu = sum(p["cpu_s"] for p in work)
    sessions = sum(p.get("ssh_sessions", 0) for p in work)
    last = work[-1]
    return {"hosts": hosts, "wall_s": round(sum(p["wall_s"] for p in work), 2), "cpu_s": round(cpu, 3),
            "cpu_per_host_s": cpu / hosts, "connections": sum(p.get("ssh_connections", 0) for p in work),
            "sessions": sessions, "sessions_per_host": sessions / hosts, "peak_mb": result["peak_mb"],
            "base_rss_mb": result["base_rss_mb"],
            "mb_per_host": max(0.0, result["peak_mb"] - result["base_rss_mb"]) / hosts,
            "connect_cpu_per_host_s": work[0]["cpu_s"] / hosts, "session_cpu_s": last["cpu_s"] / hosts,
            "failures": sum(result["failures"].values())}


def table(rows: list[list[str]], head: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def fmt(row: list[str]) -> str:
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def fmt_range(value: Any, unit: str = "", digits: int = 0) -> str:
    if isinstance(value, (tuple, list)):
        return f"{value[0]:,.{digits}f}-{value[1]:,.{digits}f}{unit}"
    return f"{value:,.{digits}f}{unit}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--vms", type=int, default=10000)
    parser.add_argument("--ssh", default="125,250,500,1000", help="SSH endpoint counts")
    parser.add_argument("--parallel", type=int, default=100, help="SshSettings.max_parallel (vm5k's default)")
    parser.add_argument("--image-mib", type=int, default=1, help="the image copied to every endpoint")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--wait-while", metavar="FILE", help="wait while FILE exists, before each part")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    warnings.filterwarnings("ignore", module=r"asyncssh\..*")  # asyncssh's import warns about DSA

    sizes = sorted(int(s) for s in args.ssh.split(",") if s)
    try:
        wait_until_idle(args.wait_while)
    except KeyboardInterrupt:
        return 130  # nothing was started yet
    load_before = os.getloadavg()
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="vm5k-sim-"))
    children = Children(child_env(folder))
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        prepare(folder, sizes[-1] if sizes else 0, args.image_mib)
        testbed = children.start("testbed", str(args.hosts))
        assert testbed.stdout is not None
        served = json.loads(testbed.stdout.readline())
        print(f"testbed API {served['url']} ({SITES_NOTE}): {served['nodes']} reference nodes, "
              f"{served['vm_capable']} VM-capable, {served['vm_capable_default_queue']} of them in the "
              f"default queue and not exotic; + {served['synthetic']} synthetic nodes on "
              f"{served['synthetic_clusters']} clusters; started in {served['start_s']} s", flush=True)
        api = children.run("api", served["url"], served["base"], str(folder), str(args.hosts), str(args.vms))
        testbed.stdin.close() if testbed.stdin else None
        testbed.wait(timeout=30)
        ssh_results = []
        if sizes:
            server = children.start("ssh-server", str(sizes[-1]), str(folder))
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                raise SystemExit("the SSH endpoints did not start")
            for size in sizes:
                wait_until_idle(args.wait_while)  # the busy flag may have come back since the start
                ssh_results.append(children.run("ssh", str(size), str(folder), str(args.parallel)))
                print(f"SSH side at {size} hosts: done", flush=True)
        children.stop()
        load_after = os.getloadavg()
        known = children.run("known-hosts", str(folder), str(args.hosts), str(args.vms))["samples"]
        report = build_report(args, served, api, ssh_results, known, load_before, load_after,
                              time.perf_counter() - started)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1, default=list))
        return 0
    except KeyboardInterrupt:
        print("interrupted: stopping what was started", file=sys.stderr)
        return 130
    finally:
        children.stop()
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(folder, ignore_errors=True)


def child(argv: list[str]) -> int:
    kind, rest = argv[0], argv[1:]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a socket per endpoint and connection, pipes
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if kind == "testbed":
        return serve_testbed(int(rest[0]))
    if kind == "ssh-server":
        return serve_ssh(int(rest[0]), Path(rest[1]))
    if kind == "api":
        result = api_worker(rest[0], rest[1], Path(rest[2]), int(rest[3]), int(rest[4]))
    elif kind == "known-hosts":
        result = known_hosts_worker(Path(rest[0]), int(rest[1]), int(rest[2]))
    elif kind == "ssh":
        result = ssh_worker(int(rest[0]), Path(rest[1]), int(rest[2]))
    else:
        raise SystemExit(f"unknown child {kind}")
    print(json.dumps(result, default=list), flush=True)
    return 0


def build_report(args: argparse.Namespace, served: dict[str, Any], api: dict[str, Any],
                 ssh_results: list[dict[str, Any]], known: list[dict[str, Any]],
                 load_before: tuple[float, ...],
                 load_after: tuple[float, ...], elapsed: float) -> dict[str, Any]:
    """Print the tables and the goals; return every figure (for --json)."""
    print(f"\n== API side, ran: vm5k -n {args.vms} -r grid5000:{args.hosts} (its Grid'5000 platform code, "
          "HTTP on 127.0.0.1) ==")
    rows = []
    for p in api["phases"]:
        notes = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in p.items()
                          if k in ("hosts", "vms", "subnets", "addressed", "bytes", "mode"))
        rows.append([p["phase"], "ran", f"{p['wall_s']:.2f} s", f"{p['cpu_s']:.2f} s",
                     f"{p['rss_mb']:.0f} MB", f"{p['peak_mb']:.0f} MB", str(p.get("http_requests", 0)),
                     notes])
    print(table(rows, ["phase", "", "wall", "CPU", "RSS", "peak RSS", "HTTP", "what"]))
    ranges = "; ".join(f"{'+'.join(r['sites'])}: {r['blocks']} /22" for r in api["ranges"])
    print(f"hosts per site: {api['sites']}; addresses: {ranges}; {api['saves']['count']} saves of the state "
          f"and lists ({api['saves']['cpu_s']:.2f} s CPU, {api['saves']['wall_s']:.2f} s, included above); "
          f"the API side's process: {api['cpu_s']:.2f} s CPU, peak RSS {api['peak_mb']:.0f} MB, "
          f"{api['http_requests']} HTTP requests")
    summaries = [ssh_summary(r) for r in ssh_results]
    if summaries:
        print("\n== SSH side, ran: vm5k's SshRunner on N endpoints, the hosts step's commands that leave "
              f"this machine alone (max_parallel {args.parallel}) ==")
        rows = [[str(s["hosts"]), f"{s['wall_s']:.2f} s", f"{s['cpu_s']:.2f} s",
                 f"{1000 * s['cpu_per_host_s']:.1f} ms", str(s["connections"]), str(s["sessions"]),
                 f"{s['base_rss_mb']:.0f} MB", f"{s['peak_mb']:.0f} MB", f"{1000 * s['mb_per_host']:.0f} kB",
                 str(s["failures"])] for s in summaries]
        print(table(rows, ["hosts", "wall", "vm5k CPU", "CPU/host", "conn.", "sessions", "RSS before",
                           "peak RSS", "RSS/host", "KO"]))
        first = summaries[0]
        print(f"\ngrowth against {first['hosts']} hosts:")
        def ratio(s: dict[str, Any], key: str) -> str:
            return f"x{s[key] / max(first[key], 1e-9):.2f}"

        keys = ("wall_s", "cpu_s", "connections", "sessions", "peak_mb")
        rows = [[f"x{s['hosts'] / first['hosts']:.0f}", *(ratio(s, k) for k in keys)] for s in summaries]
        print(table(rows, ["hosts", "wall", "CPU", "connections", "sessions", "peak RSS"]))
        last = ssh_results[-1]
        print(f"\nphases at {last['hosts']} hosts:")
        rows = [[p["phase"], f"{p['wall_s']:.2f} s", f"{p['cpu_s']:.2f} s", str(p.get("ssh_connections", 0)),
                 str(p.get("ssh_sessions", 0)), f"{p['peak_mb']:.0f} MB"] for p in last["phases"]]
        print(table(rows, ["phase", "wall", "CPU", "conn.", "sessions", "peak RSS"]))
    largest = summaries[-1] if summaries else {"connect_cpu_per_host_s": 0.0, "session_cpu_s": 0.0,
                                               "mb_per_host": 0.0, "base_rss_mb": 0.0}
    from vm5k.remote.settings import PARALLEL_VIA_GATEWAY

    if known:
        print("\n== known_hosts, ran: vm5k's KnownHostsStore recording a new key (load + accept), "
              "best of 3 ==")
        print(table([[f"{r['lines']:,}", f"{1000 * r['cpu_per_key_s']:.2f} ms"] for r in known],
                    ["lines in the file", "CPU per new key"]))
    result = model(args.hosts, args.vms, api, largest, known, api["sites"], api["min_threads"],
                   api["max_vms_per_host"], args.parallel, PARALLEL_VIA_GATEWAY)
    print("\n== model: what cannot run here ==\ninputs:")
    given = {"hosts", "vms", "max_parallel", "gateway_parallel"}
    for key, value in result["inputs"].items():
        source = ANCHORS[key][1] if key in ANCHORS else "the run's size or vm5k's setting" if key in given \
            else "measured here, above"
        print(f"  {key} = {value}   [{source}]")
    cpu, mem, wall, gate = result["cpu"], result["memory_mb"], result["wall_s"], result["gateway"]
    rows = [
        ["API side (plan ... destroy)", "ran", fmt_range(wall["api_side"], " s", 1),
         fmt_range(cpu["api_side_s"], " s", 1)],
        ["Kadeploy's real duration", "modelled", fmt_range(wall["kadeploy"], " s"), "(in the API side)"],
        ["hosts step: connections, facts, folders, image, dnsmasq", "ran (SSH side)", "(below)",
         fmt_range(cpu["hosts_step_s"], " s", 1)],
        ["hosts step: packages, libvirt, bridge, accel", "modelled", fmt_range(wall["hosts_step"], " s"),
         "(in the line above)"],
        ["  of which the image from each site's NFS", "modelled", fmt_range(wall["image_from_nfs"], " s"),
         "-"],
        [f"VMs step: disks, {args.vms:,} boots ({wall['boot_waves']} wave)", "modelled",
         fmt_range(wall["vms_step"], " s"), fmt_range(cpu["vms_step_s"], " s")],
        ["whole run", "", fmt_range(wall["total"], " s"), fmt_range(cpu["total_s"], " s")],
    ]
    print(table(rows, ["part", "", "wall", "vm5k CPU"]))
    print(f"from outside Grid'5000 (ProxyJump {'access.grid5000.fr'}, max_parallel {PARALLEL_VIA_GATEWAY}): "
          f"{gate['connections']:,} connections (one of them to the gateway), {gate['sessions']:,.0f} "
          f"sessions, {gate['probe_channels']:,.0f} probe channels through it, {api['http_requests']} HTTPS "
          f"requests over the Internet: about {gate['extra_wall_s']:,.0f} s more")
    cpu_ok = [total <= cpu["budget_s"] for total in cpu["total_s"]]
    mem_ok = [total < mem["budget"] for total in mem["total"]]

    def verdict(oks: list[bool]) -> str:
        if all(oks):
            return "met"
        return "not met" if not any(oks) else "met at the low figure, not met at the high one"

    print("\n== goals (for the real run at 64 hosts; here: would they hold at "
          f"{args.hosts:,} hosts / {args.vms:,} VMs) ==")
    print(f"vm5k's CPU <= 30 ms x {args.vms:,} VMs + 100 ms x {args.hosts:,} hosts = {cpu['budget_s']:.0f} s:"
          " "
          f""
          f"{cpu['api_side_s']:.1f} (API side) + {cpu['hosts_step_s']:.1f} (hosts step) + "
          f"{fmt_range(cpu['vms_step_s'], '', 0)} (VMs step, of which {cpu['vms_known_hosts_s']:.0f} s "
          f"known_hosts) = {fmt_range(cpu['total_s'], ' s', 0)}: "
          f"{verdict(cpu_ok)}")
    print(f"peak memory < 150 MB: {mem['api_peak']:.0f} MB (API side, measured at full size) + "
          f"{mem['ssh_connections']:.0f} MB ({args.hosts:,} connections at the measured RSS per host) "
          f"[+ up to {ANCHORS['vms_step_mb_per_vm_bound'][0] * args.vms:.0f} MB for the VMs step, a bound] = "
          f"{fmt_range(mem['total'], ' MB', 0)}: {verdict(mem_ok)}")
    print(f"\nload average before {' '.join(f'{x:.2f}' for x in load_before)}, after "
          f"{' '.join(f'{x:.2f}' for x in load_after)} (2 cores); the benchmark took {elapsed:.0f} s")
    return {"testbed": served, "api": api, "ssh": ssh_results, "known_hosts": known, "ssh_summary": summaries,
            "model": result,
            "anchors": {k: {"value": v, "source": s} for k, (v, s) in ANCHORS.items()},
            "goals": {"cpu": cpu_ok, "memory": mem_ok}, "load_before": load_before, "load_after": load_after,
            "elapsed_s": elapsed}


if __name__ == "__main__":
    sys.exit(main())
