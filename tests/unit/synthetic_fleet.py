"""A made-up fleet for the pictures' tests and benchmark: many hosts over several sites and clusters, VMs in
mixed states, with the times a run records (no platform, no VM: the topology alone)."""

from __future__ import annotations

import random

from vm5k.timeline import (
    ANSWERED,
    CREATED,
    DEPLOY_STARTED,
    DEPLOYED,
    IMAGE_READY,
    IMAGE_STARTED,
    SET_UP,
    SETUP_STARTED,
    STARTED,
    stamp,
)
from vm5k.topology import HOST_KO, HOST_OK, VM, VM_KO, VM_OK, Host, Topology

SITES = {"rennes": ("paravance", "parasilo", "paradoxe"), "nancy": ("gros", "grisou"),
         "lyon": ("taurus", "nova", "sirius"), "grenoble": ("dahu",), "lille": ("chiclet", "chifflot"),
         "nantes": ("ecotype",)}
T0 = 1_760_000_000.0


def synthetic_fleet(n_hosts: int = 300, n_vms: int = 3000, *, seed: int = 1, times: bool = True) -> Topology:
    """`n_hosts` hosts spread unevenly over the sites' clusters, `n_vms` VMs spread unevenly over the hosts
    (some hosts get none), about 5 % of them KO, 2 % still planned; with `times`, the events of a run."""
    rng = random.Random(seed)
    topo = Topology()
    clusters = [(site, cluster) for site, names in SITES.items() for cluster in names]
    weights = [rng.randint(1, 6) for _ in clusters]
    hosts: list[Host] = []
    counts: dict[str, int] = {}
    for index in range(n_hosts):
        site, cluster = clusters[index % len(clusters)] if index < len(clusters) else \
            rng.choices(clusters, weights)[0]
        number = counts[cluster] = counts.get(cluster, 0) + 1
        host = Host(f"{cluster}-{number}.{site}.grid5000.fr", state=HOST_KO if index % 97 == 5 else HOST_OK)
        hosts.append(topo.add_host(site, cluster, host))
    host_weights = [0 if index % 41 == 7 else rng.randint(1, 4) for index in range(n_hosts)]
    for number in range(1, n_vms + 1):
        host = rng.choices(hosts, host_weights)[0] if n_hosts > 1 else hosts[0]
        draw = rng.random()
        state = VM_KO if draw < 0.05 or host.state == HOST_KO else "planned" if draw < 0.07 else VM_OK
        _put(topo, VM(f"vm-{number}", state=state), host)
    if times:
        record_times(topo, rng)
    return topo


def _put(topo: Topology, vm: VM, host: Host) -> None:
    """Place without `Topology.place`'s lookups (quadratic over thousands of VMs)."""
    vm.host = host.id
    host.vms.append(vm)


def record_times(topo: Topology, rng: random.Random) -> None:
    """The events a run stamps, at plausible offsets from `T0`."""
    for host in topo.hosts():
        stamp(host, DEPLOY_STARTED, T0)
        deployed = T0 + rng.uniform(180, 300)
        stamp(host, DEPLOYED, deployed)
        stamp(host, SETUP_STARTED, T0 + 310)
        stamp(host, IMAGE_STARTED, T0 + 312)
        stamp(host, IMAGE_READY, T0 + 312 + rng.uniform(5, 60))
        stamp(host, SET_UP, T0 + 312 + rng.uniform(40, 90))
        start = T0 + 420
        for index, vm in enumerate(host.vms):
            if vm.state == "planned":
                continue
            stamp(vm, CREATED, start)
            began = start + 5 + index * rng.uniform(2, 6)
            stamp(vm, STARTED, began)
            if vm.state == VM_OK:
                stamp(vm, ANSWERED, began + rng.uniform(5, 40))
