"""The pure planner, with hypothesis: random heterogeneous hardware, random OAR status, random demands.

Every plan is checked against brute force: what it reserves is free for the whole walltime, nothing
unusable is planned, no earlier start would have done, VM-sized plans hold the VMs with as few hosts as
possible. No I/O here.
"""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vm5k.errors import UsageError
from vm5k.placement import Limits, NotEnoughCapacity, PlacementPolicy, place
from vm5k.platforms.grid5000.planning import (
    INFINITY,
    Availability,
    ClusterSpec,
    Demand,
    Inventory,
    NodeSpec,
    NoSlot,
    Plan,
    SiteAvailability,
    Usage,
    is_free,
    merge,
    plan_slot,
    subnets_for,
    valid_starts,
)
from vm5k.request import Element
from vm5k.topology import GIB, VM, Capacity

NOW = 1_000_000
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

spans = st.lists(st.tuples(st.integers(0, 300), st.integers(1, 120)).map(lambda p: (p[0], p[0] + p[1])),
                 max_size=6)


# -- intervals -------------------------------------------------------------------------------------------

@given(spans)
def test_merge_keeps_exactly_the_busy_points(raw: list[tuple[int, int]]) -> None:
    merged = merge(raw)
    assert all(a < b for a, b in merged)
    assert all(merged[i][1] < merged[i + 1][0] for i in range(len(merged) - 1))  # disjoint, not touching
    for point in range(0, 430):
        assert any(a <= point < b for a, b in raw) == any(a <= point < b for a, b in merged)


@given(spans, st.integers(1, 100), st.integers(0, 200))
def test_valid_starts_are_exactly_the_free_starts(raw: list[tuple[int, int]], length: int,
                                                  not_before: int) -> None:
    busy = merge(raw)
    starts = valid_starts(busy, length, not_before)
    for t in range(not_before, 500):
        brute = all(not (a < t + length and b > t) for a, b in busy)
        assert brute == any(a <= t <= b for a, b in starts), t
        assert brute == is_free(busy, t, length)
    assert starts[-1][1] == INFINITY


# -- random platforms ------------------------------------------------------------------------------------

STATES = ["alive"] * 6 + ["standby", "dead", "absent", "suspected"]


@st.composite
def platforms(draw: st.DrawFn) -> tuple[Inventory, Availability]:
    clusters: list[ClusterSpec] = []
    sites: dict[str, SiteAvailability] = {}
    for s in range(draw(st.integers(1, 3))):
        site = f"site{s}"
        status = SiteAvailability()
        for c in range(draw(st.integers(1, 3))):
            name = f"c{s}x{c}"
            nodes = []
            for n in range(1, draw(st.integers(1, 5)) + 1):
                fqdn = f"{name}-{n}.{site}.grid5000.fr"
                cores = draw(st.sampled_from([4, 8, 16, 32]))
                capacity = Capacity(draw(st.sampled_from([8, 16, 32, 64, 128])) * GIB, cores,
                                    draw(st.sampled_from([None, cores, 2 * cores])))
                virtual = draw(st.sampled_from(["ivt", "ivt", "ivt", "amd-v", None]))
                nodes.append(NodeSpec(fqdn, site, name, capacity, virtual))
                busy = merge((NOW + a, NOW + a + b) for a, b in draw(st.lists(
                    st.tuples(st.integers(-3000, 20000), st.integers(60, 8000)), max_size=3)))
                state = draw(st.sampled_from(STATES))
                status.nodes[fqdn] = Usage(busy, state not in ("dead", "absent", "suspected"), state)
            exotic = draw(st.booleans()) and c > 0
            clusters.append(ClusterSpec(name, site, tuple(nodes), ("admin", "default"), exotic))
        for k in range(draw(st.integers(1, 3))):
            busy = merge((NOW + a, NOW + a + b) for a, b in draw(st.lists(
                st.tuples(st.integers(-3000, 20000), st.integers(60, 8000)), max_size=2)))
            status.subnets[f"10.{s}.{4 * k}.0/22"] = Usage(busy)
        for vid, kind in (("4", "kavlan"), (str(11 + s), "kavlan-global")):
            busy = merge((NOW + a, NOW + a + b) for a, b in draw(st.lists(
                st.tuples(st.integers(-3000, 20000), st.integers(60, 8000)), max_size=2)))
            status.vlans[vid] = (kind, Usage(busy))
        sites[site] = status
    return Inventory(clusters, sites=list(sites)), Availability(NOW, sites)


def usable_nodes(inventory: Inventory, availability: Availability, cluster: str,
                 blacklist: set[str] = frozenset()) -> list[NodeSpec]:
    spec = inventory.clusters[cluster]
    status = availability.sites[spec.site].nodes
    return [n for n in spec.nodes
            if n.virtual and status[n.fqdn].usable and n.fqdn not in blacklist]


def free_at(inventory: Inventory, availability: Availability, nodes: list[NodeSpec], t: int,
            length: int) -> list:
    return [n for n in nodes if is_free(availability.sites[n.site].nodes[n.fqdn].busy, t, length)]


