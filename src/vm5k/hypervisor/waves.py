"""How many VM boots may be in flight, and which hosts share that budget: decided from what hosts say.

Why: a VM boot is CPU-bound until the guest has its address, so each host boots at most ``nproc`` VMs at
once (a sliding window). But hosts may share their processors: the testbed's nodes are network namespaces
of one machine, and every one reports the same kernel ``boot_id`` and the same processors. Giving each of
them its own window starts (hosts × nproc) boots on the same few cores: every boot slows down and the first
VM answers only when nearly all do. Hosts reporting the same ``boot_id`` run on the same kernel, hence the
same processors: they share one window of that kernel's ``nproc``, so the boots in flight follow what the
shared hardware can take; the first VMs answer early and the last no later. Hosts that report distinct
``boot_id`` values (Grid'5000's nodes, any real machines) keep a window each, as before. A host that did
not report one (an older run's record) is counted alone.

>>> plan = plan_windows([("n1", "b-1", 2), ("n2", "b-1", 2), ("n3", "b-2", 4), ("n4", "", 8)])
>>> plan["n1"] == plan["n2"], plan["n1"].size, plan["n3"].size, plan["n4"].size
(True, 2, 4, 8)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    """One budget of boots in flight: its key (the kernel it stands for) and its size."""

    key: str
    size: int
    hosts: tuple[str, ...]


def plan_windows(hosts: Iterable[tuple[str, str, int]], per_host: int | None = None) -> dict[str, Window]:
    """Host → its window, from (host, boot_id, nproc) as the hosts reported them.

    ``per_host`` (the run's ``boot_parallel``) asks for that many boots per host, whatever they share: the
    user's explicit choice wins.

    >>> plan_windows([("n1", "b", 2), ("n2", "b", 2)], per_host=3)["n2"]
    Window(key='host:n2', size=3, hosts=('n2',))
    """
    groups: dict[str, list[tuple[str, int]]] = {}
    for host, boot_id, nproc in hosts:
        key = f"kernel:{boot_id}" if boot_id and per_host is None else f"host:{host}"
        groups.setdefault(key, []).append((host, max(1, int(nproc or 1))))
    plan: dict[str, Window] = {}
    for key, members in groups.items():
        # one kernel sees all its processors: the largest nproc reported is what they share
        size = per_host if per_host is not None else max(nproc for _, nproc in members)
        window = Window(key, max(1, size), tuple(host for host, _ in members))
        for host, _ in members:
            plan[host] = window
    return plan
