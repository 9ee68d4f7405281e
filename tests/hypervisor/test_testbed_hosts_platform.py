"""The ``hosts`` platform on the testbed's nodes: SSH hosts given by name, a VM network described by hand.

Disks go everywhere (``-l all``), as for migrations.

The VMs take addresses from a /22 of the site's VM range that no job reserved, so the site's DHCP stays
silent and vm5k's own dnsmasq serves them (static leases, itself as DNS server), as in KaVLAN mode. A host
that does not exist is reported KO at planning and gets no VM; the others deploy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.hypervisor.test_testbed_vms import Deployment, leftovers, make_key, openssh_vm, ssh_settings

from lab_fixtures import LabTestbed
from vm5k.addresses import AddressPool
from vm5k.hypervisor import RunSettings, VmNetwork, deploy_vms, ko_vms, setup_hosts, setup_service
from vm5k.hypervisor.state import meta
from vm5k.platforms.hosts import HostsNetwork, HostsPlatform
from vm5k.topology import HOST_KO, HOST_OK, VM, VM_OK, Topology

pytestmark = pytest.mark.integration

BLOCK = "10.159.244.0/22"  # far from the blocks OAR hands out first: no job holds it


def vm_network(topo: Topology) -> VmNetwork:
    """What the workflow reads from the platform's records to describe the VM network to the engine."""
    (rng,) = AddressPool.from_dict(topo.meta["address_pool"]).ranges
    return VmNetwork(mode="kavlan" if rng.dhcp == "vm5k" else "subnet", cidr=rng.network, gateway=rng.gateway,
                     service_address=topo.meta["service_address"])


def test_hosts_platform_with_vm5k_dhcp(lab_testbed: LabTestbed, tmp_path: Path) -> None:
    nodes = [lab_testbed.nodes[0], lab_testbed.nodes[2]]
    ghost = "ghost-1.rennes.grid5000.fr"
    subnet = lab_testbed.grid5000().sites["rennes"].g5ksubnet
    network = HostsNetwork(cidr=subnet["network"], gateway=subnet["gateway"], block=BLOCK)
    platform = HostsPlatform(hosts=[*nodes, ghost], ssh=ssh_settings(lab_testbed, tmp_path), network=network)
    topo = Topology(unplaced=[VM(f"vm-{i}", mem=256, hdd=2, backing_file=lab_testbed.image)
                              for i in (1, 2, 3)])
    topo = platform.plan(topo)

    # capacity read from the hosts themselves; the ghost is KO and holds nothing
    for node in nodes:
        host = topo.host(node)
        nproc = int(lab_testbed.ssh(node, "nproc").stdout)
        assert host.state == HOST_OK and host.capacity is not None
        assert host.capacity.threads == nproc and host.capacity.ram > 1 << 30
    assert topo.host(ghost).state == HOST_KO and topo.host(ghost).vms == []
    assert sorted(vm.host for vm in topo.vms()) == sorted([nodes[0], nodes[1], nodes[0]])
    assert "--hosts" in platform.plan_text(topo)

    for step in (platform.reserve, platform.wait_running, platform.resources, platform.deploy_hosts):
        topo = step(topo)
    assert all(vm.ip and vm.ip.startswith("10.159.24") and vm.mac for vm in topo.vms())
    assert topo.meta["service_address"] == "10.159.247.254"

    key, public = make_key(tmp_path)
    settings = RunSettings(run_id="hvhosts", public_key=public, private_key=str(key), boot_timeout=240,
                           network=vm_network(topo), disk_location="all")
    assert settings.network.mode == "kavlan"
    run = Deployment(lab_testbed, tmp_path, settings)
    try:
        topo = run.run(topo, setup_hosts, setup_service, deploy_vms)
        assert ko_vms(topo) == [], [vm.reason for vm in ko_vms(topo)]
        service = topo.meta["service_address"]
        for vm in topo.vms():
            assert vm.state == VM_OK
            # the address, the name and the DNS server all came from vm5k's DHCP
            inside = openssh_vm(lab_testbed, vm, key, "hostname; cat /etc/resolv.conf; nslookup vm-1")
            assert inside.stdout.splitlines()[0] == vm.id, inside.stderr
            assert f"nameserver {service}" in inside.stdout
            assert topo.vm("vm-1").ip in inside.stdout.split("Name:")[-1]
        for node in nodes:
            assert lab_testbed.ssh(node, ["getent", "hosts", "vm-2"]).stdout.split()[0] == topo.vm("vm-2").ip
            # -l all: every VM's disk and seed on every host (migrations need them), domains only at home
            files = lab_testbed.ssh(node, ["ls", settings.layout.disks_dir, settings.layout.seeds_dir]).stdout
            assert all(f"{vm.id}.qcow2" in files and f"{vm.id}.iso" in files for vm in topo.vms())
        leases = lab_testbed.ssh(meta(topo)["service_node"],
                                 ["cat", f"{settings.layout.dnsmasq_dir}/leases"]).stdout
        assert all(vm.mac.lower() in leases for vm in topo.vms() if vm.mac)
    finally:
        topo = run.destroy(topo)
        topo = platform.destroy(topo)
    assert "destroy_failed" not in meta(topo)  # the ghost was never reached: nothing to clean there
    for node in nodes:
        assert leftovers(lab_testbed, node, settings.layout) == ""
