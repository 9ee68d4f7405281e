"""Benchmark of the whole `vm5k` run on the testbed against the sum of its unavoidable parts.

    .venv/bin/python benchmarks/workflow.py [--counts 4,8] [--json]

Needs root: it brings up its own testbed (2 nodes of rennes, in /var/lib/vm5k-testbed/bench-wf-<pid>) and
always brings it down at the end, also after a failure, Ctrl-C or SIGTERM.

For each count N (4 and 8 by default), two things run one after the other on the same two nodes:

1. **vm5k**, the real command as a user types it: ``vm5k -n N -r rennes:2 -w 0:20:00 -t '<vm mem="256"
   hdd="2"/>' --forcedeploy`` (so Kadeploy is part of the run), with ``VM5K_TESTBED_STATE`` pointing at this
   testbed and HOME at a temporary folder. Its wall-clock time is the *total*; its per-step durations come
   from the outdir (``topology.json`` ``meta["run"]["steps"]``) and a few sub-phases from ``vm5k.log``
   (Kadeploy as vm5k saw it, the host set-up, the image distribution, each VM's boot). Then
   ``vm5k --destroy``.
2. **The unavoidable parts, by hand**, each in the most direct way that does not go through vm5k:

   - *OAR wait*: a job with the same resources as vm5k's (nodes + ``slash_22=1``, type deploy) submitted with
     python-grid5000 on the testbed's API and polled every 0.1 s until it runs (submit → running). The API's
     ``started_at - submitted_at`` (whole seconds) of vm5k's job and of this one are shown beside it: they do
     not include the launching → running phase, which the API gives no date for.
   - *Kadeploy*: the same environment (debian12-min) deployed on the job's nodes through the API, polled every
     0.1 s (POST → terminated); the API's ``updated_at - created_at`` (whole seconds, set by the server's
     ticker, whatever the client's polling) of vm5k's deployment and of this one are shown beside it.
   - *libvirt's start-up*: on the freshly deployed nodes, the first ``virsh -c qemu:///system version`` and
     ``virsh ... domcapabilities`` (capability readiness), timed inside each node (no SSH cost); the slowest
     node counts.
   - *image copy*: what vm5k must do at least (``vm5k.hypervisor.images``: every host gets a local copy of the
     disk image, its kernel and initrd under ``/tmp/vm5k/images/<sha256>/``, copied from the shared
     ``/grid5000`` path): the same three files copied with plain ``cp`` on each node at once, timed inside the
     node; the slowest node counts. The ``sha256sum`` that vm5k adds to verify each copy is shown, not
     counted.
   - *boot of the VMs in waves*: N tiny VMs of the same image (the local copy just made), memory (256 MiB) and
     disk (2 GiB qcow2 overlay), placed round-robin on the 2 nodes like vm5k's. On each node one script makes
     every VM's overlay, cidata seed and domain XML (what tests/lab_fixtures.py's ``create_vm`` makes; vm5k
     too makes them all before its waves), then the VMs start with plain ``virsh create`` in waves of the
     node's ``nproc`` with vm5k's rule (a sliding window whose slot is held until the VM has its address:
     port 22 answers), and each is waited for on its node until an SSH login with a key its seed authorized
     runs a command — from the first file made until the last VM answers. Addresses are pairs of the /22
     the job reserved, which the testbed's DHCP serves.

The *overhead* is vm5k's total minus the sum of these parts, with its share of the total; the goal is a
share under 20 %. The sum is generous to vm5k: vm5k copies the image while it starts libvirt, so the true
critical path is shorter than the sum. Per step: reservation ↔ OAR wait, hosts ↔ Kadeploy + libvirt +
image copy, vms ↔ the boot; topology, network and program have no unavoidable part; "outside steps" is the
command's wall time minus its steps (interpreter start-up, the testbed's status, the final outputs).

The machine is shared (2 cores, TCG, other testbeds running): every figure comes with the load average
(1, 5, 15 min) read when it was measured. Run it when ``uptime`` is lowest.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lab_fixtures import (
    VM,
    LabTestbed,
    bring_down,
    bring_up,
    destroy_vm,
    domain_xml,
    prepare_bridge,
    subnet_pairs,
)
from vm5k.hypervisor.images import load_image
from vm5k.hypervisor.layout import HostLayout
from vm5k.topology import Topology

STATE_ROOT = Path("/var/lib/vm5k-testbed")
SITE = "rennes"
NODES = 2
MEMORY_MIB = 256
TEMPLATE = f'<vm mem="{MEMORY_MIB}" hdd="2"/>'
WALLTIME = "0:20:00"
ENVIRONMENT = "debian12-min"
GOAL = 0.20
POLL = 0.1
BOOT_TIMEOUT = 300
NODE_KEY = "/root/.ssh/vm5k-bench-vm-key"

#: Per VM, on its node: until the guest has its address (port 22 answers, open or refusing), the stage at
#: which vm5k's wave gives the VM's slot to the next one.
ADDRESS_SCRIPT = r"""
ip=$1
until out=$(nc -vz -w 1 "$ip" 22 2>&1); do
    case "$out" in *refused*) break ;; esac
    sleep 0.2
