"""The topology: sites → clusters → hosts → VMs, the one document every step reads and enriches.

The workflow builds it from the request, the platform adds hosts with their hardware, placement puts VMs
on hosts, the network step gives them IP/MAC pairs, the hypervisor step sets their states. It is saved
after each step (``topology.json``, which carries everything, so that a run can resume from it) and
written in the original vm5k's XML format (``initial_topo.xml``/``final_topo.xml``, which users can edit
and feed back with ``-i``).

This module is pure: it parses and renders text, it never opens a file.

Example::

    >>> topo = Topology()
    >>> host = topo.add_host("lyon", "taurus", Host("taurus-1.lyon.grid5000.fr",
    ...                      capacity=Capacity(ram=32 * GIB, cores=12, threads=24)))
    >>> topo.place(VM("vm-1", mem=2048), host.id)
    >>> Topology.from_xml(topo.to_xml()) == topo
    True
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import defusedxml
import defusedxml.ElementTree as SafeET

from vm5k.errors import UsageError

T = TypeVar("T")

MIB = 1024 * 1024
GIB = 1024 * MIB

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
ID_MAX_LENGTH = 253  # a DNS name; also far below any file-name limit
_STATE_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
_CPUSET_PATTERN = re.compile(r"auto|\^?\d+(-\d+)?(,\^?\d+(-\d+)?)*")
_MAC_PATTERN = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # control characters and line breaks

# States a VM goes through. Other steps may add their own (any short token is accepted).
VM_PLANNED = "planned"  # placed (or to be placed), nothing created yet
VM_OK = "OK"  # answers SSH
VM_KO = "KO"  # failed; `reason` says why
VM_STOPPED = "stopped"  # shut off on purpose (vm5k --stop): not KO, started again by --start
# States of a host.
HOST_PLANNED = "planned"  # chosen, not yet reserved or deployed
HOST_OK = "OK"
HOST_KO = "KO"

# Upper bounds that catch typos (an extra zero, a unit mistake) long before a platform would.
MAX_MEM_MIB = 16 * 1024 * 1024  # 16 TiB
MAX_N_CPU = 4096
MAX_HDD_GIB = 1024 * 1024  # 1 PiB

TOPOLOGY_FORMAT = "vm5k-topology"
TOPOLOGY_VERSION = 1


# ---------------------------------------------------------------------------------------------------
# validation helpers (shared with request.py)


def validate_id(value: object, what: str = "id") -> str:
    """Return `value` if it is a safe name for a site, cluster, host or VM, else raise UsageError.

    Names reach shells, libvirt XML, DNS and file names: only ``[A-Za-z0-9][A-Za-z0-9.-]*`` passes.
    """
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or len(value) > ID_MAX_LENGTH:
        raise UsageError(f"invalid {what} {shown(value)}: use letters, digits, '.' and '-', starting with a "
                         f"letter or digit (at most {ID_MAX_LENGTH} characters)")
    return value


def shown(value: object, limit: int = 60) -> str:
    """A value quoted for a one-line error message: control characters escaped, long values cut."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def one_line(text: str) -> str:
    """`text` with newlines and control characters replaced by spaces (for reasons and messages)."""
    return _CONTROL.sub(" ", text).strip()


