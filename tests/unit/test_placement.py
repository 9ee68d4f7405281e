"""Placement: the four distributions, the capacity rule, overflow errors, max VMs."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vm5k.errors import EXIT_USAGE, UsageError
from vm5k.placement import (
    Limits,
    NotEnoughCapacity,
    check,
    distribute,
    max_vms,
    normalize_distribution,
    place,
)
from vm5k.topology import GIB, VM, Capacity, Host, Topology, VMTemplate


def host(name: str, ram_gib: int, threads: int, *, virtual: bool = True) -> Host:
    return Host(name, Capacity(ram=ram_gib * GIB, cores=threads, threads=threads, virtual=virtual))


def vms(count: int, mem: int = 1024, n_cpu: int = 1, start: int = 1) -> list[VM]:
    return [VM(f"vm-{i}", mem=mem, n_cpu=n_cpu) for i in range(start, start + count)]


# -- capacity rule -------------------------------------------------------------------------------------

def test_budget_keeps_a_hypervisor_reserve_and_overcommits_cpu_only() -> None:
    budget = Limits().budget(Capacity(ram=32 * GIB, cores=12, threads=24))
    assert (budget.mem, budget.vcpus) == (31 * 1024, 48)
    budget = Limits(host_reserve_mib=0, cpu_overcommit=1.0).budget(Capacity(ram=32 * GIB, cores=12))
    assert (budget.mem, budget.vcpus) == (32 * 1024, 12)  # no SMT known: one thread per core
    assert Limits().budget(Capacity(ram=32 * GIB, cores=12, virtual=False)).count(VM("v")) == 0
    assert Limits().budget(None).count(VM("v")) is None


@pytest.mark.parametrize("reserve, ratio", [(-1, 2.0), (0, 0.0), (0, -1.0), (0, float("nan")), (0, 65.0)])
def test_bad_limits(reserve: int, ratio: float) -> None:
    with pytest.raises(UsageError):
        Limits(host_reserve_mib=reserve, cpu_overcommit=ratio)


def test_exact_fit_is_allowed() -> None:
    """The original's strict '> 0' left a host's last slot unused; a VM that exactly fits is placed."""
    placement = place(vms(3), [host("a", 4, 8)])  # 4 GiB - 1 GiB reserve = 3 VMs of 1 GiB
    assert len(placement.assignment) == 3


# -- distributions -------------------------------------------------------------------------------------

# usable: 2, 8 and 4 GiB; 8, 32 and 4 vCPUs: 2 + 8 + 4 = 14 VMs of 1 GiB / 1 vCPU
HETEROGENEOUS = [host("small", 3, 4), host("big", 9, 16), host("mid", 5, 2)]


def test_round_robin_cycles_and_skips_full_hosts() -> None:
    placement = place(vms(12), HETEROGENEOUS)
    assert list(placement.assignment.values())[:6] == ["small", "big", "mid"] * 2
    assert Counter(placement.assignment.values()) == {"small": 2, "big": 6, "mid": 4}
    assert placement.warnings == [] and placement.unchecked_hosts == []


def test_round_robin_respects_vcpus() -> None:
    placement = place(vms(3, mem=512, n_cpu=2), [host("a", 64, 2), host("b", 64, 4)],
                      limits=Limits(cpu_overcommit=1))
    assert Counter(placement.assignment.values()) == {"a": 1, "b": 2}
    with pytest.raises(NotEnoughCapacity):
        place(vms(4, mem=512, n_cpu=2), [host("a", 64, 2), host("b", 64, 4)], limits=Limits(cpu_overcommit=1))


def test_concentrated_fills_hosts_in_order() -> None:
    placement = place(vms(7), HETEROGENEOUS, "concentrated")
    assert list(placement.assignment.values()) == ["small"] * 2 + ["big"] * 5


def test_concentrated_goes_back_to_an_earlier_host_for_a_smaller_vm() -> None:
    big_then_small = [VM("a", mem=2048), VM("b", mem=2048), VM("c", mem=1024)]
    placement = place(big_then_small, [host("h1", 4, 8), host("h2", 9, 8)], "concentrated")
    assert placement.assignment == {"a": "h1", "b": "h2", "c": "h1"}


def test_random_is_reproducible_with_a_seed() -> None:
    hosts = [host(f"h{i}", 64, 64) for i in range(10)]
    first = place(vms(50), hosts, "random", seed=42).assignment
    assert place(vms(50), hosts, "random", seed=42).assignment == first
    assert place(vms(50), hosts, "random", seed=7).assignment != first
    assert len(set(first.values())) > 3


def test_random_respects_capacity() -> None:
    placement = place(vms(14), HETEROGENEOUS, "random", seed=3)
    assert Counter(placement.assignment.values()) == {"small": 2, "big": 8, "mid": 4}


def test_n_by_hosts_divides_evenly() -> None:
    hosts = [host(f"h{i}", 64, 64) for i in range(4)]
    placement = place(vms(12), hosts, "n_by_hosts")
    assert Counter(placement.assignment.values()) == {f"h{i}": 3 for i in range(4)}
    assert placement.warnings == []
    assert placement.by_host()["h0"] == ["vm-1", "vm-2", "vm-3"]


def test_n_by_hosts_places_the_remainder_and_warns() -> None:
    hosts = [host(f"h{i}", 64, 64) for i in range(4)]
    placement = place(vms(10), hosts, "n_by_hosts")
    assert len(placement.assignment) == 10  # nothing dropped
    assert Counter(placement.assignment.values()) == {"h0": 3, "h1": 3, "h2": 2, "h3": 2}
    assert "2 hosts get 3 VMs, 2 get 2" in placement.warnings[0]


def test_n_by_hosts_with_fewer_vms_than_hosts() -> None:
    placement = place(vms(2), [host(f"h{i}", 64, 64) for i in range(5)], "n_by_hosts")
    assert placement.assignment == {"vm-1": "h0", "vm-2": "h1"}
    assert "2 hosts get 1 VM, 3 get none" in placement.warnings[0]


def test_n_by_hosts_refuses_a_host_too_small_for_its_share() -> None:
    with pytest.raises(NotEnoughCapacity, match=r"host small cannot hold its 4 VMs \(it holds 2 of"):
        place(vms(12), HETEROGENEOUS, "n_by_hosts")


def test_existing_vms_use_their_share() -> None:
    topo = Topology()
    topo.add_host("s", "c", host("a", 4, 8))  # 3 slots
    topo.add_host("s", "c", host("b", 4, 8))
    topo.add_vm(VM("old-1", mem=2048), "a")
    for vm in vms(4):
        topo.add_vm(vm)
    placement = distribute(topo)
    assert Counter(placement.assignment.values()) == {"a": 1, "b": 3}
    assert topo.unplaced == [] and [vm.id for vm in topo.host("a").vms] == ["old-1", "vm-1"]


def test_unknown_capacity_is_not_checked_and_reported() -> None:
    placement = place(vms(5), [Host("x"), host("a", 2, 8)])
    assert placement.unchecked_hosts == ["x"]
    assert Counter(placement.assignment.values()) == {"x": 4, "a": 1}
    with pytest.raises(UsageError, match="concentrated distribution needs the hosts' capacity"):
        place(vms(5), [Host("x")], "concentrated")


def test_hosts_that_cannot_run_vms_get_none() -> None:
    placement = place(vms(3), [host("novirt", 64, 64, virtual=False), host("a", 64, 64)])
    assert set(placement.assignment.values()) == {"a"}


@pytest.mark.parametrize("name, canonical", [("distributed", "round-robin"), ("round-robin", "round-robin"),
                                             ("n-by-hosts", "n_by_hosts"), ("random", "random")])
def test_distribution_names(name: str, canonical: str) -> None:
    assert normalize_distribution(name) == canonical


def test_unknown_distribution() -> None:
    with pytest.raises(UsageError, match="unknown distribution 'spread'"):
        place(vms(1), [host("a", 4, 4)], "spread")


# -- overflow ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("distribution", ["round-robin", "concentrated", "random", "n_by_hosts"])
def test_overflow_gives_a_table_and_exit_status_2(distribution: str) -> None:
    with pytest.raises(NotEnoughCapacity) as caught:
        place(vms(20), HETEROGENEOUS, distribution, seed=1)
    error = caught.value
    assert error.exit_status == EXIT_USAGE and "\n" not in str(error)
    assert error.needed == (20, 20 * 1024, 20) and error.max_vms == 14
    assert error.available == (14, (2 + 8 + 4) * 1024, 8 + 32 + 4)
    table = error.table().splitlines()
    assert table[1].split() == ["needed", "20", "20480", "20"]
    assert table[2].split() == ["available", "14", "14336", "44"]


def test_overflow_message_names_the_totals() -> None:
    with pytest.raises(NotEnoughCapacity, match=r"20 VMs need 20480 MiB and 20 vCPUs.*at most 14 VMs"):
        place(vms(20), HETEROGENEOUS)


def test_a_vm_bigger_than_any_host() -> None:
    with pytest.raises(NotEnoughCapacity, match=r"VM huge .*fits on no host: the largest offers 8192 MiB"):
        place([VM("huge", mem=100_000)], HETEROGENEOUS)


def test_no_hosts() -> None:
    with pytest.raises(UsageError, match="no host"):
        place(vms(1), [])
    assert place([], []).assignment == {}


# -- properties ---------------------------------------------------------------------------------------------

host_lists = st.lists(st.tuples(st.integers(1, 64), st.integers(1, 64)), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(host_lists, st.lists(st.tuples(st.integers(256, 8192), st.integers(1, 8)), max_size=40),
       st.sampled_from(["round-robin", "concentrated", "random", "n_by_hosts"]), st.integers(0, 5))
def test_placement_never_overloads_and_never_drops(specs, vm_specs, distribution, seed) -> None:
    hosts = [host(f"h{i}", ram, threads) for i, (ram, threads) in enumerate(specs)]
    machines = [VM(f"vm-{i}", mem=mem, n_cpu=cpu) for i, (mem, cpu) in enumerate(vm_specs)]
    limits = Limits()
    try:
        placement = place(machines, hosts, distribution, limits=limits, seed=seed)
    except NotEnoughCapacity as error:
        assert "\n" not in str(error) and error.exit_status == EXIT_USAGE
        return
    assert list(placement.assignment) == [vm.id for vm in machines]  # every VM, in VM order
    for h in hosts:
        on = [vm for vm in machines if placement.assignment[vm.id] == h.id]
        budget = limits.budget(h.capacity)
        assert sum(vm.mem for vm in on) <= budget.mem
        assert sum(vm.n_cpu for vm in on) <= budget.vcpus


@settings(max_examples=100, deadline=None)
@given(host_lists, st.integers(256, 8192), st.integers(1, 8))
def test_max_vms_is_exactly_what_placement_achieves(specs, mem, cpu) -> None:
    hosts = [host(f"h{i}", ram, threads) for i, (ram, threads) in enumerate(specs)]
    template = VMTemplate(mem=mem, n_cpu=cpu)
    total = max_vms(hosts, template).total
    machines = [template.make_vm(f"vm-{i}") for i in range(total)]
    assert len(place(machines, hosts).assignment) == total
    with pytest.raises(NotEnoughCapacity):
        place([*machines, template.make_vm("one-more")], hosts)


# -- max VMs and checks ----------------------------------------------------------------------------------

def test_max_vms_per_host_and_total() -> None:
    result = max_vms([*HETEROGENEOUS, Host("unknown")], VMTemplate(mem=2048, n_cpu=1))
    assert result.per_host == {"small": 1, "big": 4, "mid": 2, "unknown": None}
    assert result.total == 7 and result.unknown == ["unknown"]
    result = max_vms(HETEROGENEOUS, VMTemplate(mem=512, n_cpu=4))
    assert result.per_host == {"small": 2, "big": 8, "mid": 1}  # vCPU-bound


def test_check_of_a_placed_topology() -> None:
    topo = Topology()
    topo.add_host("s", "c", host("a", 4, 8))
    topo.add_host("s", "c", Host("b"))
    topo.add_vm(VM("v1", mem=2048), "a")
    topo.add_vm(VM("v2", mem=99999), "b")
    assert check(topo) == ["b"]
    topo.add_vm(VM("v3", mem=2048), "a")
    with pytest.raises(NotEnoughCapacity, match="host a cannot hold its 2 VMs"):
        check(topo)