done
"""

#: Per VM, on its node: until a login with the bench key (which the VM's seed authorized) runs a command.
LOGIN_SCRIPT = r"""
ip=$1 key=$2
until ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o ConnectTimeout=5 -o LogLevel=ERROR -i "$key" "root@$ip" true; do sleep 0.5; done
"""

#: Seconds (as "name=value" lines) of the first libvirt calls on a node, measured there.
LIBVIRT_SCRIPT = r"""
t0=$(date +%s.%N)
virsh -q -c qemu:///system version >/dev/null || exit 1
t1=$(date +%s.%N)
virsh -q -c qemu:///system domcapabilities --virttype qemu >/dev/null || exit 1
t2=$(date +%s.%N)
echo "version=$(awk "BEGIN { print $t1 - $t0 }")"
echo "domcapabilities=$(awk "BEGIN { print $t2 - $t1 }")"
"""

#: $@: source and destination pairs. Copies them as vm5k's cache holds them; prints the seconds of the
#: copies and, apart, of the checksums vm5k adds.
COPY_SCRIPT = r"""
set -e
t0=$(date +%s.%N)
while [ $# -ge 2 ]; do
    mkdir -p -- "$(dirname -- "$2")"
    cp -- "$1" "$2"
    copied="$copied $2"
    shift 2
done
t1=$(date +%s.%N)
sha256sum $copied >/dev/null
t2=$(date +%s.%N)
echo "copy=$(awk "BEGIN { print $t1 - $t0 }")"
echo "sha256=$(awk "BEGIN { print $t2 - $t1 }")"
"""


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def parse_values(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = float(value)
    return values


def in_parallel(function: Callable[[str], Any], items: list[str]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return list(pool.map(function, items))


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the benchmark like Ctrl-C, so that the testbed is brought down."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------------------------------------ vm5k


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) +\w+ +([\w.]+): (.*)$")


def log_phases(text: str) -> dict[str, float]:
    """A few sub-phases of the run as vm5k's log dates them (seconds)."""
    events: list[tuple[float, str]] = []
    for line in text.splitlines():
        match = LOG_LINE.match(line)
        if match:
            when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            events.append((when, match.group(3)))

    def first(pattern: str, after: float = 0.0) -> float | None:
        return next((when for when, message in events if when >= after and re.search(pattern, message)), None)

    phases: dict[str, float] = {}
    submitted = first(r"^job \S+ submitted")
    running = first(r"^\d+ jobs? running", submitted or 0.0)
    if submitted and running:
        phases["oar_seen"] = running - submitted
    deploying = first(r"^deploying \S+ on \d+ hosts")
    deployed = first(r"^Kadeploy: deployments done", deploying or 0.0)
    if deploying and deployed:
        phases["kadeploy_seen"] = deployed - deploying
    facts = first(r"hosts: 0/\d+ facts")
    ready = first(r"^hosts: \d+ of \d+ ready", facts or 0.0)
    if deployed and facts:
        phases["after_kadeploy_to_setup"] = facts - deployed
    if facts and ready:
        phases["host_setup"] = ready - facts
    for _, message in events:
        match = re.search(r"\(images: ([\d.]+) s\)", message)
        if match:
            phases["images_vm5k"] = float(match.group(1))
    vms_start = first(r"^vms: create and start")
    starts = []
    for when, message in events:
        match = re.search(r"^\S+ answers on \S+ after ([\d.]+) s", message)
        if match:
            starts.append(when - float(match.group(1)))
    if vms_start and starts:
        phases["vms_before_first_start"] = min(starts) - vms_start
    return {key: round(value, 2) for key, value in phases.items()}


def run_vm5k(testbed: LabTestbed, count: int, work: Path, tag: str) -> dict[str, Any]:
    """Run vm5k for `count` VMs; its times, then its API records; destroys the run."""
    outdir = work / f"vm5k-{tag}"
    home = work / "home"
    home.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("VM5K_")}
    env.update(HOME=str(home), VM5K_TESTBED_STATE=str(testbed.state_dir))
    vm5k = str(Path(sys.executable).parent / "vm5k")
    argv = [vm5k, "-n", str(count), "-r", f"{SITE}:{NODES}", "-w", WALLTIME, "-t", TEMPLATE, "--forcedeploy",
            "-o", str(outdir)]
    before = load()
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=1800, check=False)
    wall = time.monotonic() - start
    result: dict[str, Any] = {"exit_status": proc.returncode, "wall_s": round(wall, 2), "load_before": before,
                              "load_after": load()}
    try:
        topology = json.loads((outdir / "topology.json").read_text())
        meta = topology["meta"]
        result["steps"] = {name: round(float(s), 2) for name, s in meta["run"]["steps"].items()}
        result["phases"] = log_phases((outdir / "vm5k.log").read_text())
        boots = [vm.extra.get("boot_seconds") for vm in Topology.from_dict(topology).vms()]
        result["vm_boot_s"] = sorted(round(float(b), 1) for b in boots if b is not None)
        result["api"] = api_records(testbed, meta.get("grid5000", {}))
    except (OSError, KeyError, ValueError) as error:
        result["error"] = f"cannot read the outdir: {error}"
    if proc.returncode != 0:
        result["stderr_tail"] = proc.stderr[-2000:]
    destroy = subprocess.run([vm5k, "--destroy", str(outdir)], cwd=work, env=env, capture_output=True,
                             text=True, timeout=900, check=False)
    if destroy.returncode != 0:
        raise RuntimeError(f"vm5k --destroy {outdir} failed ({destroy.returncode}): {destroy.stderr[-1500:]}")
    return result