def free_subnets(availability: Availability, site: str, t: int, length: int) -> int:
    return sum(is_free(u.busy, t, length) for u in availability.sites[site].subnets.values())


def candidate_times(availability: Availability) -> list[int]:
    """Every instant at which some resource becomes free, plus now: the only possible earliest starts."""
    times = {availability.now}
    for site in availability.sites.values():
        for usage in [*site.nodes.values(), *site.subnets.values(), *(u for _, u in site.vlans.values())]:
            times.update(end for _, end in usage.busy if end > availability.now)
    return sorted(times)


def check_reserved_is_free(plan: Plan, inventory: Inventory, availability: Availability,
                           blacklist: set[str] = frozenset()) -> None:
    assert plan.start >= availability.now
    for site, site_plan in plan.sites.items():
        predicted = list(site_plan.predicted)
        assert len(predicted) == len(set(predicted)) == site_plan.node_count
        for fqdn in predicted:
            node = inventory.nodes[fqdn]
            usage = availability.sites[site].nodes[fqdn]
            assert node.virtual and usage.usable and fqdn not in blacklist
            assert is_free(usage.busy, plan.start, plan.walltime)
        for cluster, count in site_plan.clusters.items():
            assert site_plan.exotic or not inventory.clusters[cluster].exotic  # exotic only when named
            free = free_at(inventory, availability, usable_nodes(inventory, availability, cluster, blacklist),
                           plan.start, plan.walltime)
            assert len(free) >= count
        if site_plan.subnets:
            prefix, count = site_plan.subnets
            assert prefix == 22 and free_subnets(availability, site, plan.start, plan.walltime) >= count


# -- counted demands ------------------------------------------------------------------------------------

@SETTINGS
@given(platforms(), st.data())
def test_cluster_count_is_free_and_earliest(world: tuple[Inventory, Availability],
                                            data: st.DataObject) -> None:
    inventory, availability = world
    cluster = data.draw(st.sampled_from(sorted(inventory.clusters)))
    nodes = usable_nodes(inventory, availability, cluster)
    assume(nodes)
    count = data.draw(st.integers(1, len(nodes)))
    walltime = data.draw(st.integers(60, 7200))
    demand = Demand(elements=(Element(cluster, count),), walltime=walltime, vms=(VM("vm-1"),))
    plan = plan_slot(inventory, availability, demand)
    check_reserved_is_free(plan, inventory, availability)
    site = inventory.clusters[cluster].site
    assert plan.sites[site].clusters == {cluster: count}
    for t in candidate_times(availability):
        if t >= plan.start:
            break
        fits = (len(free_at(inventory, availability, nodes, t, walltime)) >= count
                and free_subnets(availability, site, t, walltime) >= 1)
        assert not fits, f"{t} was possible before {plan.start}"


@SETTINGS
@given(platforms(), st.data())
def test_site_and_grid_counts_with_blacklist(world: tuple[Inventory, Availability],
                                             data: st.DataObject) -> None:
    inventory, availability = world
    auto = [c for c in inventory.clusters.values() if not c.exotic]
    hosts = [n.fqdn for c in auto for n in c.nodes]
    blacklist = set(data.draw(st.lists(st.sampled_from(hosts), max_size=2, unique=True))) if hosts else set()
    usable = {c.name: usable_nodes(inventory, availability, c.name, blacklist) for c in auto}
    total = sum(len(v) for v in usable.values())
    assume(total > 0)
    if data.draw(st.booleans()):
        site = data.draw(st.sampled_from(sorted({c.site for c in auto})))
        room = sum(len(v) for c, v in usable.items() if inventory.clusters[c].site == site)
        assume(room > 0)
        element = Element(site, data.draw(st.integers(1, room)))
    else:
        element = Element("grid5000", data.draw(st.integers(1, total)))
    demand = Demand(elements=(element,), blacklist=tuple(sorted(blacklist)), walltime=3600,
                    vms=(VM("vm-1"),))
    try:
        plan = plan_slot(inventory, availability, demand)
    except NoSlot:  # every site that could hold the nodes lacks a free subnet at those times: fine
        return
    check_reserved_is_free(plan, inventory, availability, blacklist)
    assert sum(p.node_count for p in plan.sites.values()) == element.count
    if element.name != "grid5000":
        assert list(plan.sites) == [element.name]


def test_a_count_beyond_the_usable_nodes_is_a_usage_error() -> None:
    node = NodeSpec("a-1.s.grid5000.fr", "s", "a", Capacity(32 * GIB, 8))
    dead = NodeSpec("a-2.s.grid5000.fr", "s", "a", Capacity(32 * GIB, 8))
    inventory = Inventory([ClusterSpec("a", "s", (node, dead))])
    availability = Availability(NOW, {"s": SiteAvailability(
        nodes={node.fqdn: Usage(), dead.fqdn: Usage(usable=False, state="dead")},
        subnets={"10.0.0.0/22": Usage()})})
    with pytest.raises(UsageError, match="asks for 2 nodes on cluster a: only 1 usable nodes"):
        plan_slot(inventory, availability, Demand(elements=(Element("a", 2),)))


# -- VM-sized demands -----------------------------------------------------------------------------------

