"""What the user asked for: the grammars of ``-r``, ``-b``, ``-j``, ``-w``, ``-t``, ``--hosts`` and
topology files, checked and gathered into one `Request` that the workflow runs.

Pure: the command line reads files and the clock and passes their content in; nothing here does I/O.
Every malformed input raises `UsageError` with a one-line message that names the problem.

    >>> parse_resources("taurus:4,nancy:10")
    (Element(name='taurus', count=4), Element(name='nancy', count=10))
    >>> parse_jobs("grenoble:1657430,toulouse:415866")
    (JobRef(site='grenoble', id=1657430), JobRef(site='toulouse', id=415866))
    >>> format_walltime(parse_walltime("2:00"))
    '2:00:00'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vm5k.errors import UsageError
from vm5k.hypervisor.provision import is_package_name
from vm5k.placement import DEFAULT_DISTRIBUTION, Limits, PlacementPolicy, normalize_distribution
from vm5k.topology import (
    TEMPLATE_ATTRIBUTES,
    Topology,
    VMTemplate,
    parse_int,
    parse_xml_element,
    shown,
    template_from_attributes,
    validate_id,
)

GRID5000 = "grid5000"  # the whole of Grid'5000, in -r
MAX_VMS = 100_000  # far above any deployment, low enough to catch a typo before building the VM list
MAX_NODES = 100_000
DEFAULT_N_VM = 30  # the original's defaults when neither -n nor -i / neither -w nor -j is given
DEFAULT_WALLTIME = 3600
ACTIONS = ("deploy", "resume", "destroy")
PLATFORMS = ("testbed", "grid5000", "hosts")
DISK_LOCATIONS = ("one", "all")

_ENV = re.compile(r"([a-z][a-z0-9_-]*:)?[A-Za-z0-9][A-Za-z0-9._-]*")
_URL = re.compile(r"https?://[^\s\"'<>\\]+")
_PRINTABLE = re.compile("[^\x00-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass(frozen=True)
class Element:
    """One item of ``-r``: ``grid5000``, a site, a cluster or a host, with a node count or None (no count)."""

    name: str
    count: int | None = None


@dataclass(frozen=True)
class JobRef:
    """One item of ``-j``: an OAR job id, with its site or None (``-j 42895``: the site is looked up)."""

    site: str | None
    id: int


def _items(text: str, what: str) -> list[str]:
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"{what}: empty list")
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise UsageError(f"{what}: empty item in {shown(text)}")
    return items


def _no_duplicates(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise UsageError(f"{what}: {name} is given twice")
        seen.add(name)


def parse_resources(text: str) -> tuple[Element, ...]:
    """``-r``: ``grid5000``, ``grid5000:20``, ``taurus:4,nancy:10``, ``hercule,griffon,graphene``."""
    elements = []
    for item in _items(text, "-r"):
        name, sep, count = item.partition(":")
        validate_id(name, "-r element")
        elements.append(Element(name, parse_int(count, f"-r: node count of {name}", maximum=MAX_NODES)
                                if sep else None))
    _no_duplicates([element.name for element in elements], "-r")
    return tuple(elements)


def parse_blacklist(text: str) -> tuple[str, ...]:
    """``-b``: sites, clusters or hosts to leave out, comma separated."""
    names = [validate_id(item, "-b element") for item in _items(text, "-b")]
    if GRID5000 in names:
        raise UsageError("-b: grid5000 cannot be blacklisted (that leaves nothing)")
    _no_duplicates(names, "-b")
    return tuple(names)


def parse_jobs(text: str) -> tuple[JobRef, ...]:
    """``-j``: ``42895``, ``grenoble:1657430`` or ``grenoble:1657430,toulouse:415866``."""
    jobs = []
    for item in _items(text, "-j"):
        site, sep, number = item.rpartition(":")
        if sep:
            validate_id(site, "-j site")
        jobs.append(JobRef(site or None, parse_int(number, "-j: job id", maximum=2**63 - 1)))
    _no_duplicates([f"{job.site}:{job.id}" if job.site else str(job.id) for job in jobs], "-j")
    return tuple(jobs)


def parse_walltime(text: str) -> int:
    """``-w``: ``H:MM:SS``, ``H:MM`` or a number of seconds; returns seconds (at least 1)."""
    value = text.strip() if isinstance(text, str) else ""
    match = re.fullmatch(r"(\d{1,6}):(\d{1,2})(?::(\d{1,2}))?", value)
    if match:
        hours, minutes, seconds = int(match[1]), int(match[2]), int(match[3] or 0)
        if minutes > 59 or seconds > 59:
            raise UsageError(f"-w: minutes and seconds go up to 59 in {shown(text)}")
        total = hours * 3600 + minutes * 60 + seconds
    elif re.fullmatch(r"\d{1,9}", value):
        total = int(value)
    else:
        raise UsageError(f"-w: invalid walltime {shown(text)}: use H:MM:SS, H:MM or seconds")
    if total < 1:
        raise UsageError("-w: the walltime must be longer than zero")
    return total


def format_walltime(seconds: int) -> str:
    """Seconds as ``H:MM:SS``."""
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def parse_vm_template(text: str) -> VMTemplate:
    """``-t``: ``<vm mem="4096" hdd="10" n_cpu="4" cpuset="auto"/>`` (``cpu`` is an alias of ``n_cpu``).

    Missing attributes take the original's defaults: mem 1024 MiB, hdd 10 GiB, n_cpu 1, cpuset auto.
    """
    element = parse_xml_element(text, "-t VM template")
    if element.tag != "vm":
        tag = shown(element.tag, 30)[1:-1]
        raise UsageError(f"-t: the template must be a <vm .../> element, not <{tag}>")
    unknown = sorted(set(element.attrib) - set(TEMPLATE_ATTRIBUTES))
    if unknown:
        raise UsageError(f"-t: unknown attribute {shown(unknown[0], 30)} "
                         f"(known: {', '.join(TEMPLATE_ATTRIBUTES)})")
    if len(element) or (element.text or "").strip():
        raise UsageError("-t: the template takes attributes only, no content")
    return template_from_attributes(element.attrib, VMTemplate(), "-t")


def parse_hosts(text: str) -> tuple[str, ...]:
    """``--hosts``: host names separated by commas, spaces or lines (``#`` starts a comment)."""
    names: list[str] = []
    for line in text.splitlines():
        names.extend(part for part in re.split(r"[\s,]+", line.split("#", 1)[0]) if part)
    if not names:
        raise UsageError("--hosts: no host given")
    for name in names:
        validate_id(name, "host name in --hosts")
    _no_duplicates(names, "--hosts")
    return tuple(names)


VM_NETWORK_KEYS = ("gateway", "block", "mac", "domain")


def parse_vm_network(text: str) -> dict[str, str]:
    """``--vm-network CIDR[,gateway=IP][,block=CIDR][,mac=grid5000|local][,domain=NAME]`` (``--hosts``).

    Only the grammar is checked here; the platform checks the addresses themselves.

    >>> parse_vm_network("10.156.0.0/14,gateway=10.159.255.254,block=10.156.8.0/22")
    {'cidr': '10.156.0.0/14', 'gateway': '10.159.255.254', 'block': '10.156.8.0/22'}
    """
    parts = [part.strip() for part in text.split(",")]
    if not parts[0] or "=" in parts[0]:
        raise UsageError("--vm-network: start with the network, e.g. 10.156.0.0/14,gateway=10.159.255.254")
    network = {"cidr": printable(parts[0], "--vm-network")}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep or key not in VM_NETWORK_KEYS or not value:
            raise UsageError(f"--vm-network: {shown(part, 40)} is not one of "
                             f"{', '.join(k + '=...' for k in VM_NETWORK_KEYS)}")
        if key in network:
            raise UsageError(f"--vm-network: {key} given twice")
        network[key] = printable(value, "--vm-network")
    return network


def parse_packages(text: str) -> tuple[str, ...]:
    """``--host-packages``: Debian package names, comma separated."""
    names = _items(text, "--host-packages")
    for name in names:
        if not is_package_name(name):
            raise UsageError(f"--host-packages: invalid Debian package name {shown(name)}")
    return tuple(dict.fromkeys(names))


def parse_env_name(text: str) -> str:
    """``-e``: a Kadeploy environment name, optionally ``user:name``."""
    if not isinstance(text, str) or not _ENV.fullmatch(text) or len(text) > 200:
        raise UsageError(f"-e: invalid environment name {shown(text)} (e.g. debian12-min or user:myenv)")
    return text


def parse_api_url(text: str) -> str:
    """``--api``: the base URL of a Grid'5000 REST API (``https://api.grid5000.fr/stable``)."""
    if not isinstance(text, str) or not _URL.fullmatch(text) or len(text) > 2000:
        raise UsageError(f"--api: invalid URL {shown(text)} (e.g. https://api.grid5000.fr/stable)")
    return text.rstrip("/")


def parse_cpu_overcommit(text: str) -> float:
    """``--cpu-overcommit``: vCPUs allowed per hardware thread, a number in (0, 64]."""
    try:
        ratio = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"--cpu-overcommit: not a number: {shown(text)}") from None
    return Limits(cpu_overcommit=ratio).cpu_overcommit