def api_records(testbed: LabTestbed, record: dict[str, Any]) -> dict[str, Any]:
    """vm5k's job and deployment as the testbed's API dates them (whole seconds)."""
    site = testbed.grid5000().sites[SITE]
    out: dict[str, Any] = {}
    jobs = record.get("jobs") or []
    if jobs:
        job = site.jobs.get(int(jobs[0]["id"]))
        out["job"] = jobs[0]["id"]
        out["resources"] = jobs[0].get("resources")
        out["oar_api_s"] = int(job.started_at) - int(job.submitted_at)
    deployments = record.get("deployments") or []
    if deployments:
        deployment = site.deployments.get(deployments[-1]["uid"])
        out["deployment"] = deployment.uid
        out["kadeploy_api_s"] = int(deployment.updated_at) - int(deployment.created_at)
    return out


# ------------------------------------------------------------------------------------------------ by hand


def wait_for(refresh: Callable[[], str], done: Callable[[str], bool], timeout: float) -> float:
    """Seconds until `done(refresh())`, polling every POLL seconds."""
    start = time.monotonic()
    while True:
        state = refresh()
        if done(state):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"still {state} after {timeout:.0f} s")
        time.sleep(POLL)


def by_hand(testbed: LabTestbed, count: int, resources: str, work: Path, tag: str) -> dict[str, Any]:
    """The unavoidable parts of a run of `count` VMs, each measured directly (see the module docstring)."""
    site = testbed.grid5000().sites[SITE]
    parts: dict[str, Any] = {"load_before": load()}
    key = work / f"vm-key-{tag}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vm5k-bench", "-f", str(key)],
                   check=True)
    # the VMs' seeds authorize the key the testbed's status names: this run's own key
    bench = replace(testbed, status={**testbed.status, "private_key": str(key)}, vms=[])
    job = None
    vms: list[VM] = []
    try:
        submitted = time.monotonic()
        job = site.jobs.create({"resources": f"{resources},walltime={WALLTIME}", "types": ["deploy"],
                                "command": "sleep 3600", "name": f"vm5k-bench-{tag}"})
        wait_for(lambda: (job.refresh(), job.state)[1], lambda s: s == "running", 120)
        parts["oar_s"] = round(time.monotonic() - submitted, 2)
        parts["oar_api_s"] = int(job.started_at) - int(job.submitted_at)
        nodes = list(job.assigned_nodes)
        pairs = subnet_pairs(job.resources_by_type["subnets"][0])

        public = Path(f"{testbed.private_key}.pub").read_text().strip()
        posted = time.monotonic()
        deployment = site.deployments.create({"nodes": nodes, "environment": ENVIRONMENT, "key": public})
        wait_for(lambda: (deployment.refresh(), deployment.status)[1],
                 lambda s: s in ("terminated", "error", "canceled"), 600)
        parts["kadeploy_s"] = round(time.monotonic() - posted, 2)
        parts["kadeploy_api_s"] = int(deployment.updated_at) - int(deployment.created_at)
        failed = [n for n in nodes if (deployment.result or {}).get(n, {}).get("state") != "OK"]
        if deployment.status != "terminated" or failed:
            raise RuntimeError(f"deployment {deployment.uid} {deployment.status}, KO: {failed}")

        libvirt = in_parallel(lambda node: parse_values(testbed.ssh(node, LIBVIRT_SCRIPT).stdout), nodes)
        parts["libvirt_version_s"] = round(max(v["version"] for v in libvirt), 3)
        parts["libvirt_domcapabilities_s"] = round(max(v["domcapabilities"] for v in libvirt), 3)
        parts["libvirt_s"] = round(max(v["version"] + v["domcapabilities"] for v in libvirt), 3)

        disk, files, boot_spec = image_files(testbed)
        pairs_args = shlex.join([arg for source, dest in files for arg in (source, dest)])
        copies = in_parallel(lambda node: parse_values(
            testbed.ssh(node, f"set -- {pairs_args}\n{COPY_SCRIPT}").stdout), nodes)
        parts["image_copy_s"] = round(max(c["copy"] for c in copies), 3)
        parts["image_sha256_s"] = round(max(c["sha256"] for c in copies), 3)
        parts["image_bytes"] = sum(Path(source).stat().st_size for source, _ in files)

        start = time.monotonic()
        in_parallel(lambda node: prepare_bridge(testbed, node), nodes)
        private = key.read_text()
        in_parallel(lambda node: testbed.ssh(node, f"umask 077; mkdir -p /root/.ssh; cat > {NODE_KEY}",
                                             input=private), nodes)
        parts["bridge_and_key_s"] = round(time.monotonic() - start, 2)
        nproc = {node: int(testbed.ssh(node, "nproc").stdout) for node in nodes}
        parts["nproc"] = nproc
        parts.update(boot_in_waves(bench, nodes, nproc, count, pairs[10:], disk, boot_spec, vms, tag))
    finally:
        for vm in vms:
            destroy_vm(bench, vm)
        if job is not None:
            job.delete()
            try:
                wait_for(lambda: (job.refresh(), job.state)[1], lambda s: s in ("terminated", "error"), 120)
            except RuntimeError as error:
                print(f"  job {job.uid} did not end: {error}", flush=True)
    parts["load_after"] = load()
    return parts


