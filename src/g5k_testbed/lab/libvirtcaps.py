"""One QEMU capability probe for every node, instead of one per node (about 12 s each here).

libvirtd caches what it learnt from each QEMU binary in /var/cache/libvirt/qemu/capabilities/ and trusts
that cache as long as the binaries, the kernel, the CPU and /dev/kvm are unchanged. All nodes share those,
so the first node probes once, the result is kept in the machine's cache (keyed by exactly those facts),
and every node starts with a copy in its own writable layer (again after each Kadeploy wipe).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from g5k_testbed.lab.layout import CACHE_DIR
from g5k_testbed.lab.procs import ProcRef, run

CAPS_SUBDIR = Path("var/cache/libvirt/qemu/capabilities")
PROBED_FILES = ("/usr/bin/qemu-system-x86_64", "/usr/bin/qemu-system-i386", "/usr/sbin/libvirtd")


def cache_key() -> str:
    """What libvirt checks before trusting its cache: binaries, kernel, CPU, /dev/kvm access."""
    facts = [os.uname().release]
    for path in PROBED_FILES:
        try:
            info = os.stat(path)
            facts.append(f"{path}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}")
        except FileNotFoundError:
            facts.append(f"{path}:absent")
    try:
        info = os.stat("/dev/kvm")
        facts.append(f"kvm:{info.st_mode:o}:{info.st_gid}")
    except FileNotFoundError:
        facts.append("kvm:absent")
    with open("/proc/cpuinfo") as handle:
        facts.extend(line for line in handle.read().splitlines()[:30]
                     if line.startswith(("model name", "flags", "microcode")))
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:16]


def machine_cache() -> Path:
    return CACHE_DIR / "libvirt-caps" / cache_key()


def seed_node(node_upper: Path) -> bool:
    """Put the machine's cached probe in a (stopped) node's writable layer; False when there is none yet.

    It goes into the node's own layer rather than a lower layer shared by all nodes because overlayfs
    refuses a lower layer that lies inside another lower layer (/var), which a state folder under /var is.
    """
    source = machine_cache()
    files = sorted(source.glob("*.xml")) if source.is_dir() else []
    if not files:
        return False
    target = node_upper / CAPS_SUBDIR
    node_upper.mkdir(parents=True, exist_ok=True)
    for depth in range(1, len(CAPS_SUBDIR.parts) + 1):
        folder = node_upper / Path(*CAPS_SUBDIR.parts[:depth])
        folder.mkdir(exist_ok=True)
        _mirror(Path("/") / Path(*CAPS_SUBDIR.parts[:depth]), folder)
    for path in files:
        tmp = target / f".{path.name}.tmp"
        shutil.copyfile(path, tmp)
        tmp.replace(target / path.name)
    return True


def _mirror(source: Path, target: Path) -> None:
    if source.exists():
        info = source.stat()
        os.chown(target, info.st_uid, info.st_gid)
        target.chmod(info.st_mode & 0o7777)


def probe_in_node(init: ProcRef, node_upper: Path) -> bool:
    """Make the node's libvirtd probe QEMU now and keep its cache for every later node."""
    run(["nsenter", "-t", str(init.pid), "-m", "-u", "-i", "-n", "-p", "--",
         "virsh", "-c", "qemu:///system", "domcapabilities", "--virttype", "qemu"], timeout=300)
    produced = sorted((node_upper / CAPS_SUBDIR).glob("*.xml"))
    if not produced:
        return False
    target = machine_cache()
    target.mkdir(parents=True, exist_ok=True)
    for path in produced:
        tmp = target / f".{path.name}.tmp"
        shutil.copyfile(path, tmp)
        tmp.replace(target / path.name)
    return True
