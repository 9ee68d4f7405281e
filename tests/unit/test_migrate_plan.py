"""What `vm5k.migrate.plan_moves` refuses before anything moves, and what it lets through (pure: a
topology as the hosts step records it, no host touched)."""

from __future__ import annotations

import pytest

from vm5k.errors import UsageError
from vm5k.hypervisor.runtime import HostRuntime
from vm5k.migrate import plan_moves
from vm5k.placement import PlacementPolicy
from vm5k.topology import HOST_OK, VM, VM_OK, Capacity, Host, Topology

GIB = 1024 ** 3
XEON = "avx avx2 avx512f sse4_2"
EPYC = "avx avx2 sha_ni sse4_2"


def fleet(accel: str = "tcg", flags: tuple[str, str] = ("", "")) -> Topology:
    """Two OK hosts of 16 GiB and 8 threads; vm-1 runs on the first."""
    topo = Topology()
    for index, cpu_flags in enumerate(flags, 1):
        host = Host(f"node-{index}.rennes.grid5000.fr", capacity=Capacity(ram=16 * GIB, cores=8, threads=8),
                    state=HOST_OK)
        HostRuntime(accel=accel, nproc=8, bridge="br0", cpu_model=f"cpu of node-{index}",
                    cpu_flags=cpu_flags).record(host)
        topo.add_host("rennes", "paradoxe", host)
    topo.add_vm(VM("vm-1", mem=1024, state=VM_OK), "node-1.rennes.grid5000.fr")
    return topo


def test_a_move_to_a_host_with_room_is_planned_by_short_name() -> None:
    [move] = plan_moves(fleet(), "vm-1=node-2", PlacementPolicy())
    assert (move.vm, move.source, move.dest) == ("vm-1", "node-1.rennes.grid5000.fr",
                                                 "node-2.rennes.grid5000.fr")


def test_a_kvm_guest_does_not_move_to_a_processor_without_its_features() -> None:
    with pytest.raises(UsageError, match=r"node-2\.rennes\.grid5000\.fr \(cpu of node-2\) lacks avx512f"):
        plan_moves(fleet("kvm", (XEON, EPYC)), "vm-1=node-2", PlacementPolicy())


def test_a_kvm_guest_moves_to_a_processor_that_has_all_its_features() -> None:
    assert len(plan_moves(fleet("kvm", ("avx sse4_2", XEON)), {"vm-1": "node-2"}, PlacementPolicy())) == 1


def test_processor_features_do_not_matter_under_tcg_or_when_unknown() -> None:
    assert len(plan_moves(fleet("tcg", (XEON, EPYC)), "vm-1=node-2", PlacementPolicy())) == 1
    assert len(plan_moves(fleet("kvm", (XEON, "")), "vm-1=node-2", PlacementPolicy())) == 1


def test_another_accelerator_is_refused() -> None:
    topo = fleet()
    HostRuntime(accel="kvm", nproc=8, bridge="br0").record(topo.host("node-2.rennes.grid5000.fr"))
    with pytest.raises(UsageError, match="does not migrate between accelerators"):
        plan_moves(topo, "vm-1=node-2", PlacementPolicy())


@pytest.mark.parametrize(("moves", "message"), [
    ("vm-9=node-2", "vm-9 is not a VM of this run"),
    ("vm-1=node-7", "node-7 is not a host of this run"),
    ("vm-1=node-1", "vm-1 is already on"),
    ("vm-1", "is not VM=HOST"),
    ("vm-1=node-2,vm-1=node-2", "vm-1 is given twice"),
])
def test_bad_moves_are_refused_in_one_line(moves: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        plan_moves(fleet(), moves, PlacementPolicy())
    assert "\n" not in str(caught.value)


def test_a_full_destination_is_refused() -> None:
    topo = fleet()
    topo.add_vm(VM("vm-2", mem=15 * 1024, state=VM_OK), "node-2.rennes.grid5000.fr")
    with pytest.raises(UsageError, match="no room for vm-1"):
        plan_moves(topo, "vm-1=node-2", PlacementPolicy())