def image_files(testbed: LabTestbed) -> tuple[str, list[tuple[str, str]], dict[str, Any]]:
    """What vm5k distributes for the testbed's default image: the disk's path in a host's cache; each file
    (disk, kernel, initrd) with its place in that cache; the direct-boot spec (relative to the disk)."""
    image = load_image(testbed.image)
    layout = HostLayout("bench")
    disk = image.disk.remote(layout)
    files = [(str(item.path), item.remote(layout)) for item in image.files()]
    folder = os.path.dirname(disk)
    boot = {"kernel": os.path.relpath(image.kernel.remote(layout), folder) if image.kernel else None,
            "initrd": os.path.relpath(image.initrd.remote(layout), folder) if image.initrd else None,
            "cmdline": image.cmdline}
    return disk, files, boot


def files_script(testbed: LabTestbed, vms: list[VM], disk: str, boot: dict[str, Any]) -> str:
    """One node's shell script that makes every VM's disk (a 2 GiB qcow2 overlay of `disk`), cidata seed
    and domain XML, as tests/lab_fixtures.py's `create_vm` does, without starting anything."""
    key = Path(f"{testbed.private_key}.pub").read_text().strip()
    image_dir = os.path.dirname(disk)
    lines = ["set -e"]
    for vm in vms:
        user_data = f"#cloud-config\nhostname: {vm.name}\nssh_authorized_keys:\n  - {key}\n"
        meta_data = f"instance-id: {vm.name}\nlocal-hostname: {vm.name}\n"
        xml = domain_xml(vm.name, vm.mac, vm.folder, boot, image_dir, MEMORY_MIB)
        lines += [
            f"mkdir -p {vm.folder} && cd {vm.folder}",
            f"qemu-img create -q -f qcow2 -F qcow2 -b {shlex.quote(disk)} disk.qcow2 2G",
            f"printf %s {shlex.quote(user_data)} > user-data",
            f"printf %s {shlex.quote(meta_data)} > meta-data",
            "genisoimage -quiet -output seed.iso -volid cidata -joliet -rock user-data meta-data",
            f"printf %s {shlex.quote(xml)} > domain.xml",
        ]
    return "\n".join(lines)


