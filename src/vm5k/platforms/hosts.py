"""The ``hosts`` platform: SSH hosts you already have (``vm5k --hosts h1,h2`` or a file), nothing to reserve.

Same face as every platform (`vm5k.platforms.Platform`): ``plan`` puts the hosts in the topology with their
capacity, read from the hosts themselves over SSH (``/proc/meminfo`` and the memory cgroup's limit,
``nproc``, the CPU topology, ``/dev/kvm``), and places the VMs; ``resources`` gives the VMs their IP/MAC pairs
from the VM network you describe; ``reserve``, ``wait_running`` and ``deploy_hosts`` have nothing to do (the
hosts are yours, installed as they are); ``destroy`` gives nothing back (the VMs and files of the run are the
hypervisor's destroy).

The VM network (`HostsNetwork`) is yours to describe, as on a KaVLAN: the network the VMs sit on (``cidr``),
its router (``gateway``, optional), the block VMs take addresses from (``block``, default the whole network)
and the MAC rule (``grid5000``: ``00:16:3E`` + the address's last three octets, or ``local``: ``02:56`` + its
four octets). vm5k's dnsmasq serves the pairs by DHCP from the run's service address, the last address of
the block (kept out of the VMs' pairs). Hosts and VMs must reach each other: the VM network is the hosts'
own network, or one their router also serves.

What it records (platform-neutral keys, read by the workflow): ``meta["address_pool"]`` (one range whose
``dhcp`` is ``vm5k``), ``meta["service_address"]``, and ``meta["hosts"]`` (the network as given).

>>> net = HostsNetwork(cidr="10.156.0.0/14", gateway="10.159.255.254", block="10.156.8.0/22")
>>> net.service_address, net.address_range("hosts").pairs().__next__()
('10.156.11.254', ('10.156.8.1', '00:16:3E:9C:08:01'))
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vm5k.addresses import KAVLAN, POOL_KEY, SERVICE_KEY, SUBNET, AddressPool, AddressRange, assign
from vm5k.errors import DeploymentError, UsageError
from vm5k.hypervisor.facts import facts_command, parse_facts
from vm5k.placement import PlacementPolicy
from vm5k.platforms import Access, Platform, ProgressCallback, ProgressReport, Services
from vm5k.remote import SshRunner, SshSettings, SyncRunner
from vm5k.render import plan_text
from vm5k.topology import HOST_KO, HOST_OK, Host, Topology, validate_id

if TYPE_CHECKING:
    from vm5k.request import Request

log = logging.getLogger(__name__)

META_KEY = "hosts"
MAC_RULES = ("grid5000", "local")

@dataclass(frozen=True)
class HostsNetwork:
    """The VMs' network on the ``hosts`` platform (see the module docstring)."""

    cidr: str
    gateway: str | None = None
    block: str | None = None
    mac: str = "grid5000"
    domain: str | None = None

    def __post_init__(self) -> None:
        try:
            network = ipaddress.IPv4Network(self.cidr, strict=False)
            block = ipaddress.IPv4Network(self.block or self.cidr, strict=False)
        except ValueError as error:
            raise UsageError(f"VM network: {error}") from None
        if not block.subnet_of(network):
            raise UsageError(f"VM network: the block {block} is not inside {network}")
        if block.num_addresses < 4:
            raise UsageError(f"VM network: the block {block} is too small")
        object.__setattr__(self, "cidr", str(network))
        object.__setattr__(self, "block", str(block))
        if self.gateway is not None:
            try:
                gateway = ipaddress.IPv4Address(self.gateway)
            except ValueError:
                raise UsageError(f"VM network: invalid gateway {self.gateway!r}") from None
            if gateway not in network:
                raise UsageError(f"VM network: the gateway {gateway} is outside {network}")
        if self.mac not in MAC_RULES:
            raise UsageError(f"VM network: the MAC rule is one of {', '.join(MAC_RULES)}, not {self.mac!r}")
        if self.domain is not None:
            validate_id(self.domain, "DNS domain")

    @property
    def service_address(self) -> str:
        """The run's DNS/DHCP address: the last usable address of the block (not the gateway)."""
        block = ipaddress.IPv4Network(str(self.block))
        last = block.broadcast_address - 1
        if str(last) == self.gateway:
            last -= 1
        return str(last)

    def address_range(self, site: str) -> AddressRange:
        return AddressRange(SUBNET if self.mac == "grid5000" else KAVLAN, (site,), (str(self.block),),
                            self.cidr, self.gateway, None, "vm5k")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HostsPlatform:
    """SSH hosts you already have (see the module docstring).

    hosts: their names as SSH reaches them (through ``ssh`` settings' config files);
    network: the VM network; site/cluster: where they go in the topology (``hosts``/``hosts`` by default).
    """

    hosts: Sequence[str]
    network: HostsNetwork
    ssh: SshSettings = field(default_factory=SshSettings)
    progress: ProgressCallback | None = None
    site: str = "hosts"
    cluster: str = "hosts"
    placement: PlacementPolicy = field(default_factory=PlacementPolicy)
    name: str = "hosts"

    def __post_init__(self) -> None:
        if not self.hosts:
            raise UsageError("the hosts platform needs at least one host")
        for host in self.hosts:
            validate_id(host, "host")
        validate_id(self.site, "site")
        validate_id(self.cluster, "cluster")

    def _say(self, step: str, message: str) -> None:
        log.info("%s: %s", step, message)
        if self.progress is not None:
            self.progress(ProgressReport(step, message))

    # -- the platform's face --------------------------------------------------------------------------
    def plan(self, topology: Topology, request: Request | None = None) -> Topology:
        """The hosts with their capacity (read over SSH), and the VMs placed on the reachable ones."""
        topo = topology.copy()
        if request is not None:
            self.placement = request.placement
        for name in self.hosts:
            if topo.find_host(name) is None:
                topo.add_host(self.site, self.cluster, Host(name))
        self._read_capacity(topo, [host for host in topo.hosts() if host.capacity is None])
        usable = [host for host in topo.hosts() if host.state != HOST_KO]
        if topo.unplaced:
            placement = self.placement.place(topo.unplaced, usable)
            topo.assign(placement.assignment)
            for warning in placement.warnings:
                log.warning("%s", warning)
        topo.meta[META_KEY] = {"hosts": list(self.hosts), "network": self.network.to_dict(),
                               "site": self.site, "cluster": self.cluster}
        self._say("plan", f"{len(usable)} of {len(self.hosts)} hosts reachable, {len(topo.vms())} VMs placed")
        return topo

    def plan_text(self, topology: Topology) -> str:
        return plan_text(topology, source="--hosts")

    def reserve(self, topology: Topology) -> Topology:
        """Nothing to reserve: the hosts are yours."""
        return topology.copy()

    def wait_running(self, topology: Topology) -> Topology:
        return topology.copy()

    def resources(self, topology: Topology) -> Topology:
        """Reachable hosts OK, the address pool recorded, every placed VM with its IP/MAC pair."""
        topo = topology.copy()
        self._read_capacity(topo, [host for host in topo.hosts() if host.state != HOST_OK])
        pool = AddressPool((self.network.address_range(self.site),))
        service = self.network.service_address
        assign(topo, pool)
        if any(vm.ip == service for vm in topo.vms()):
            raise DeploymentError(f"the block {self.network.block} is too small: the VMs would take the "
                                  f"run's DNS/DHCP address {service}")
        topo.meta[POOL_KEY] = pool.to_dict()
        topo.meta[SERVICE_KEY] = service
        self._say("resources", f"{sum(1 for h in topo.hosts() if h.state == HOST_OK)} hosts, "
                               f"VMs on {self.network.block} (DNS/DHCP at {service})")
        return topo

    def deploy_hosts(self, topology: Topology) -> Topology:
        """Nothing to install: the hosts are used as they are (the hypervisor step adds what is missing)."""
        return topology.copy()

    def reservation_over(self, topology: Topology) -> str | None:
        """Never: the hosts are the user's own, with no reservation that could end."""
        return None

    def destroy(self, topology: Topology) -> Topology:
        """Nothing was reserved, nothing to give back."""
        return topology.copy()

    # -- internals ------------------------------------------------------------------------------------
    def _read_capacity(self, topo: Topology, hosts: list[Host]) -> None:
        if not hosts:
            return
        with SyncRunner(lambda: SshRunner(self.ssh)) as ssh:
            results = ssh.run([host.id for host in hosts], facts_command(), timeout=60)
        for result in results:
            host = topo.host(result.host)
            if result.ok:
                host.capacity = parse_facts(result.stdout).capacity
                host.state, host.reason = HOST_OK, None
            else:
                host.state = HOST_KO
                host.reason = f"unreachable: {result.describe().removeprefix(result.host + ': ')}"
                log.warning("%s", host.reason)