def parse_int(value: object, what: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer in [minimum, maximum] from a string or int, else UsageError naming `what`."""
    if isinstance(value, bool):
        raise UsageError(f"{what} must be an integer, not {shown(value)}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d{1,18}\s*", value):
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):  # digits beyond any limit
        bound = f"at least {minimum}" if value.strip().startswith("-") else \
            f"at most {maximum}" if maximum is not None else "smaller"
        raise UsageError(f"{what} must be {bound}, not {shown(value.strip(), 30)}")
    else:
        raise UsageError(f"{what} must be an integer, not {shown(value)}")
    if number < minimum:
        raise UsageError(f"{what} must be at least {minimum}, not {number}")
    if maximum is not None and number > maximum:
        raise UsageError(f"{what} must be at most {maximum}, not {number}")
    return number


def parse_bool(value: object, what: str) -> bool:
    """A real boolean: true/false, yes/no, 1/0 (any case). ``"False"`` is false, unlike the original."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
    raise UsageError(f"{what} must be true or false, not {shown(value)}")


def _parse_text(value: object, what: str) -> str:
    """A non-empty printable string (paths, free text): no control characters, at most 4096 chars."""
    if not isinstance(value, str) or not value or _CONTROL.search(value) or len(value) > 4096:
        raise UsageError(f"invalid {what} {shown(value)}: must be a non-empty line of printable characters")
    return value


def _parse_state(value: object, what: str) -> str:
    if not isinstance(value, str) or not _STATE_PATTERN.fullmatch(value):
        raise UsageError(f"invalid {what} {shown(value)}: a short word such as OK, KO or planned")
    return value


def parse_cpuset(value: object) -> str:
    """``auto`` or a libvirt cpuset (``0``, ``0,2``, ``0-3``, ``0-7,^4``)."""
    if not isinstance(value, str) or not _CPUSET_PATTERN.fullmatch(value) or len(value) > 256:
        raise UsageError(f"invalid cpuset {shown(value)}: use auto or a list such as 0,2 or 0-3")
    return value


def parse_ip(value: object) -> str:
    """An IPv4 or IPv6 address as a string (normalised by `ipaddress`)."""
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise UsageError(f"invalid ip {shown(value)}") from None


def parse_mac(value: object) -> str:
    """A MAC address, kept as written (Grid'5000 compares them case-insensitively)."""
    if not isinstance(value, str) or not _MAC_PATTERN.fullmatch(value):
        raise UsageError(f"invalid mac {shown(value)}: use six hex pairs such as 00:16:3e:01:02:03")
    return value


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that puts ``vm-2`` before ``vm-10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


# ---------------------------------------------------------------------------------------------------
# the model


@dataclass(frozen=True, slots=True)
class Capacity:
    """Hardware of a host: RAM in bytes, cores, hardware threads, and whether it can run VMs.

    `threads` is None when unknown (then placement counts one thread per core).
    """

    ram: int
    cores: int
    threads: int | None = None
    virtual: bool = True

    def __post_init__(self) -> None:
        parse_int(self.ram, "host ram", minimum=0)
        parse_int(self.cores, "host cores", minimum=0)
        if self.threads is not None:
            parse_int(self.threads, "host threads", minimum=0)
        if not isinstance(self.virtual, bool):
            raise UsageError(f"host virtual must be a boolean, not {shown(self.virtual)}")

    @property
    def hw_threads(self) -> int:
        return self.threads if self.threads is not None else self.cores


@dataclass(slots=True)
class VMTemplate:
    """What every VM of ``-n`` gets (the seed's ``-t``), and the defaults of ``<vm>`` in a topology file."""

    mem: int = 1024  # MiB
    n_cpu: int = 1
    hdd: int = 10  # GiB
    cpuset: str = "auto"
    backing_file: str | None = None  # None: the platform's default image (or -f)
    real_file: bool = False  # True: a full copy of the backing file instead of a copy-on-write overlay

    def make_vm(self, vm_id: str) -> VM:
        return VM(validate_id(vm_id, "VM id"), mem=self.mem, n_cpu=self.n_cpu, hdd=self.hdd,
                  cpuset=self.cpuset, backing_file=self.backing_file, real_file=self.real_file)


@dataclass(slots=True)
class VM:
    """A virtual machine. `host` is the id of the host it is placed on (kept in step by `Topology`).

    `state` is ``OK`` once it answers SSH, ``KO`` (with `reason`) when it does not.

    >>> vm = VM("vm-1", mem=2048, ip="10.158.0.1", mac="00:16:3e:00:00:01")
    >>> vm.id, vm.ip, vm.mac, vm.host, vm.state
    ('vm-1', '10.158.0.1', '00:16:3e:00:00:01', None, 'planned')
    """

    id: str
    mem: int = 1024  # MiB
    n_cpu: int = 1
    hdd: int = 10  # GiB
    cpuset: str = "auto"
    backing_file: str | None = None
    real_file: bool = False
    host: str | None = None
    ip: str | None = None
    mac: str | None = None
    state: str = VM_PLANNED
    reason: str | None = None  # why it is KO, in one line
    extra: dict[str, Any] = field(default_factory=dict)  # later fields; kept through topology.json

    @property
    def template(self) -> VMTemplate:
        return VMTemplate(self.mem, self.n_cpu, self.hdd, self.cpuset, self.backing_file, self.real_file)


@dataclass(slots=True)
class Host:
    """A physical machine (hypervisor). `capacity` is None until the platform tells its hardware.

    >>> host = Host("paradoxe-1.rennes.grid5000.fr", vms=[VM("vm-1")])
    >>> host.id, [vm.id for vm in host.vms], host.state
    ('paradoxe-1.rennes.grid5000.fr', ['vm-1'], 'planned')
    """

    id: str
    capacity: Capacity | None = None
    state: str = HOST_PLANNED
    reason: str | None = None
    vms: list[VM] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Cluster:
    id: str
    hosts: list[Host] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Site:
    id: str
    clusters: list[Cluster] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Topology:
    """Sites → clusters → hosts → VMs, plus VMs not placed yet and the run's metadata.

    `meta` holds run-level facts as JSON values (run id, platform, API URL, address pool, jobs, seed...);
    it is saved in topology.json, not in the XML.
    """

    sites: list[Site] = field(default_factory=list)
    unplaced: list[VM] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    # -- building ------------------------------------------------------------------------------------

    def site(self, site_id: str) -> Site:
        """The site with this id, created (at the end) when missing."""
        for site in self.sites:
            if site.id == site_id:
                return site
        site = Site(validate_id(site_id, "site"))
        self.sites.append(site)
        return site

    def cluster(self, site_id: str, cluster_id: str) -> Cluster:
        """The cluster with this id in that site, created when missing."""
        site = self.site(site_id)
        for cluster in site.clusters:
            if cluster.id == cluster_id:
                return cluster
        cluster = Cluster(validate_id(cluster_id, "cluster"))
        site.clusters.append(cluster)
        return cluster

    def add_host(self, site_id: str, cluster_id: str, host: Host) -> Host:
        """Add `host` under site/cluster; UsageError if a host with that id already exists."""
        validate_id(host.id, "host")
        if self.find_host(host.id) is not None:
            raise UsageError(f"host {host.id} appears twice")
        self.cluster(site_id, cluster_id).hosts.append(host)
        for vm in host.vms:
            vm.host = host.id
        return host

    def add_vm(self, vm: VM, host_id: str | None = None) -> VM:
        """Add a new VM, on `host_id` or unplaced; UsageError if its id is taken."""
        validate_id(vm.id, "VM id")
        if self.find_vm(vm.id) is not None:
            raise UsageError(f"VM id {vm.id} appears twice")
        vm.host = None
        self.unplaced.append(vm)
        if host_id is not None:
            self.place(vm, host_id)
        return vm

    def place(self, vm: VM, host_id: str) -> None:
        """Put `vm` on the host `host_id`, taking it from where it was (or adding it if new)."""
        host = self.host(host_id)
        if self.find_vm(vm.id) is None:
            self.add_vm(vm)
        self._detach(vm)
        vm.host = host.id
        host.vms.append(vm)

    def unplace(self, vm: VM) -> None:
        """Take `vm` off its host; it goes back to the unplaced VMs."""
        self._detach(vm)
        vm.host = None
        self.unplaced.append(vm)

    def assign(self, assignment: Mapping[str, str]) -> None:
        """Move many VMs at once: `assignment` maps VM ids to host ids (e.g. a placement's result).

        Linear in the size of the topology, where calling `place` for each VM would be quadratic.
        """
        hosts = {host.id: host for host in self.hosts()}
        vms = {vm.id: vm for vm in self.vms()}
        for vm_id, host_id in assignment.items():
            if vm_id not in vms:
                raise KeyError(vm_id)
            if host_id not in hosts:
                raise KeyError(host_id)
        moving = set(assignment)
        for host in hosts.values():
            host.vms = [vm for vm in host.vms if vm.id not in moving]
        self.unplaced = [vm for vm in self.unplaced if vm.id not in moving]
        for vm_id, host_id in assignment.items():
            vm = vms[vm_id]
            vm.host = host_id
            hosts[host_id].vms.append(vm)

    def remove_host(self, host_id: str) -> list[VM]:
        """Remove a host (e.g. it failed); its VMs become unplaced and are returned."""
        for site in self.sites:
            for cluster in site.clusters:
                for index, host in enumerate(cluster.hosts):
                    if host.id == host_id:
                        del cluster.hosts[index]
                        for vm in host.vms:
                            vm.host = None
                        self.unplaced.extend(host.vms)
                        moved, host.vms = host.vms, []
                        return moved
        raise KeyError(host_id)

    def _detach(self, vm: VM) -> None:
        if vm.host is None:
            for index, other in enumerate(self.unplaced):
                if other is vm:
                    del self.unplaced[index]
                    return
            return
        host = self.host(vm.host)
        for index, other in enumerate(host.vms):
            if other is vm:
                del host.vms[index]
                return

    def copy(self) -> Topology:
        return copy.deepcopy(self)

    # -- reading -------------------------------------------------------------------------------------

    def hosts(self) -> list[Host]:
        """Every host, in document order (site, cluster, host)."""
        return [host for site in self.sites for cluster in site.clusters for host in cluster.hosts]

    def locations(self) -> Iterator[tuple[Site, Cluster, Host]]:
        for site in self.sites:
            for cluster in site.clusters:
                for host in cluster.hosts:
                    yield site, cluster, host

    def vms(self) -> list[VM]:
        """Every VM: placed ones in document order, then the unplaced ones."""
        placed = [vm for host in self.hosts() for vm in host.vms]
        return placed + list(self.unplaced)

    def find_host(self, host_id: str) -> Host | None:
        return next((host for host in self.hosts() if host.id == host_id), None)

    def host(self, host_id: str) -> Host:
        host = self.find_host(host_id)
        if host is None:
            raise KeyError(host_id)
        return host

    def find_vm(self, vm_id: str) -> VM | None:
        return next((vm for vm in self.vms() if vm.id == vm_id), None)

    def vm(self, vm_id: str) -> VM:
        vm = self.find_vm(vm_id)
        if vm is None:
            raise KeyError(vm_id)
        return vm

    def host_index(self) -> dict[str, tuple[Site, Cluster, Host]]:
        """Host id → (site, cluster, host), for callers that look many hosts up."""
        return {host.id: (site, cluster, host) for site, cluster, host in self.locations()}

    def validate(self) -> None:
        """Check ids (syntax and uniqueness) and that every VM's `host` matches where it sits."""
        seen_sites: set[str] = set()
        seen_hosts: set[str] = set()
        seen_vms: set[str] = set()
        for site in self.sites:
            _unique(validate_id(site.id, "site"), seen_sites, "site")
            seen_clusters: set[str] = set()
            for cluster in site.clusters:
                _unique(validate_id(cluster.id, "cluster"), seen_clusters, f"cluster in site {site.id}:")
                for host in cluster.hosts:
                    _unique(validate_id(host.id, "host"), seen_hosts, "host")
                    for vm in host.vms:
                        _unique(validate_id(vm.id, "VM id"), seen_vms, "VM id")
                        if vm.host != host.id:
                            raise UsageError(f"VM {vm.id} sits on {host.id} but says it is on {vm.host}")
        for vm in self.unplaced:
            _unique(validate_id(vm.id, "VM id"), seen_vms, "VM id")
            if vm.host is not None:
                raise UsageError(f"VM {vm.id} is unplaced but says it is on {vm.host}")

    def reset_run_state(self) -> None:
        """Forget what a previous run learnt (IPs, MACs, states, reasons), keeping hosts and placement.

        Used on ``-i`` files: a re-fed final_topo.xml describes a past run, not this one.
        """
        for host in self.hosts():
            host.state, host.reason = HOST_PLANNED, None
        for vm in self.vms():
            vm.ip = vm.mac = vm.reason = None
            vm.state = VM_PLANNED

    # -- formats -------------------------------------------------------------------------------------

    def to_xml(self) -> str:
        return topology_to_xml(self)

    @classmethod
    def from_xml(cls, data: str | bytes, defaults: VMTemplate | None = None) -> Topology:
        return topology_from_xml(data, defaults)

    def to_dict(self) -> dict[str, Any]:
        return topology_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        return topology_from_dict(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Topology:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as error:
            raise UsageError(f"topology.json is not valid JSON: {one_line(str(error))}") from None
        return topology_from_dict(data)


def _unique(value: str, seen: set[str], what: str) -> None:
    if value in seen:
        raise UsageError(f"{what} {value} appears twice")
    seen.add(value)


# ---------------------------------------------------------------------------------------------------
# VM attributes (shared by the XML reader, the -t template and topology.json)

_VM_XML_ATTRIBUTES = ("id", "mem", "n_cpu", "cpu", "hdd", "cpuset", "backing_file", "real_file",
                      "ip", "mac", "state", "reason")
TEMPLATE_ATTRIBUTES = ("mem", "n_cpu", "cpu", "hdd", "cpuset", "backing_file", "real_file")


def template_from_attributes(attrs: Mapping[str, str], defaults: VMTemplate | None = None,
                             where: str = "VM template") -> VMTemplate:
    """A VMTemplate from the original vm5k's ``<vm>`` attributes (`cpu` aliases `n_cpu`); missing ones from
    `defaults`."""
    base = defaults or VMTemplate()
    if "cpu" in attrs and "n_cpu" in attrs and attrs["cpu"] != attrs["n_cpu"]:
        raise UsageError(f"{where}: cpu and n_cpu differ ({attrs['cpu']} and {attrs['n_cpu']}); give one")
    attrs = dict(attrs)
    if "cpu" in attrs:
        attrs.setdefault("n_cpu", attrs["cpu"])

    def get(name: str, parse: Callable[[str], T], default: T) -> T:
        return parse(attrs[name]) if name in attrs else default

    return VMTemplate(
        mem=get("mem", lambda v: parse_int(v, f"{where}: mem (MiB)", maximum=MAX_MEM_MIB), base.mem),
        n_cpu=get("n_cpu", lambda v: parse_int(v, f"{where}: n_cpu", maximum=MAX_N_CPU), base.n_cpu),
        hdd=get("hdd", lambda v: parse_int(v, f"{where}: hdd (GiB)", maximum=MAX_HDD_GIB), base.hdd),
        cpuset=get("cpuset", parse_cpuset, base.cpuset),
        backing_file=get("backing_file", lambda v: _parse_text(v, f"{where}: backing_file"),
                         base.backing_file),
        real_file=get("real_file", lambda v: parse_bool(v, f"{where}: real_file"), base.real_file),
    )


def _vm_from_attributes(attrs: Mapping[str, str], defaults: VMTemplate | None) -> VM:
    if "id" not in attrs:
        raise UsageError("a <vm> has no id attribute")
    vm_id = validate_id(attrs["id"], "VM id")
    where = f"VM {vm_id}"
    template = template_from_attributes(attrs, defaults, where)
    vm = template.make_vm(vm_id)
    # the original's example files carry ip="X.X.X.X" where no address is known yet
    known_ip = "ip" in attrs and attrs["ip"].strip().upper() not in ("", "X.X.X.X")
    vm.ip = parse_ip(attrs["ip"]) if known_ip else None
    vm.mac = parse_mac(attrs["mac"]) if "mac" in attrs else None
    vm.state = _parse_state(attrs["state"], f"{where}: state") if "state" in attrs else VM_PLANNED
    vm.reason = _parse_text(attrs["reason"], f"{where}: reason") if "reason" in attrs else None
    return vm


def _vm_attributes(vm: VM) -> dict[str, str]:
    attrs = {"id": vm.id, "mem": str(vm.mem), "n_cpu": str(vm.n_cpu), "hdd": str(vm.hdd), "cpuset": vm.cpuset}
    if vm.backing_file is not None:
        attrs["backing_file"] = vm.backing_file
    attrs["real_file"] = "true" if vm.real_file else "false"
    for name in ("ip", "mac", "state", "reason"):
        value = getattr(vm, name)
        if value is not None:
            attrs[name] = value
    return attrs


# ---------------------------------------------------------------------------------------------------
# the original vm5k's XML

_HOST_XML_ATTRIBUTES = ("id", "ram", "cores", "threads", "virtual", "state", "reason",
                        "cpu", "mem")  # cpu/mem: written by the original vm5k, accepted and ignored


def parse_xml_element(data: str | bytes, what: str) -> ET.Element:
    """Parse untrusted XML with defusedxml (no DTD, no entities); one-line UsageError on any problem."""
    try:
        return SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as error:
        raise UsageError(f"{what}: refused: {type(error).__name__} "
                         "(DTDs and entities are not allowed)") from None
    except (ET.ParseError, ValueError, UnicodeError) as error:
        raise UsageError(f"{what} is not valid XML: {one_line(str(error))}") from None


def _check_element(element: ET.Element, tag: str, allowed: tuple[str, ...], where: str) -> dict[str, str]:
    if element.tag != tag:
        raise UsageError(f"{where}: unexpected element <{shown(element.tag, 40)[1:-1]}> (expected <{tag}>)")
    unknown = sorted(set(element.attrib) - set(allowed))
    if unknown:
        raise UsageError(f"{where}: <{tag}> has unknown attribute {shown(unknown[0], 40)} "
                         f"(known: {', '.join(a for a in allowed)})")
    if (element.text or "").strip() or (element.tail or "").strip():
        raise UsageError(f"{where}: unexpected text near <{tag}>")
    return dict(element.attrib)


def _require_id(attrs: Mapping[str, str], tag: str, where: str) -> str:
    if "id" not in attrs:
        raise UsageError(f"{where}: a <{tag}> has no id attribute")
    return validate_id(attrs["id"], tag)


def _capacity_from_attributes(attrs: Mapping[str, str], host_id: str) -> Capacity | None:
    has = [name for name in ("ram", "cores", "threads", "virtual") if name in attrs]
    if not has:
        return None
    if "ram" not in attrs or "cores" not in attrs:
        raise UsageError(f"host {host_id}: give both ram (bytes) and cores, or neither")
    return Capacity(
        ram=parse_int(attrs["ram"], f"host {host_id}: ram (bytes)", minimum=0),
        cores=parse_int(attrs["cores"], f"host {host_id}: cores", minimum=0),
        threads=_optional(attrs, "threads", lambda v: parse_int(v, f"host {host_id}: threads", minimum=0)),
        virtual=parse_bool(attrs.get("virtual", True), f"host {host_id}: virtual"),
    )


def topology_from_xml(data: str | bytes, defaults: VMTemplate | None = None) -> Topology:
    """Read the original vm5k's XML topology (``<vm5k><site id><cluster id><host id><vm .../>``).

    The root element's name is free (the original's examples use ``<deployment>``). `<vm>` directly under
    the root are VMs not placed yet. Missing VM attributes come from `defaults` (the ``-t`` template).
    Unknown elements or attributes are errors: a typo must not silently fall back to a default.
    """
    root = parse_xml_element(data, "topology file")
    topo = Topology()
    for site_el in root:
        if site_el.tag == "vm":
            vm_attrs = _check_element(site_el, "vm", _VM_XML_ATTRIBUTES, "topology")
            topo.unplaced.append(_vm_from_attributes(vm_attrs, defaults))
            continue
        site_attrs = _check_element(site_el, "site", ("id",), "topology")
        site_id = _require_id(site_attrs, "site", "topology")
        if any(site.id == site_id for site in topo.sites):
            raise UsageError(f"site {site_id} appears twice")
        site = topo.site(site_id)
        for cluster_el in site_el:
            cluster_attrs = _check_element(cluster_el, "cluster", ("id",), f"site {site_id}")
            cluster_id = _require_id(cluster_attrs, "cluster", f"site {site_id}")
            if any(cluster.id == cluster_id for cluster in site.clusters):
                raise UsageError(f"cluster {cluster_id} appears twice in site {site_id}")
            cluster = topo.cluster(site_id, cluster_id)
            for host_el in cluster_el:
                host_attrs = _check_element(host_el, "host", _HOST_XML_ATTRIBUTES, f"cluster {cluster_id}")
                host_id = _require_id(host_attrs, "host", f"cluster {cluster_id}")
                host = Host(
                    host_id,
                    capacity=_capacity_from_attributes(host_attrs, host_id),
                    state=(_parse_state(host_attrs["state"], f"host {host_id}: state")
                           if "state" in host_attrs else HOST_PLANNED),
                    reason=(_parse_text(host_attrs["reason"], f"host {host_id}: reason")
                            if "reason" in host_attrs else None),
                )
                cluster.hosts.append(host)
                for vm_el in host_el:
                    vm_attrs = _check_element(vm_el, "vm", _VM_XML_ATTRIBUTES, f"host {host_id}")
                    _attach(host, _vm_from_attributes(vm_attrs, defaults))
    topo.validate()
    return topo


def _attach(host: Host, vm: VM) -> VM:
    """Readers build hosts directly (uniqueness is checked once, by `Topology.validate`)."""
    vm.host = host.id
    host.vms.append(vm)
    return vm


def topology_to_xml(topo: Topology) -> str:
    """Write the original vm5k's XML format, indented by two spaces, attributes in a fixed order.

    Everything but `meta` and `extra` is written, so `topology_from_xml` gives the same topology back.
    """
    root = ET.Element("vm5k")
    for site in topo.sites:
        site_el = ET.SubElement(root, "site", {"id": site.id})
        for cluster in site.clusters:
            cluster_el = ET.SubElement(site_el, "cluster", {"id": cluster.id})
            for host in cluster.hosts:
                attrs = {"id": host.id}
                if host.capacity is not None:
                    attrs["ram"] = str(host.capacity.ram)
                    attrs["cores"] = str(host.capacity.cores)
                    if host.capacity.threads is not None:
                        attrs["threads"] = str(host.capacity.threads)
                    attrs["virtual"] = "true" if host.capacity.virtual else "false"
                attrs["state"] = host.state
                if host.reason is not None:
                    attrs["reason"] = host.reason
                host_el = ET.SubElement(cluster_el, "host", attrs)
                for vm in host.vms:
                    ET.SubElement(host_el, "vm", _vm_attributes(vm))
    for vm in topo.unplaced:
        ET.SubElement(root, "vm", _vm_attributes(vm))
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


# ---------------------------------------------------------------------------------------------------
# topology.json
#
# {"format": "vm5k-topology", "version": 1, "meta": {...},
#  "sites": [{"id", "clusters": [{"id", "hosts": [{"id", "capacity": {...}|null, "state", "reason",
#                                                  "vms": [{vm fields}]}]}]}],
#  "unplaced": [{vm fields}]}
#
# Readers take every field with a default, so files written before a field existed still load; keys they
# do not know are kept in `extra` (or `meta` at the top) and written back, so an older vm5k resuming a
# newer file loses nothing. A higher `version` means an incompatible change and is refused.

_VM_JSON_FIELDS = ("id", "mem", "n_cpu", "hdd", "cpuset", "backing_file", "real_file", "ip", "mac",
                   "state", "reason")


def _vm_to_dict(vm: VM) -> dict[str, Any]:
    data = {name: getattr(vm, name) for name in _VM_JSON_FIELDS}
    data.update(vm.extra)
    return data


def _vm_from_dict(data: Any) -> VM:
    obj = _object(data, "a VM")
    vm_id = validate_id(obj.get("id"), "VM id")
    where = f"VM {vm_id}"
    return VM(
        vm_id,
        mem=parse_int(obj.get("mem", 1024), f"{where}: mem", maximum=MAX_MEM_MIB),
        n_cpu=parse_int(obj.get("n_cpu", 1), f"{where}: n_cpu", maximum=MAX_N_CPU),
        hdd=parse_int(obj.get("hdd", 10), f"{where}: hdd", maximum=MAX_HDD_GIB),
        cpuset=parse_cpuset(obj.get("cpuset", "auto")),
        backing_file=_optional(obj, "backing_file", lambda v: _parse_text(v, f"{where}: backing_file")),
        real_file=parse_bool(obj.get("real_file", False), f"{where}: real_file"),
        ip=_optional(obj, "ip", parse_ip),
        mac=_optional(obj, "mac", parse_mac),
        state=_parse_state(obj.get("state", VM_PLANNED), f"{where}: state"),
        reason=_optional(obj, "reason", lambda v: _parse_text(v, f"{where}: reason")),
        extra=_extra(obj, _VM_JSON_FIELDS),
    )


def _capacity_to_dict(capacity: Capacity | None) -> dict[str, Any] | None:
    if capacity is None:
        return None
    return {"ram": capacity.ram, "cores": capacity.cores, "threads": capacity.threads,
            "virtual": capacity.virtual}


def _capacity_from_dict(data: Any, host_id: str) -> Capacity | None:
    if data is None:
        return None
    obj = _object(data, f"host {host_id}: capacity")
    threads = obj.get("threads")
    return Capacity(
        ram=parse_int(obj.get("ram"), f"host {host_id}: ram", minimum=0),
        cores=parse_int(obj.get("cores"), f"host {host_id}: cores", minimum=0),
        threads=None if threads is None else parse_int(threads, f"host {host_id}: threads", minimum=0),
        virtual=parse_bool(obj.get("virtual", True), f"host {host_id}: virtual"),
    )


def topology_to_dict(topo: Topology) -> dict[str, Any]:
    """The whole topology as JSON values (see the format above)."""
    return {
        "format": TOPOLOGY_FORMAT,
        "version": TOPOLOGY_VERSION,
        "meta": copy.deepcopy(topo.meta),
        "sites": [
            {"id": site.id, **site.extra, "clusters": [
                {"id": cluster.id, **cluster.extra, "hosts": [
                    {"id": host.id, "capacity": _capacity_to_dict(host.capacity), "state": host.state,
                     "reason": host.reason, **host.extra, "vms": [_vm_to_dict(vm) for vm in host.vms]}
                    for host in cluster.hosts]}
                for cluster in site.clusters]}
            for site in topo.sites],
        "unplaced": [_vm_to_dict(vm) for vm in topo.unplaced],
    }


def topology_from_dict(data: Any) -> Topology:
    """Read `topology_to_dict`'s output (also from older files missing later fields)."""
    obj = _object(data, "topology.json")
    if obj.get("format", TOPOLOGY_FORMAT) != TOPOLOGY_FORMAT:
        raise UsageError(f"topology.json: format is {shown(obj.get('format'))}, expected {TOPOLOGY_FORMAT}")
    version = obj.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise UsageError(f"topology.json: invalid version {shown(version)}")
    if version > TOPOLOGY_VERSION:
        raise UsageError(f"topology.json: version {version} is newer than this vm5k reads "
                         f"({TOPOLOGY_VERSION}): upgrade vm5k")
    meta = _object(obj.get("meta", {}), "topology.json: meta")
    meta = {**meta, **_extra(obj, ("format", "version", "meta", "sites", "unplaced"))}
    topo = Topology(meta=copy.deepcopy(meta))
    for site_data in _list(obj.get("sites", []), "sites"):
        site_obj = _object(site_data, "a site")
        site_id = validate_id(site_obj.get("id"), "site")
        if any(site.id == site_id for site in topo.sites):
            raise UsageError(f"site {site_id} appears twice")
        site = topo.site(site_id)
        site.extra = _extra(site_obj, ("id", "clusters"))
        for cluster_data in _list(site_obj.get("clusters", []), f"site {site_id}: clusters"):
            cluster_obj = _object(cluster_data, "a cluster")
            cluster_id = validate_id(cluster_obj.get("id"), "cluster")
            if any(cluster.id == cluster_id for cluster in site.clusters):
                raise UsageError(f"cluster {cluster_id} appears twice in site {site_id}")
            cluster = topo.cluster(site_id, cluster_id)
            cluster.extra = _extra(cluster_obj, ("id", "hosts"))
            for host_data in _list(cluster_obj.get("hosts", []), f"cluster {cluster_id}: hosts"):
                host_obj = _object(host_data, "a host")
                host_id = validate_id(host_obj.get("id"), "host")
                host = Host(
                    host_id,
                    capacity=_capacity_from_dict(host_obj.get("capacity"), host_id),
                    state=_parse_state(host_obj.get("state", HOST_PLANNED), f"host {host_id}: state"),
                    reason=_optional(host_obj, "reason", _reason_parser(host_id)),
                    extra=_extra(host_obj, ("id", "capacity", "state", "reason", "vms")),
                )
                cluster.hosts.append(host)
                for vm_data in _list(host_obj.get("vms", []), f"host {host_id}: vms"):
                    _attach(host, _vm_from_dict(vm_data))
    for vm_data in _list(obj.get("unplaced", []), "unplaced"):
        topo.unplaced.append(_vm_from_dict(vm_data))
    topo.validate()
    return topo


def _reason_parser(host_id: str) -> Any:
    return lambda value: _parse_text(value, f"host {host_id}: reason")


def _object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise UsageError(f"{what} must be a JSON object")
    return data


def _list(data: Any, what: str) -> list[Any]:
    if not isinstance(data, list):
        raise UsageError(f"topology.json: {what} must be a JSON list")
    return data


def _optional(obj: Mapping[str, Any], name: str, parse: Callable[[Any], T]) -> T | None:
    value = obj.get(name)
    return None if value is None else parse(value)


def _extra(obj: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {key: copy.deepcopy(value) for key, value in obj.items() if key not in known}


__all__ = [
    "GIB", "HOST_KO", "HOST_OK", "HOST_PLANNED", "ID_PATTERN", "MIB", "VM", "VM_KO", "VM_OK", "VM_PLANNED",
    "Capacity", "Cluster", "Host", "Site", "Topology", "VMTemplate", "natural_key", "one_line",
    "parse_bool", "parse_int", "parse_xml_element", "template_from_attributes",
    "topology_from_dict", "topology_from_xml", "topology_to_dict", "topology_to_xml", "validate_id",
]