def boot_in_waves(testbed: LabTestbed, nodes: list[str], nproc: dict[str, int], count: int,
                  pairs: list[tuple[str, str]], disk: str, boot: dict[str, Any], vms: list[VM], tag: str
                  ) -> dict[str, Any]:
    """`count` VMs placed round-robin on `nodes` like vm5k's; on each node, every VM's files made at once
    (one script, as vm5k does before its waves), then the VMs started with plain ``virsh create`` in waves of
    the node's nproc with vm5k's rule (a sliding window whose slot is held from a VM's start until it has
    its address); seconds from the first file made until the last VM accepts SSH."""
    placed: dict[str, list[VM]] = {node: [] for node in nodes}
    for index in range(count):
        ip, mac = pairs[index]
        node = nodes[index % len(nodes)]
        name = f"bench-{tag}-{index + 1}"
        placed[node].append(VM(name, node, mac, ip, f"/tmp/lab-vms/{name}"))
    windows = {node: threading.Semaphore(nproc[node]) for node in nodes}
    answered: dict[str, float] = {}

    def on_node(node: str, script: str, *args: str) -> None:
        testbed.ssh(node, ["timeout", str(BOOT_TIMEOUT), "sh", "-c", script, "bench", *args],
                    timeout=BOOT_TIMEOUT + 30)

    def one(vm: VM) -> None:
        with windows[vm.node]:
            started = time.monotonic()
            on_node(vm.node, f"virsh -q -c qemu:///system create {vm.folder}/domain.xml >/dev/null\n"
                             f"{ADDRESS_SCRIPT}", vm.ip)
        on_node(vm.node, LOGIN_SCRIPT, vm.ip, NODE_KEY)
        answered[vm.name] = time.monotonic() - started

    start = time.monotonic()
    in_parallel(lambda node: testbed.ssh(node, files_script(testbed, placed[node], disk, boot)), nodes)
    files = time.monotonic() - start
    everyone = [vm for node in nodes for vm in placed[node]]
    vms.extend(everyone)
    with ThreadPoolExecutor(max_workers=len(everyone)) as pool:
        for future in [pool.submit(one, vm) for vm in everyone]:
            future.result()
    return {"boot_s": round(time.monotonic() - start, 2), "vm_files_s": round(files, 2),
            "vm_boot_s": sorted(round(seconds, 1) for seconds in answered.values())}


