"""Memory limits of the nodes, with cgroup v1's memory controller (this machine) or cgroup v2's.

    <memory>/vm5k-testbed/<id>            the whole testbed: at most the machine's memory minus a reserve
    <memory>/vm5k-testbed/<id>/<node>     one node: its daemons, its VMs (QEMU runs in libvirtd's cgroup
                                          because nodes do not mount cgroups), its tmpfs

When VMs ask for more than a node (or the testbed) may use, the kernel's OOM killer ends a QEMU inside that
cgroup: the VM fails, the machine and the other nodes do not. The API still advertises the nodes' real
reference hardware.

The two versions differ only in file names (`memory.limit_in_bytes`/`memory.max`,
`memory.usage_in_bytes`/`memory.current`) and in one rule of v2: a cgroup's children get the memory
controller only when the cgroup lists it in its `cgroup.subtree_control` (the testbed's own cgroups hold no
process, which v2 requires of a cgroup that hands controllers down).
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from g5k_testbed.lab.layout import Layout, memory_cgroup_root
from g5k_testbed.lab.procs import wait_until
from g5k_testbed.lab.runtime import Runtime

RESERVE_FRACTION = 0.10
RESERVE_MIN = 1 << 30
#: the same facts under each version's names ("events" holds an ``oom_kill N`` line in both)
V1_FILES = {"limit": "memory.limit_in_bytes", "usage": "memory.usage_in_bytes",
            "events": "memory.oom_control"}
V2_FILES = {"limit": "memory.max", "usage": "memory.current", "events": "memory.events"}


def available() -> bool:
    return memory_cgroup_root() is not None


def is_v2(path: Path) -> bool:
    """Whether `path` (made or not yet) lies in a cgroup v2 hierarchy: the nearest folder that tells
    (a v1 memory cgroup has memory.limit_in_bytes, every v2 cgroup has cgroup.controllers)."""
    for folder in (path, *path.parents):
        if (folder / V1_FILES["limit"]).exists():
            return False
        if (folder / "cgroup.controllers").exists():
            return True
    return False


def memory_file(path: Path, what: str) -> Path:
    """The file of cgroup `path` that holds `what` (``limit``, ``usage``, ``events``), in its version."""
    return path / (V2_FILES if is_v2(path) else V1_FILES)[what]


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
    (rounded to pages); hierarchical accounting is on (always, with v2)."""
    runtime.record(f"cgroup:{path}", "cgroup", path=str(path))
    if is_v2(path):
        _delegate_memory(path)
    path.mkdir(parents=True, exist_ok=True)
    use_hierarchy = path / "memory.use_hierarchy"
    if use_hierarchy.exists() and use_hierarchy.read_text().strip() != "1":
        with contextlib.suppress(OSError):  # only settable on an empty cgroup; the parent's value wins
            _write(use_hierarchy, "1")
    limit_file = memory_file(path, "limit")
    _write(limit_file, str(limit))
    return int(limit_file.read_text())


def _delegate_memory(path: Path) -> None:
    """cgroup v2: each cgroup above `path`, from the hierarchy's root down (made when missing), hands the
    memory controller down to its children."""
    chain = list(reversed(path.parents))
    top = next((i for i, folder in enumerate(chain) if (folder / "cgroup.controllers").exists()), len(chain))
    for folder in chain[top:]:
        folder.mkdir(exist_ok=True)
        control = folder / "cgroup.subtree_control"
        if "memory" not in (control.read_text().split() if control.exists() else ()):
            _write(control, "+memory")


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
        return int(memory_file(path, "usage").read_text())
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
