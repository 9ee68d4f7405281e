"""Memory limits of the nodes (cgroup v1 memory controller, as on this machine).

    <memory>/vm5k-testbed/<id>            the whole testbed: at most the machine's memory minus a reserve
    <memory>/vm5k-testbed/<id>/<node>     one node: its daemons, its VMs (QEMU runs in libvirtd's cgroup
                                          because nodes do not mount cgroups), its tmpfs

When VMs ask for more than a node (or the testbed) may use, the kernel's OOM killer ends a QEMU inside that
cgroup: the VM fails, the machine and the other nodes do not. The API still advertises the nodes' real
reference hardware.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from .layout import MEMORY_CGROUP_ROOT, Layout
from .procs import wait_until
from .runtime import Runtime

RESERVE_FRACTION = 0.10
RESERVE_MIN = 1 << 30


def available() -> bool:
    return (MEMORY_CGROUP_ROOT / "memory.limit_in_bytes").exists()


def machine_budget() -> int:
    """Bytes the whole testbed may use: MemTotal minus max(1 GiB, 10 %)."""
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                return total - max(RESERVE_MIN, int(total * RESERVE_FRACTION))
    raise RuntimeError("/proc/meminfo has no MemTotal")


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def ensure(runtime: Runtime, path: Path, limit: int) -> int:
    """Create a memory cgroup (recorded first), set its limit and return it as the kernel applied it
    (rounded to pages); hierarchical accounting is on."""
    runtime.record(f"cgroup:{path}", "cgroup", path=str(path))
    path.mkdir(parents=True, exist_ok=True)
    use_hierarchy = path / "memory.use_hierarchy"
    if use_hierarchy.exists() and use_hierarchy.read_text().strip() != "1":
        with contextlib.suppress(OSError):  # only settable on an empty cgroup; the parent's value wins
            _write(use_hierarchy, "1")
    _write(path / "memory.limit_in_bytes", str(limit))
    return int((path / "memory.limit_in_bytes").read_text())


def ensure_testbed(layout: Layout, runtime: Runtime) -> int:
    """The testbed's own cgroup, limited to the machine budget; returns that budget in bytes.

    The shared parent `vm5k-testbed/` is created without a limit and never recorded: other testbeds may
    live in it, so `down` only tries to remove it once empty.
    """
    budget = machine_budget()
    parent = layout.cgroup_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    ensure(runtime, layout.cgroup_dir, budget)
    return budget


def remove_shared_parent(layout: Layout) -> None:
    with contextlib.suppress(OSError):  # still used by another testbed, or already gone
        os.rmdir(layout.cgroup_dir.parent)


def join(path: Path) -> None:
    """Move the calling process into the cgroup (used between fork and exec of a node)."""
    _write(path / "cgroup.procs", str(os.getpid()))


def procs(path: Path) -> list[int]:
    """PIDs in a cgroup and all its descendants."""
    found: list[int] = []
    for folder, _, _ in os.walk(path):
        try:
            found.extend(int(pid) for pid in Path(folder, "cgroup.procs").read_text().split())
        except FileNotFoundError:
            continue
    return found


def usage(path: Path) -> int | None:
    try:
        return int((path / "memory.usage_in_bytes").read_text())
    except (FileNotFoundError, ValueError):
        return None


def remove(path: Path, timeout: float = 15) -> bool:
    """Kill what is left in a cgroup tree (only ever processes the testbed started) and remove it."""
    if not path.exists():
        return True
    for pid in procs(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not procs(path), timeout)
    ok = True
    for folder, _, _ in sorted(os.walk(path), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(folder)
        except FileNotFoundError:
            pass
        except OSError:
            ok = False
    return ok
