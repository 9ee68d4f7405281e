"""IP/MAC pools (pure): Grid'5000's subnet rule, KaVLAN ranges that cannot collide, stable assignment."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vm5k.addresses import (
    AddressPool,
    SiteNetwork,
    assign,
    grid5000_mac,
    is_grid5000_mac,
    kavlan_mac,
    kavlan_range,
    same_mac,
    subnet_range,
    with_service_address,
)
from vm5k.errors import DeploymentError
from vm5k.topology import VM, Host, Topology

ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))


@given(ipv4)
def test_grid5000_rule_is_octets_two_to_four(ip: str) -> None:
    mac = grid5000_mac(ip)
    octets = ip.split(".")
    assert mac == "00:16:3E:" + ":".join(f"{int(o):02X}" for o in octets[1:])
    assert is_grid5000_mac(mac.lower()) and same_mac(mac, mac.lower())


@given(ipv4, ipv4)
def test_kavlan_macs_never_collide_with_grid5000_and_are_local_unicast(a: str, b: str) -> None:
    mac = kavlan_mac(a)
    first = int(mac.split(":")[0], 16)
    assert first & 0b10 and not first & 0b01  # locally administered, unicast
    assert not is_grid5000_mac(mac) and not same_mac(mac, grid5000_mac(b))
    assert (kavlan_mac(a) == kavlan_mac(b)) == (a == b)


def test_examples_from_the_grid5000_documentation() -> None:
    assert grid5000_mac("10.132.8.1") == "00:16:3E:84:08:01"
    assert grid5000_mac("10.132.8.2") == "00:16:3E:84:08:02"
    assert same_mac("00:16:3e:84:08:01", "00:16:3E:84:08:01") and not same_mac(None, None)


def test_subnet_range_skips_network_broadcast_and_gateway() -> None:
    rng = subnet_range("rennes", ["10.156.4.0/22"], "10.156.0.0/14", "10.156.4.1")
    pairs = list(rng.pairs())
    assert pairs[0] == ("10.156.4.2", "00:16:3E:9C:04:02") and pairs[-1][0] == "10.156.7.254"
    assert len(pairs) == rng.size == 1021
    assert rng.netmask == "255.252.0.0" and rng.broadcast == "10.159.255.255"
    assert not rng.valid("10.156.4.0", grid5000_mac("10.156.4.0"))
    assert rng.valid("10.156.5.5", "00:16:3e:9c:05:05")  # case does not matter
    assert not rng.valid("10.156.5.5", "00:16:3E:9C:05:06")


def test_kavlan_range_leaves_out_node_and_infrastructure_blocks() -> None:
    net = SiteNetwork("rennes", kavlans={"4": ("10.24.0.0/18", "10.24.63.254")},
                      node_ips={"4": frozenset({"10.24.5.1", "10.24.9.18"})})
    rng = kavlan_range("4", net, ["rennes"], node_ips=["10.24.30.3"])
    blocks = {ipaddress.ip_network(b) for b in rng.blocks}
    for used in ("10.24.0.0/24", "10.24.5.0/24", "10.24.9.0/24", "10.24.30.0/24", "10.24.63.0/24"):
        assert ipaddress.ip_network(used) not in blocks
    assert len(blocks) == 64 - 5 and rng.dhcp == "vm5k" and rng.vlan == "4"
    ip, mac = next(rng.pairs())
    assert ip == "10.24.1.1" and mac == kavlan_mac(ip)
    with pytest.raises(DeploymentError, match="does not describe KaVLAN 7"):
        kavlan_range("7", net, ["rennes"])


def topology(per_host: dict[str, list[str]]) -> Topology:
    topo = Topology()
    for host, vms in per_host.items():
        site = host.split(".")[1]
        topo.add_host(site, host.split("-")[0], Host(host))
        for vm in vms:
            topo.place(VM(vm), host)
    return topo


POOL = AddressPool((subnet_range("rennes", ["10.156.8.0/22"], "10.156.0.0/14", None),
                    subnet_range("nancy", ["10.144.0.0/22", "10.144.4.0/22"], "10.144.0.0/14", None)))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(0, 40), st.randoms(use_true_random=False))
def test_assignment_is_stable_unique_and_per_site(first: int, more: int, rnd) -> None:
    names = [f"vm-{i}" for i in range(1, first + 1)]
    topo = topology({"a-1.rennes.grid5000.fr": names[::2], "b-1.nancy.grid5000.fr": names[1::2]})
    assign(topo, POOL)
    before = {vm.id: (vm.ip, vm.mac) for vm in topo.vms()}
    assert assign(topo, POOL) == 0  # nothing moves when nothing changed
    # more VMs arrive (a resumed run adding VMs, or VMs moved from a failed host): old pairs stay
    hosts = ["a-1.rennes.grid5000.fr", "b-1.nancy.grid5000.fr"]
    for i in range(first + 1, first + more + 1):
        topo.place(VM(f"vm-{i}"), rnd.choice(hosts))
    assign(topo, POOL)
    index = topo.host_index()
    for vm in topo.vms():
        site = index[vm.host][0].id
        assert POOL.range_for(site).valid(vm.ip, vm.mac)
        if vm.id in before:
            assert (vm.ip, vm.mac) == before[vm.id]
    assert len({vm.ip for vm in topo.vms()}) == len(topo.vms())


def test_a_vm_moved_to_another_site_gets_a_pair_of_that_site() -> None:
    topo = topology({"a-1.rennes.grid5000.fr": ["vm-1", "vm-2"], "b-1.nancy.grid5000.fr": []})
    assign(topo, POOL)
    topo.place(topo.vm("vm-2"), "b-1.nancy.grid5000.fr")
    assert assign(topo, POOL) == 1
    assert topo.vm("vm-2").ip.startswith("10.144.") and topo.vm("vm-1").ip.startswith("10.156.")


def test_duplicated_pairs_are_reassigned() -> None:
    topo = topology({"a-1.rennes.grid5000.fr": ["vm-1", "vm-2"]})
    for vm in topo.vms():
        vm.ip, vm.mac = "10.156.8.7", grid5000_mac("10.156.8.7")
    assign(topo, POOL)
    assert topo.vm("vm-1").ip == "10.156.8.7" and topo.vm("vm-2").ip == "10.156.8.1"


def test_too_few_addresses_and_missing_site_are_errors() -> None:
    tiny = AddressPool((subnet_range("rennes", ["10.156.8.0/30"], "10.156.0.0/14", None),))
    with pytest.raises(DeploymentError, match="too few for its 3 VMs"):
        assign(topology({"a-1.rennes.grid5000.fr": ["vm-1", "vm-2", "vm-3"]}), tiny)
    with pytest.raises(DeploymentError, match="no address range for the VMs of site lyon"):
        assign(topology({"c-1.lyon.grid5000.fr": ["vm-1"]}), tiny)


def test_pool_round_trips_through_json_values() -> None:
    assert AddressPool.from_dict(POOL.to_dict()) == POOL
    assert AddressPool.from_dict(None) == AddressPool()


def test_the_service_address_is_kept_out_of_the_pairs_and_stays() -> None:
    pool, service = with_service_address(POOL)
    assert service == "10.156.11.254" and service in pool.ranges[0].reserved
    topo = topology({"a-1.rennes.grid5000.fr": [f"vm-{i}" for i in range(1, 1021)]})
    with pytest.raises(DeploymentError, match="too few"):  # 1022 addresses, one kept: 1021 for VMs
        assign(topology({"a-1.rennes.grid5000.fr": [f"vm-{i}" for i in range(1, 1023)]}), pool)
    assign(topo, pool)
    assert service not in {vm.ip for vm in topo.vms()}
    again, same = with_service_address(AddressPool.from_dict(pool.to_dict()), service)
    assert same == service and again == pool
    moved, kept = with_service_address(POOL, "10.144.3.3")
    assert kept == "10.144.3.3" and "10.144.3.3" in moved.range_for("nancy").reserved


def test_the_range_holding_the_service_address_is_found() -> None:
    pool, service = with_service_address(POOL)
    assert [r.sites for r in pool.ranges if r.holds(service)] == [("rennes",)]
    assert not pool.ranges[0].valid(service, grid5000_mac(service))  # but no VM may take it