uniform_vms = st.tuples(st.integers(1, 400), st.sampled_from([512, 1024, 2048, 4096, 16384]),
                        st.integers(1, 4)).map(lambda t: tuple(VM(f"vm-{i}", mem=t[1], n_cpu=t[2])
                                                               for i in range(t[0])))
mixed_vms = st.lists(st.tuples(st.sampled_from([512, 1024, 4096, 8192]), st.integers(1, 8)),
                     min_size=1, max_size=60).map(lambda sizes: tuple(VM(f"vm-{i}", mem=m, n_cpu=c)
                                                                      for i, (m, c) in enumerate(sizes)))


@SETTINGS
@given(platforms(), uniform_vms, st.sampled_from(["round-robin", "concentrated", "n_by_hosts"]))
def test_vm_sized_plan_holds_the_vms_with_fewest_hosts_earliest(world: tuple[Inventory, Availability],
                                                                vms: tuple[VM, ...],
                                                                distribution: str) -> None:
    inventory, availability = world
    for site in availability.sites.values():  # subnets never limit here: only the hosts do
        site.subnets = {cidr: Usage() for cidr in site.subnets}
    limits = Limits()
    demand = Demand(elements=(Element("grid5000"),), walltime=1800, vms=vms,
                    placement=PlacementPolicy(distribution, limits=limits))
    try:
        plan = plan_slot(inventory, availability, demand)
    except NotEnoughCapacity:
        return  # even every usable node would not hold them (checked below by the brute force too)
    except UsageError as error:
        assert "no usable node" in str(error) or "no Grid'5000 cluster" in str(error)
        return
    check_reserved_is_free(plan, inventory, availability)
    hosts = plan.planned_hosts()
    place(vms, hosts, distribution, limits=limits)  # raises if what is reserved cannot hold the VMs
    per_host = {c: limits.budget(plan.capacities[c]).count(vms[0]) or 0 for c in plan.capacities}

    def capacity_at(t: int) -> list[int]:
        counts = []
        for cluster in inventory.clusters.values():
            if cluster.exotic or cluster.name not in per_host:
                continue
            free = free_at(inventory, availability, usable_nodes(inventory, availability, cluster.name), t,
                           1800)
            counts += [per_host[cluster.name]] * len(free)
        return sorted(counts, reverse=True)

    if distribution != "n_by_hosts":  # first fit: hosts sorted by size, fewest whose sum holds the VMs
        counts = capacity_at(plan.start)
        fewest = next(k for k in range(1, len(counts) + 1) if sum(counts[:k]) >= len(vms))
        assert len(hosts) == fewest
        for t in candidate_times(availability):
            if t >= plan.start:
                break
            assert sum(capacity_at(t)) < len(vms), f"{t} could hold the VMs before {plan.start}"


@SETTINGS
@given(platforms(), mixed_vms)
def test_vm_sized_plan_with_mixed_vms_is_placeable(world: tuple[Inventory, Availability],
                                                   vms: tuple[VM, ...]) -> None:
    inventory, availability = world
    demand = Demand(elements=(Element("grid5000"),), walltime=600, vms=vms)
    try:
        plan = plan_slot(inventory, availability, demand)
    except (UsageError, NoSlot):
        return
    check_reserved_is_free(plan, inventory, availability)
    place(vms, plan.planned_hosts(), "round-robin")


# -- resource strings and network -----------------------------------------------------------------------

PART = re.compile(r"^\{cluster='([a-z0-9-]+)'"
                  r"(?: and host not in \(('[^']+'(?:, '[^']+')*)\))?\}/nodes=(\d+)$")


@SETTINGS
@given(platforms(), st.data())
def test_resource_strings_say_what_the_plan_says(world: tuple[Inventory, Availability],
                                                 data: st.DataObject) -> None:
    inventory, availability = world
    kavlan = data.draw(st.booleans())
    auto = [c.name for c in inventory.clusters.values() if not c.exotic]
    demand = Demand(elements=(Element("grid5000", 1),), walltime=3600, vms=(VM("a"),), kavlan=kavlan)
    try:
        plan = plan_slot(inventory, availability, demand)
    except (UsageError, NoSlot):
        return
    for site_plan in plan.sites.values():
        text = site_plan.resources(plan.walltime)
        body, walltime = text.rsplit(",walltime=", 1)
        assert walltime == "1:00:00"
        parts = body.split("+")
        network = parts.pop()
        if kavlan:
            assert network in ("{type='kavlan'}/vlan=1", "{type='kavlan-global'}/vlan=1")
        else:
            assert network == "slash_22=1"
        counted = {}
        for part in parts:
            match = PART.match(part)
            assert match, part
            assert match.group(1) in auto
            counted[match.group(1)] = int(match.group(3))
        assert counted == site_plan.clusters


def test_subnet_counts() -> None:
    assert subnets_for(1) == (22, 1) and subnets_for(1000) == (22, 1) and subnets_for(1001) == (22, 2)
    assert subnets_for(32_000) == (22, 32) and subnets_for(32_001) == (16, 1)
    assert subnets_for(64_001) == (16, math.ceil(65 / 64))
