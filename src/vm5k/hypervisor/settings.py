"""What the hypervisor steps need to know about a run, besides the topology: one frozen object.

Why one object: the steps (hosts, network, VMs, destroy) are called separately by the workflow, possibly
in different processes (``--resume``, ``--destroy``); everything they need to redo or undo their work is
here, and every field is a JSON value the workflow can record (`RunSettings.to_dict`).

The VM network (`VmNetwork`) has two modes, as on Grid'5000:

- ``subnet``: the platform's DHCP already knows the VMs' MAC→IP pairs (OAR /22 subnets, the testbed's
  site DHCP); vm5k's dnsmasq serves DNS only and each VM's cloud-init seed points it at that server;
- ``kavlan``: nobody else serves the VMs (an isolated KaVLAN, or the ``hosts`` platform): vm5k's dnsmasq
  serves DHCP with static leases (and hands itself out as the DNS server) as well as DNS.

>>> net = VmNetwork(mode="kavlan", cidr="10.16.0.0/18", gateway="10.16.63.254")
>>> settings = RunSettings(run_id="r1", public_key="ssh-ed25519 AAAAC3Nz vm5k", network=net)
>>> settings.layout.run_dir
'/tmp/vm5k/runs/r1'
>>> RunSettings.from_dict(settings.to_dict()) == settings
True
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vm5k.errors import UsageError
from vm5k.hypervisor.layout import DEFAULT_BASE, HostLayout
from vm5k.hypervisor.provision import check_package
from vm5k.topology import validate_id

log = logging.getLogger(__name__)

MODES = ("subnet", "kavlan")
DEFAULT_BOOT_TIMEOUT = 300.0  # seconds
DISK_LOCATIONS = ("one", "all")
ACCELERATORS = ("kvm", "tcg")
_PUBLIC_KEY = re.compile(r"(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+"
                         r"( [^\n\r]*)?")

#: (step, done, total, message): called as work advances, e.g. by a progress bar of the workflow.
StepCounter = Callable[[str, int, int, str], None]


def no_progress(step: str, done: int, total: int, message: str) -> None:
    """The default progress callback: a debug log line."""
    log.debug("%s %d/%d %s", step, done, total, message)


def check_public_key(text: str) -> str:
    """One OpenSSH public key line (any key type), stripped."""
    line = text.strip() if isinstance(text, str) else ""
    if not _PUBLIC_KEY.fullmatch(line):
        raise UsageError("the run's public key is not one OpenSSH public key line (type, base64, comment)")
    return line


@dataclass(frozen=True)
class VmNetwork:
    """The VMs' network as the platform describes it.

    mode: ``subnet`` or ``kavlan`` (see the module docstring).
    cidr: the network the VMs' addresses belong to; needed in ``kavlan`` mode (DHCP range and netmask).
    gateway: the router handed to the VMs by vm5k's DHCP (``kavlan`` mode); None gives no default route.
    service_address: an address of the VM network kept for the run's dnsmasq. It is added to the service
        node's bridge, so that two runs on the same hosts each have their own DNS (and DHCP) server; None
        means the service node's own address (then a second run on the same service node is refused).
    domain: an optional DNS suffix: ``vm-1.<domain>`` resolves too.

    Hosts and VMs must reach each other: the VM network is the hosts' own network (KaVLAN), or a network
    the hosts' router also serves (Grid'5000 subnets, the gateway given to the ``hosts`` platform).
    """

    mode: str = "subnet"
    cidr: str | None = None
    gateway: str | None = None
    service_address: str | None = None
    domain: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"VM network mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.cidr is not None:
            try:
                net = ipaddress.IPv4Network(self.cidr, strict=False)
            except ValueError:
                raise UsageError(f"invalid VM network {self.cidr!r}") from None
            object.__setattr__(self, "cidr", str(net))
        if self.mode == "kavlan" and self.cidr is None:
            raise UsageError("kavlan mode needs the VM network (cidr): vm5k's DHCP serves it")
        for name in ("gateway", "service_address"):
            value = getattr(self, name)
            if value is not None:
                try:
                    address = ipaddress.IPv4Address(value)
                except ValueError:
                    raise UsageError(f"invalid {name} {value!r}") from None
                if self.cidr is not None and address not in self.network:
                    raise UsageError(f"{name} {value} is outside the VM network {self.cidr}")
                object.__setattr__(self, name, str(address))
        if self.domain is not None:
            validate_id(self.domain, "DNS domain")

    @property
    def network(self) -> ipaddress.IPv4Network:
        if self.cidr is None:
            raise UsageError("the VM network's cidr is not known")
        return ipaddress.IPv4Network(self.cidr)

    @property
    def dhcp(self) -> bool:
        """True when vm5k's dnsmasq serves DHCP (kavlan mode)."""
        return self.mode == "kavlan"