# ------------------------------------------------------------------------------------------------ report

UNAVOIDABLE = (("oar_s", "OAR wait (submit → running)"), ("kadeploy_s", "Kadeploy (POST → terminated)"),
               ("libvirt_s", "libvirt start-up (first calls)"), ("image_copy_s", "image copy (cp)"),
               ("boot_s", "boot of the VMs in waves"))
STEP_PARTS = {"reservation": ("oar_s",), "hosts": ("kadeploy_s", "libvirt_s", "image_copy_s"),
              "vms": ("boot_s",)}


def analyse(count: int, vm5k: dict[str, Any], hand: dict[str, Any]) -> dict[str, Any]:
    unavoidable = sum(float(hand[key]) for key, _ in UNAVOIDABLE)
    total = float(vm5k["wall_s"])
    overhead = total - unavoidable
    steps = vm5k.get("steps", {})
    per_step = {}
    for step, seconds in steps.items():
        parts = sum(float(hand[key]) for key in STEP_PARTS.get(step, ()))
        per_step[step] = {"seconds": seconds, "unavoidable": round(parts, 2),
                          "overhead": round(seconds - parts, 2)}
    outside = total - sum(steps.values())
    per_step["outside steps"] = {"seconds": round(outside, 2), "unavoidable": 0.0,
                                 "overhead": round(outside, 2)}
    # everything but the VMs step: the part of the overhead that the machine's load hardly blurs
    fixed = (total - steps.get("vms", 0.0)) - (unavoidable - float(hand["boot_s"]))
    return {"vms": count, "total_s": round(total, 2), "steps_total_s": round(sum(steps.values()), 2),
            "unavoidable_s": round(unavoidable, 2), "overhead_s": round(overhead, 2),
            "overhead_outside_vms_step_s": round(fixed, 2),
            "overhead_share": round(overhead / total, 3) if total else None,
            "under_goal": bool(total and overhead / total < GOAL), "per_step": per_step}


