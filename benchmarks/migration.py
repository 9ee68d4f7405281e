"""Live migration benchmark on the testbed: `vm5k.Run.migrate` against the same migration by hand.

A tiny VM (256 MiB) is deployed on a testbed of three rennes nodes; it is migrated from its node to the
second one by ``Run.migrate`` (in this process: checks, lock, key and destination prepared, the migration,
the wait until it answers SSH again, the outdir rewritten), then by hand. Meanwhile the third node pings
the VM every 10 ms (``ping -D -i 0.01``): the longest gap between two replies is the VM's downtime, seen
from a third place.

By hand, the timed part is the whole of what a user does for the same result: the destination prepared as
vm5k prepares it, ``virsh migrate`` with the same flags, the wait until the VM answers SSH. The VM goes back
and forth (a vm5k migration, then two by hand that bring it back where vm5k's record says), ``--rounds``
times; medians are compared. Targets: vm5k within 1 s of the hand-made time; downtime under 1 s here
under TCG. The machine's load average is printed with the figures.

    .venv/bin/python benchmarks/migration.py              # its own testbed (rennes:3), brought down after
    .venv/bin/python benchmarks/migration.py --state /var/lib/vm5k-testbed/default
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TINY = '<vm mem="256" hdd="2" n_cpu="1"/>'


def testbed(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "g5k_testbed.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def on_node(ssh_config: str, node: str, script: str, timeout: float = 300) -> str:
    done = subprocess.run(["ssh", "-F", ssh_config, "-o", "BatchMode=yes", node, "sh", "-c",
                           shlex.quote(script)], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{node}: {done.stderr.strip()[-500:]}")
    return done.stdout


class Pinger:
    """``ping -D -i 0.01`` from a third node; the longest gap between replies."""

    def __init__(self, ssh_config: str, node: str, address: str) -> None:
        self.process = subprocess.Popen(["ssh", "-F", ssh_config, "-o", "BatchMode=yes", node,
                                         f"exec ping -D -n -i 0.01 {address}"], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> float:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=60)
        stamps = [float(line[1:line.index("]")]) for line in out.splitlines()
                  if line.startswith("[") and "bytes from" in line]
        return max((b - a for a, b in itertools.pairwise(stamps)), default=float("nan"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", help="use this running testbed (3 nodes or more) instead of starting one")
    parser.add_argument("--rounds", type=int, default=3, help="vm5k migrations (each with two by hand)")
    args = parser.parse_args()
    os.environ["HOME"] = tempfile.mkdtemp(prefix="bench-migration-home-")  # no Grid'5000 API configured
    state = args.state or tempfile.mkdtemp(prefix="bench-migration-", dir="/var/lib/vm5k-testbed")
    if not args.state:
        print(f"starting a testbed in {state}", flush=True)
        up = testbed("up", "--site", "rennes:3", "--state", state, "--json")
        if up.returncode != 0:
            sys.exit(up.stderr[-2000:])
    os.environ["VM5K_TESTBED_STATE"] = state
    status = json.loads(testbed("status", "--json", "--state", state).stdout)
    ssh_config, nodes = status["ssh_config"], [node["name"] for node in status["nodes"]]
    import vm5k
    from vm5k.hypervisor.layout import HostLayout
    from vm5k.hypervisor.migration import libvirt_uri
    from vm5k.hypervisor.runtime import HostRuntime

    out = Path(tempfile.mkdtemp(prefix="bench-migration-out-")) / "run"
    run = None
    try:
        run = vm5k.deploy(n_vm=1, resources="rennes:3", vm_template=TINY, walltime=1800, outdir=out)
        vm = run.vms[0]
        source = vm.host
        dest, third = [node for node in nodes if node != source][:2]
        layout = HostLayout(run.run_id)
        print(f"load average {os.getloadavg()[0]:.2f}; {vm.id} ({vm.ip}) on {source}", flush=True)

        def answers() -> None:  # what vm5k waits for after a migration: the VM answers SSH
            for _ in range(600):
                done = subprocess.run(["ssh", "-F", str(out / "ssh_config"), "-o", "BatchMode=yes", "-o",
                                       "ConnectTimeout=5", vm.id, "true"], capture_output=True, timeout=60)
                if done.returncode == 0:
                    return
                time.sleep(0.1)
            raise RuntimeError(f"{vm.id} does not answer SSH")

        def by_hand(src: str, dst: str) -> None:
            """The same migration as a user makes it, all of it timed: the destination prepared as vm5k
            prepares it (an overlay on the same backing file and size, the seed and the domain XML copied),
            ``virsh migrate`` with the same flags, then the wait until the VM answers SSH."""
            disk, seed, xml = layout.disk(vm.id), layout.seed_iso(vm.id), layout.domain_xml(vm.id)
            info = json.loads(on_node(ssh_config, src, f"qemu-img info -U --output=json {disk}"))
            on_node(ssh_config, dst, f"rm -f {disk}; qemu-img create -q -f qcow2 -F qcow2 "
                                     f"-b {info['backing-filename']} {disk} {info['virtual-size']}")
            for path in (seed, xml):
                data = subprocess.run(["ssh", "-F", ssh_config, src, f"cat {path}"], capture_output=True,
                                      check=True).stdout
                subprocess.run(["ssh", "-F", ssh_config, dst, f"cat > {path}"], input=data, check=True)
            address = HostRuntime.of(run.topology.host(dst)).address
            on_node(ssh_config, src, f"virsh -q -c qemu:///system migrate --live --p2p --persistent "
                                     f"--undefinesource --copy-storage-inc --migrate-disks vda --migrateuri "
                                     f"tcp://{address} --disks-uri tcp://{address} "
                                     f"{layout.domain_name(vm.id)} '{libvirt_uri(str(address), layout)}'",
                    timeout=600)
            answers()

        def measured(move: Any) -> tuple[float, float]:
            """(seconds, downtime) of one migration, the downtime seen from the third node."""
            pinger = Pinger(ssh_config, third, str(vm.ip))
            time.sleep(2)
            started = time.monotonic()
            move()
            seconds = time.monotonic() - started
            time.sleep(1)
            return seconds, pinger.stop()

        here, there = source, dest
        samples: dict[str, list[tuple[float, float]]] = {"vm5k": [], "hand": []}
        for _ in range(args.rounds):  # vm5k moves the VM; by hand it goes and comes back where vm5k put it
            samples["vm5k"].append(measured(lambda to=there: run.migrate({vm.id: to})))
            samples["hand"].append(measured(lambda a=there, b=here: by_hand(a, b)))
            samples["hand"].append(measured(lambda a=here, b=there: by_hand(a, b)))
            here, there = there, here
        load = os.getloadavg()[0]
        medians = {name: (statistics.median(s for s, _ in values), max(g for _, g in values))
                   for name, values in samples.items()}
        labels = {"vm5k": "vm5k Run.migrate",
                  "hand": "by hand (same preparation, virsh migrate, wait for SSH)"}
        for name, label in labels.items():
            seconds, gap = medians[name]
            print(f"{label}: median {seconds:.2f} s over {len(samples[name])} migrations "
                  f"({', '.join(f'{s:.2f}' for s, _ in samples[name])}); worst downtime {gap * 1000:.0f} ms")
        print(f"vm5k - hand: {medians['vm5k'][0] - medians['hand'][0]:+.2f} s (target: within 1 s); worst "
              f"downtime {max(medians['vm5k'][1], medians['hand'][1]) * 1000:.0f} ms (target: under 1 s); "
              f"load average {load:.2f}")
        return 0
    finally:
        if run is not None:
            run.destroy()
            run.close()
        if not args.state:
            down = testbed("down", "--state", state, timeout=600)
            print(f"testbed down ({down.returncode})", flush=True)
            if down.returncode == 0:
                shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
