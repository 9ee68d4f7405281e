"""The *network* step's hypervisor part: the run's dnsmasq on the service node, hosts resolving through it.

Called once the VMs have their IP/MAC pairs (the platform's address pool), and again whenever VMs are added
(the hosts files are rewritten and dnsmasq reloads them on SIGHUP). See `vm5k.hypervisor.dnsmasq` for the
design: one dnsmasq per run, on the run's service address, DNS in both modes, static DHCP in KaVLAN mode.

>>> # topo = await setup_service(topo, ssh, settings)   # meta["hypervisor"]["dns_server"] is set
"""

from __future__ import annotations

import ipaddress
import logging

from vm5k.errors import DeploymentError, UsageError
from vm5k.hypervisor import dnsmasq
from vm5k.hypervisor.hosts_step import choose_service_node
from vm5k.hypervisor.runtime import HostRuntime
from vm5k.hypervisor.settings import RunSettings, StepCounter, no_progress
from vm5k.hypervisor.state import mark_host_ko, meta
from vm5k.remote import Runner
from vm5k.topology import HOST_OK, Topology

log = logging.getLogger(__name__)


def listen_address(settings: RunSettings, host_address: str) -> str:
    """The run's DNS/DHCP address: the service address of the run, else the service node's own address.

    In KaVLAN mode it must belong to the VM network (dnsmasq serves DHCP on the network of that address).
    """
    network = settings.network
    address = network.service_address or host_address
    if not address:
        raise DeploymentError("the service node's address is unknown (run the hosts step first)")
    if network.dhcp and ipaddress.IPv4Address(address) not in network.network:
        raise UsageError(f"kavlan mode: the DNS/DHCP server address {address} is outside the VM network "
                         f"{network.cidr}: give the run a service address in it")
    return address


async def setup_service(topo: Topology, runner: Runner, settings: RunSettings,
                        progress: StepCounter = no_progress) -> Topology:
    """Start (or reload) the run's dnsmasq and point every OK host's resolver at it."""
    layout = settings.layout
    ok_hosts = [host for host in topo.hosts() if host.state == HOST_OK]
    if not ok_hosts:
        raise DeploymentError("no host is ready: cannot start the run's DNS server")
    state = meta(topo)
    service = choose_service_node(ok_hosts, settings.service_node or state.get("service_node"),
                                  {host.id: HostRuntime.of(host).nproc for host in ok_hosts})
    assert service is not None
    host = topo.host(service)
    runtime = HostRuntime.of(host)
    listen = listen_address(settings, runtime.address)
    extra = dnsmasq.service_interface(listen, settings.network, runtime.address, runtime.prefixlen)
    files = dnsmasq.DnsmasqFiles.of(layout)
    vms = [vm for vm in topo.vms() if vm.ip]
    progress("network", 0, 3, f"dnsmasq on {service}")
    writes = [
        (files.hosts, dnsmasq.hosts_file((vm.id, vm.ip) for vm in vms if vm.ip)),
        (f"{files.conf}.new", dnsmasq.config(files, settings.network, listen, settings.run_id, len(vms))),
    ]
    if settings.network.dhcp:
        writes.append((files.dhcp_hosts, dnsmasq.dhcp_hosts_file(
            (vm.id, vm.ip, vm.mac) for vm in vms if vm.ip and vm.mac)))
    for path, text in writes:
        result = (await runner.write_text([service], path, text, timeout=60))[0]
        if not result.ok:
            mark_host_ko(host, f"service node: cannot write {path}: {result.describe()}")
            raise DeploymentError(f"service node {service}: cannot write {path}: {result.describe()}")
    bridge = HostRuntime.of(host).bridge or settings.bridge
    start = dnsmasq.start_command(layout, bridge, listen, extra)
    started = (await runner.run([service], start, timeout=60))[0]
    if not started.ok:
        raise DeploymentError(f"service node {service}: dnsmasq: {started.describe()}")
    log.info("dnsmasq of run %s on %s (%s): %s, %d names", settings.run_id, service, listen,
             started.stdout.strip() or "ok", len(vms))
    state["service_node"] = service
    state["dns_server"] = listen
    progress("network", 1, 3, "host resolvers")
    resolvers = await runner.run([h.id for h in ok_hosts], dnsmasq.resolver_add_command(layout, listen),
                                 timeout=60)
    for result in resolvers.ko:
        log.warning("%s: cannot point its resolver at %s: %s", result.host, listen, result.describe())
    progress("network", 3, 3, f"DNS at {listen}")
    return topo
