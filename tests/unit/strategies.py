"""Hypothesis strategies for the vm5k model, shared by the unit tests."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from vm5k.topology import GIB, VM, Capacity, Host, Topology

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
ids = st.builds(lambda first, rest: first + rest, st.sampled_from(_ALNUM),
                st.text(alphabet=_ALNUM + ".-", max_size=20))  # [A-Za-z0-9][A-Za-z0-9.-]*
printable = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\x7f"),
    min_size=1, max_size=30,
)
states = st.sampled_from(["planned", "OK", "KO", "started", "defined"])
cpusets = st.sampled_from(["auto", "0", "0,2", "0-3", "0-7,^4", "12"])
ips = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
    st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
)
macs = st.lists(st.integers(0, 255), min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
capacities = st.builds(
    Capacity,
    ram=st.integers(0, 4096).map(lambda g: g * GIB),
    cores=st.integers(0, 256),
    threads=st.one_of(st.none(), st.integers(0, 512)),
    virtual=st.booleans(),
)


@st.composite
def vms(draw: st.DrawFn, vm_id: str) -> VM:
    return VM(
        vm_id,
        mem=draw(st.integers(1, 65536)),
        n_cpu=draw(st.integers(1, 64)),
        hdd=draw(st.integers(1, 1000)),
        cpuset=draw(cpusets),
        backing_file=draw(st.one_of(st.none(), printable)),
        real_file=draw(st.booleans()),
        ip=draw(st.one_of(st.none(), ips)),
        mac=draw(st.one_of(st.none(), macs)),
        state=draw(states),
        reason=draw(st.one_of(st.none(), printable)),
    )


@st.composite
def topologies(draw: st.DrawFn, max_hosts: int = 6, max_vms: int = 12) -> Topology:
    """Random topologies with unique, valid ids (hosts with or without capacity, some VMs unplaced)."""
    site_ids = draw(st.lists(ids, min_size=0, max_size=3, unique=True))
    host_ids = draw(st.lists(ids, min_size=0, max_size=max_hosts, unique=True))
    vm_ids = draw(st.lists(ids, min_size=0, max_size=max_vms, unique=True))
    topo = Topology()
    hosts: list[str] = []
    if site_ids:
        for host_id in host_ids:
            site = draw(st.sampled_from(site_ids))
            cluster = draw(st.sampled_from(["c1", "c2", site + "-c"]))
            capacity = draw(st.one_of(st.none(), capacities))
            reason = draw(st.one_of(st.none(), printable))
            topo.add_host(site, cluster, Host(host_id, capacity=capacity, state=draw(states), reason=reason))
            hosts.append(host_id)
    for vm_id in vm_ids:
        vm = draw(vms(vm_id))
        target = draw(st.one_of(st.none(), st.sampled_from(hosts))) if hosts else None
        topo.add_vm(vm, target)
    return topo