class HostsKind:
    """`vm5k.platforms.PlatformKind` of SSH hosts you already have (``--hosts``, ``--vm-network``)."""

    name = "hosts"

    def applies(self, request: Request) -> bool:
        return bool(request.hosts)

    def validate(self, request: Request) -> None:
        """The VM network's addresses (a bad netmask, a block outside the network) are input too."""
        HostsNetwork(**(request.vm_network or {}))

    def prepare(self, request: Request) -> Access:
        log.info("platform: hosts (%s)", ", ".join(request.hosts))
        return Access(ssh_config=request.ssh_config, hosts=tuple(request.hosts),
                      vm_network=request.vm_network)

    def reach_again(self, access: Access, api: str | None, ssh_config: str | None) -> Access:
        return replace(access, ssh_config=ssh_config or access.ssh_config)

    def build(self, access: Access, services: Services) -> Platform:
        return HostsPlatform(hosts=access.hosts, network=HostsNetwork(**(access.vm_network or {})),
                             ssh=services.ssh or SshSettings(), progress=services.progress,
                             placement=services.placement or PlacementPolicy())

    def hardware(self, request: Request) -> list[Host]:
        raise UsageError("vm5k_max_vms cannot read the hosts of the hosts platform: give -i with their "
                         "capacity")


KIND = HostsKind()