def report(count: int, vm5k: dict[str, Any], hand: dict[str, Any], result: dict[str, Any]) -> None:
    api = vm5k.get("api", {})
    phases = vm5k.get("phases", {})
    print(f"\n== {count} VMs on {NODES} nodes ==", flush=True)
    status = "ok" if vm5k["exit_status"] == 0 else f"EXIT {vm5k['exit_status']}"
    print(f"vm5k ({status}): total {vm5k['wall_s']:.1f} s wall, steps {result['steps_total_s']:.1f} s  "
          f"[load {vm5k['load_before']} → {vm5k['load_after']}]")
    print(f"  {'step':<15}{'vm5k':>8}{'unavoidable':>13}{'overhead':>10}")
    for step, row in result["per_step"].items():
        print(f"  {step:<15}{row['seconds']:>7.1f}s{row['unavoidable']:>12.1f}s{row['overhead']:>9.1f}s")
    if phases:
        print("  as vm5k's log dates them: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))
    if vm5k.get("vm_boot_s"):
        print(f"  vm5k's VM boots (start → login): {', '.join(f'{s:.1f}' for s in vm5k['vm_boot_s'])} s")
    print(f"unavoidable parts, by hand  [load {hand['load_before']} → {hand['load_after']}]:")
    extra = {"oar_s": f"API started-submitted: vm5k's job {api.get('oar_api_s', '?')} s, this one "
                      f"{hand.get('oar_api_s')} s",
             "kadeploy_s": f"API updated-created: vm5k's {api.get('kadeploy_api_s', '?')} s, this one "
                           f"{hand.get('kadeploy_api_s')} s",
             "libvirt_s": f"version {hand['libvirt_version_s']:.3f} s + domcapabilities "
                          f"{hand['libvirt_domcapabilities_s']:.3f} s, slowest node",
             "image_copy_s": f"{hand['image_bytes'] / 1e6:.1f} MB, slowest node; vm5k's sha256 check adds "
                             f"{hand['image_sha256_s']:.2f} s",
             "boot_s": f"{count} VMs, waves of nproc {sorted(set(hand['nproc'].values()))}; files "
                       f"{hand['vm_files_s']:.1f} s; each start → login "
                       f"{', '.join(f'{s:.1f}' for s in hand['vm_boot_s'])} s"}
    for key, label in UNAVOIDABLE:
        print(f"  {label:<34}{float(hand[key]):>7.2f} s   ({extra[key]})")
    print(f"  {'sum':<34}{result['unavoidable_s']:>7.2f} s")
    verdict = "under" if result["under_goal"] else "ABOVE"
    print(f"overhead: {result['total_s']:.1f} - {result['unavoidable_s']:.1f} = "
          f"{result['overhead_s']:.1f} s, "
          f"{100 * result['overhead_share']:.1f} % of the total: {verdict} the {100 * GOAL:.0f} % goal  "
          f"[load {load()}]")
    print(f"  of which outside the VMs step (VM boots vary with the load, the rest hardly): "
          f"{result['overhead_outside_vms_step_s']:.1f} s", flush=True)


def summary(results: list[dict[str, Any]]) -> None:
    print("\n== summary ==")
    for count in dict.fromkeys(r["vms"] for r in results):
        runs = [r for r in results if r["vms"] == count]
        shares = [r["overhead_share"] for r in runs]
        median = statistics.median(shares)
        totals = ", ".join(f"{r['total_s']:.1f}" for r in runs)
        parts = ", ".join(f"{r['unavoidable_s']:.1f}" for r in runs)
        print(f"{count} VMs: total {totals} s; unavoidable {parts} s; overhead share "
              f"{', '.join(f'{100 * s:.1f} %' for s in shares)} (median {100 * median:.1f} %: "
              f"{'under' if median < GOAL else 'ABOVE'} the {100 * GOAL:.0f} % goal)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="4,8", help="VM counts (default 4,8)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--repeat", type=int, default=1, help="runs per count (default 1); the summary "
                        "gives each share and their median")
    parser.add_argument("--keep", metavar="DIR", help="keep vm5k's outdirs (logs, topology.json) in DIR")
    args = parser.parse_args()
    counts = [int(n) for n in args.counts.split(",") if n]
    if os.geteuid() != 0:
        print("workflow: error: needs root (it brings a testbed up)", file=sys.stderr)
        return 2
    print(f"machine: {os.cpu_count()} cores, load {load()}", flush=True)
    results: list[dict[str, Any]] = []
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vm5k-bench-wf-"))
    work.mkdir(parents=True, exist_ok=True)
    testbed = None
    try:
        with sigterm_as_interrupt():
            start = time.monotonic()
            testbed = bring_up(STATE_ROOT / f"bench-wf-{os.getpid()}", f"{SITE}:{NODES}")
            print(f"testbed up in {time.monotonic() - start:.1f} s ({testbed.state_dir})  [load {load()}]",
                  flush=True)
            repeat = max(1, args.repeat)
            runs = [(count, f"{count}-{index + 1}") for count in counts for index in range(repeat)]
            for count, tag in runs:
                vm5k = run_vm5k(testbed, count, work, tag)
                resources = (vm5k.get("api") or {}).get("resources") or f"nodes={NODES}+slash_22=1"
                hand = by_hand(testbed, count, resources.split(",walltime=")[0], work, tag)
                result = analyse(count, vm5k, hand)
                report(count, vm5k, hand, result)
                results.append({**result, "vm5k": vm5k, "by_hand": hand})
    except KeyboardInterrupt:
        print("interrupted: bringing the testbed down", file=sys.stderr)
        return 130
    finally:
        if testbed is not None:
            with sigterm_as_interrupt():
                bring_down(testbed)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary(results)
    if args.json:
        print(json.dumps(results, indent=1))
    return 0 if all(r["vm5k"]["exit_status"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