def printable(text: str, what: str) -> str:
    """A non-empty one-line string (paths, commands): no control characters."""
    if not isinstance(text, str) or not _PRINTABLE.fullmatch(text) or len(text) > 4096:
        raise UsageError(f"{what}: invalid value {shown(text)}")
    return text


@dataclass(frozen=True)
class Request:
    """Everything a run needs to know, checked. The workflow receives it and runs it.

    `topology` holds the VMs to deploy: with ``-n``, VMs ``vm-1`` … ``vm-N`` not placed yet; with ``-i``,
    the file's sites, clusters, hosts and VMs (placed as written; VMs directly under the root are placed
    by `placement`). `action` is ``deploy``, ``resume`` (``--resume OUTDIR``) or ``destroy``.
    """

    outdir: str
    action: str = "deploy"
    dry_run: bool = False
    topology: Topology = field(default_factory=Topology)
    infile: str | None = None
    n_vm: int = 0
    template: VMTemplate = field(default_factory=VMTemplate)
    resources: tuple[Element, ...] = (Element(GRID5000),)
    blacklist: tuple[str, ...] = ()
    jobs: tuple[JobRef, ...] = ()
    walltime: int | None = DEFAULT_WALLTIME
    kavlan: bool = False
    placement: PlacementPolicy = field(default_factory=PlacementPolicy)
    env_name: str | None = None
    env_file: str | None = None
    forcedeploy: bool = False
    nodeploy: bool = False
    host_packages: tuple[str, ...] = ()
    packages_upgrade: bool = False
    vm_backing_file: str | None = None
    vm_disk_location: str = "one"
    vm_clean_disks: bool = False
    program: str | None = None
    plot: bool = False
    api: str | None = None
    ssh_config: str | None = None
    platform: str | None = None  # None: chosen by the workflow (Grid'5000 when configured, else the testbed)
    hosts: tuple[str, ...] = ()
    vm_network: dict[str, str] | None = None  # --vm-network (the hosts platform's VM network)
    queue: str = "default"
    boot_timeout: int | None = None  # --boot-timeout: seconds a VM has to answer SSH (None: default)

    @property
    def needs_platform(self) -> bool:
        """False only for a dry run of a topology file without ``--api``: nothing to ask anyone."""
        return not (self.action == "deploy" and self.dry_run and self.infile is not None and self.api is None
                    and not self.jobs and self.platform is None)