@dataclass(frozen=True)
class RunSettings:
    """Everything the hypervisor steps need besides the topology and the SSH runner.

    run_id: the run's id (names and folders on hosts carry it).
    public_key: the run's SSH public key (one line, any type): VMs authorize it for root.
    private_key: path of the matching private key on the frontend: readiness logs into VMs with it.
    network: the VM network (`VmNetwork`).
    service_node: the host that runs the run's dnsmasq; None: the first OK host with the most cores.
    host_packages: extra Debian packages for the hosts (``--host-packages``).
    packages_upgrade: upgrade the hosts' packages (``--packages-upgrade``).
    disk_location: ``one`` (a VM's disk on its host) or ``all`` (every disk on every host, for migrations).
    clean_disks: remove the run's old VM disks before creating them (``--vm-clean-disks``).
    base: vm5k's folder on hosts (see `vm5k.hypervisor.layout`).
    bridge: the bridge VMs are plugged into (created on the host's main interface when missing).
    accelerator: force ``kvm`` or ``tcg``; None decides per host (canary boot).
    boot_timeout: seconds a VM has to answer SSH (from its start) before it is recreated, then KO.
    recreate: how many times a VM that does not come up is destroyed and created again.
    boot_parallel: VMs booting at once per host; None: the host's ``nproc``.
    tcg_tb_cache_mib: TCG translation cache per VM; None sizes it from each VM's memory
        (`vm5k.hypervisor.domain.tb_cache_for`: a quarter, 32-512 MiB; QEMU's default is 1 GiB).
    vm_user: the user readiness logs in as.
    """

    run_id: str
    public_key: str
    network: VmNetwork = field(default_factory=VmNetwork)
    private_key: str | None = None
    service_node: str | None = None
    host_packages: tuple[str, ...] = ()
    packages_upgrade: bool = False
    disk_location: str = "one"
    clean_disks: bool = False
    base: str = DEFAULT_BASE
    bridge: str = "br0"
    accelerator: str | None = None
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT
    recreate: int = 1
    boot_parallel: int | None = None
    tcg_tb_cache_mib: int | None = None
    vm_user: str = "root"

    def __post_init__(self) -> None:
        validate_id(self.run_id, "run id")
        object.__setattr__(self, "public_key", check_public_key(self.public_key))
        if isinstance(self.network, dict):
            object.__setattr__(self, "network", VmNetwork(**self.network))
        object.__setattr__(self, "host_packages", tuple(check_package(p) for p in self.host_packages))
        if self.disk_location not in DISK_LOCATIONS:
            raise UsageError(f"disk location must be one or all, not {self.disk_location!r}")
        if self.accelerator is not None and self.accelerator not in ACCELERATORS:
            raise UsageError(f"accelerator must be kvm or tcg, not {self.accelerator!r}")
        if self.service_node is not None:
            validate_id(self.service_node, "service node")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,14}", self.bridge):
            raise UsageError(f"invalid bridge name {self.bridge!r}")
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", self.vm_user):
            raise UsageError(f"invalid VM user {self.vm_user!r}")
        cache = self.tcg_tb_cache_mib
        if self.boot_timeout <= 0 or self.recreate < 0 or (cache is not None and cache < 1):
            raise UsageError("boot timeout and TCG cache must be positive, recreate at least 0")
        if self.boot_parallel is not None and self.boot_parallel < 1:
            raise UsageError("boot_parallel must be at least 1")
        HostLayout(self.run_id, self.base)  # checks the base folder

    @property
    def layout(self) -> HostLayout:
        return HostLayout(self.run_id, self.base)

    def to_dict(self) -> dict[str, Any]:
        """JSON values (for the workflow's state); `from_dict` reads them back."""
        data = asdict(self)
        data["host_packages"] = list(self.host_packages)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSettings:
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if isinstance(values.get("network"), dict):
            values["network"] = VmNetwork(**values["network"])
        if "host_packages" in values:
            values["host_packages"] = tuple(values["host_packages"])
        return cls(**values)
