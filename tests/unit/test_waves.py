"""Boot windows planned from what hosts report, and the domain events that follow the boots."""

from __future__ import annotations

from vm5k.hypervisor.readiness import DomainEvents, parse_event
from vm5k.hypervisor.waves import plan_windows


def test_hosts_on_one_kernel_share_one_window_of_its_processors() -> None:
    testbed = [(f"node-{i}", "5f0c-same-kernel", 2) for i in range(1, 65)]
    plan = plan_windows(testbed)
    assert len(set(plan.values())) == 1
    window = plan["node-1"]
    assert window.size == 2 and len(window.hosts) == 64


def test_distinct_machines_keep_a_window_each() -> None:
    grid5000 = [(f"paradoxe-{i}", f"boot-{i}", 104) for i in range(1, 9)]
    plan = plan_windows(grid5000)
    assert len(set(plan.values())) == 8 and all(w.size == 104 for w in plan.values())


def test_unknown_kernel_and_explicit_boot_parallel_are_per_host() -> None:
    plan = plan_windows([("a", "", 4), ("b", "", 4)])
    assert plan["a"] != plan["b"]
    plan = plan_windows([("a", "k", 4), ("b", "k", 4)], per_host=1)
    assert plan["a"] != plan["b"] and plan["a"].size == 1


def test_events_tell_a_stop_after_the_start_from_an_earlier_destroy() -> None:
    events = DomainEvents()
    clock = iter([1.0, 2.0, 3.0]).__next__
    events.note("event 'lifecycle' for domain 'vm5k-r-vm-1': Stopped Destroyed", clock)  # before the start
    assert events.stopped("vm5k-r-vm-1", since=1.5) is None
    events.note("event 'lifecycle' for domain 'vm5k-r-vm-1': Started Booted", clock)
    assert events.stopped("vm5k-r-vm-1", since=1.5) is None
    events.note("event 'lifecycle' for domain 'vm5k-r-vm-1': Shutdown Finished after guest request", clock)
    assert events.stopped("vm5k-r-vm-1", since=1.5) == "shut off"
    assert parse_event("event 'lifecycle' for domain 'x': Defined Added") is None