#: Options that describe a new deployment, in the command's order: also the keywords of `vm5k.deploy` and
#: `vm5k.plan` (the API's tests check both lists against the command's parser). ``--resume`` and
#: ``--destroy`` take none of them.
DEPLOY_OPTIONS = ("n_vm", "infile", "job_id", "walltime", "kavlan", "resources", "blacklisted",
                  "env_name", "env_file", "forcedeploy", "nodeploy", "host_packages", "packages_upgrade",
                  "platform", "hosts", "vm_network", "queue", "host_reserve", "cpu_overcommit",
                  "vm_template", "vm_backing_file", "vm_disk_location", "vm_distribution", "vm_clean_disks",
                  "boot_timeout", "seed", "program", "plot")
#: Those that are on/off switches (True/False in Python)
FLAG_OPTIONS = frozenset({"kavlan", "forcedeploy", "nodeploy", "packages_upgrade", "vm_clean_disks", "plot"})
#: Those whose text is a comma separated list (a list or tuple in Python)
LIST_OPTIONS = frozenset({"job_id", "resources", "blacklisted", "host_packages", "hosts"})


def build_request(options: Mapping[str, Any], *, infile_data: bytes | str | None = None,
                  hosts_text: str | None = None) -> tuple[Request, list[str]]:
    """Check the command line's values (argparse dests; None = not given) and build the Request.

    `infile_data` is the content of ``-i``'s file and `hosts_text` the content of ``--hosts`` (a file's
    text or the list itself). Returns the request and the warnings to show the user.
    """
    opts = dict(options)
    warnings: list[str] = []

    def get(name: str) -> Any:
        """An argparse value (a string, a flag, a count) or None when it was not given."""
        return opts.get(name)

    outdir = printable(get("outdir") or "", "-o")
    api = parse_api_url(get("api")) if get("api") is not None else None
    ssh_config = printable(get("ssh_config"), "--ssh-config") if get("ssh_config") is not None else None

    for action in ("resume", "destroy"):
        if get(action) is not None:
            given = [name for name in (*DEPLOY_OPTIONS, "dry_run") if get(name) not in (None, False)]
            if given:
                raise UsageError(f"--{action} continues the run recorded in its outdir: "
                                 f"--{given[0].replace('_', '-')} cannot be given with it")
            if get("keep_job") and action == "resume":
                raise UsageError("--keep-job goes with --destroy")
            request = Request(outdir=printable(get(action), f"--{action}"), action=action, api=api,
                              ssh_config=ssh_config)
            return request, warnings
    if get("keep_job"):
        raise UsageError("--keep-job goes with --destroy OUTDIR")

    template = parse_vm_template(get("vm_template")) if get("vm_template") is not None else VMTemplate()
    backing = printable(get("vm_backing_file"), "-f") if get("vm_backing_file") is not None else None
    distribution = normalize_distribution(get("vm_distribution") if get("vm_distribution") is not None
                                          else DEFAULT_DISTRIBUTION)
    limits = Limits(
        host_reserve_mib=(parse_int(get("host_reserve"), "--host-reserve (MiB)", minimum=0, maximum=1 << 30)
                          if get("host_reserve") is not None else Limits().host_reserve_mib),
        cpu_overcommit=(parse_cpu_overcommit(get("cpu_overcommit")) if get("cpu_overcommit") is not None
                        else Limits().cpu_overcommit),
    )
    platform = get("platform")
    if platform is not None and platform not in PLATFORMS:
        raise UsageError(f"--platform: choose from {', '.join(PLATFORMS)}")
    hosts: tuple[str, ...] = ()
    if hosts_text is not None:
        hosts = parse_hosts(hosts_text)
        if platform not in (None, "hosts"):
            raise UsageError(f"--hosts gives the hosts themselves: it cannot be used with "
                             f"--platform {platform}")
        platform = "hosts"
    if platform == "hosts" and not hosts:
        raise UsageError("--platform hosts needs --hosts LIST|FILE")
    vm_network = parse_vm_network(get("vm_network")) if get("vm_network") is not None else None
    if platform == "hosts" and vm_network is None:
        raise UsageError("--hosts needs --vm-network CIDR[,gateway=IP,block=CIDR]: the network the VMs sit "
                         "on (vm5k's dnsmasq serves it)")
    if vm_network is not None and platform != "hosts":
        raise UsageError("--vm-network describes the VMs' network of --hosts; Grid'5000 gives its own")
    if api is not None:
        if platform in ("testbed", "hosts"):
            raise UsageError(f"--api names a Grid'5000 API: it cannot be used with --platform {platform}")
        platform = "grid5000"

    resources: tuple[Element, ...] = (Element(GRID5000),)
    if get("resources") is not None:
        resources = parse_resources(get("resources"))
    blacklist = parse_blacklist(get("blacklisted")) if get("blacklisted") is not None else ()
    jobs = parse_jobs(get("job_id")) if get("job_id") is not None else ()
    if jobs and get("walltime") is not None:
        raise UsageError("-j uses the jobs' own walltime: -w cannot be given with it")
    if jobs and get("resources") is not None:
        raise UsageError("-j gives the hosts (those of the jobs): -r cannot be given with it")
    if platform == "hosts":
        for name, flag in (("job_id", "-j"), ("resources", "-r"), ("kavlan", "-k"), ("env_name", "-e"),
                           ("env_file", "-a"), ("forcedeploy", "--forcedeploy"), ("queue", "--queue")):
            if get(name) not in (None, False):
                raise UsageError(f"{flag} is for Grid'5000: it cannot be used with --hosts")
    walltime: int | None
    if jobs:
        walltime = None
    elif get("walltime") is not None:
        walltime = parse_walltime(get("walltime"))
    else:
        walltime = DEFAULT_WALLTIME
        if platform != "hosts":
            warnings.append(f"no -w given: reserving for {format_walltime(DEFAULT_WALLTIME)}")

    infile = get("infile")
    if infile is not None:
        infile = printable(infile, "-i")
        if get("n_vm") is not None:
            raise UsageError("-i describes the VMs: -n cannot be given with it")
        if get("resources") is not None:
            raise UsageError("-i names the hosts: -r cannot be given with it")
        if hosts:
            raise UsageError("-i names the hosts: --hosts cannot be given with it")
        if infile_data is None:
            raise UsageError(f"-i: {infile} could not be read")
        topology = Topology.from_xml(infile_data, defaults=template)
        topology.reset_run_state()
        if not topology.vms():
            raise UsageError(f"-i: {infile} describes no VM")
        n_vm = len(topology.vms())
        if n_vm > MAX_VMS or len(topology.hosts()) > MAX_NODES:
            raise UsageError(f"-i: {infile} describes {n_vm} VMs on {len(topology.hosts())} hosts: at most "
                             f"{MAX_VMS} VMs and {MAX_NODES} hosts")
    else:
        if get("n_vm") is not None:
            n_vm = parse_int(get("n_vm"), "-n (number of VMs)", maximum=MAX_VMS)
        else:
            n_vm = DEFAULT_N_VM
            warnings.append(f"no -n or -i given: deploying {DEFAULT_N_VM} VMs")
        topology = Topology(unplaced=[template.make_vm(f"vm-{number}") for number in range(1, n_vm + 1)])
    if backing is not None:
        for vm in topology.vms():
            if vm.backing_file is None:
                vm.backing_file = backing

    seed = get("seed")
    if seed is not None:
        seed = parse_int(seed, "--seed", minimum=0, maximum=2**63 - 1)
    env_name = parse_env_name(get("env_name")) if get("env_name") is not None else None
    env_file = printable(get("env_file"), "-a") if get("env_file") is not None else None
    if get("forcedeploy") and get("nodeploy"):
        raise UsageError("--forcedeploy and --nodeploy contradict each other")
    if env_name and env_file:
        raise UsageError("-e and -a both name the hosts' environment: give one")
    disk_location = get("vm_disk_location") if get("vm_disk_location") is not None else "one"
    if disk_location not in DISK_LOCATIONS:
        raise UsageError(f"-l: choose from {', '.join(DISK_LOCATIONS)}, not {shown(disk_location)}")
    queue = validate_id(get("queue"), "--queue") if get("queue") is not None else "default"
    program = printable(get("program"), "-p") if get("program") is not None else None
    packages = parse_packages(get("host_packages")) if get("host_packages") is not None else ()
    boot_timeout = (parse_int(get("boot_timeout"), "--boot-timeout (seconds)", minimum=10, maximum=86400)
                    if get("boot_timeout") is not None else None)

    request = Request(
        outdir=outdir, action="deploy", dry_run=bool(get("dry_run")), topology=topology, infile=infile,
        n_vm=n_vm, template=template, resources=resources, blacklist=blacklist, jobs=jobs, walltime=walltime,
        kavlan=bool(get("kavlan")), placement=PlacementPolicy(distribution, seed, limits), env_name=env_name,
        env_file=env_file, forcedeploy=bool(get("forcedeploy")), nodeploy=bool(get("nodeploy")),
        host_packages=packages, packages_upgrade=bool(get("packages_upgrade")), vm_backing_file=backing,
        vm_disk_location=disk_location, vm_clean_disks=bool(get("vm_clean_disks")), program=program,
        plot=bool(get("plot")), api=api, ssh_config=ssh_config, platform=platform, hosts=hosts,
        vm_network=vm_network, queue=queue, boot_timeout=boot_timeout,
    )
    return request, warnings
