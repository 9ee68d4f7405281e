"""The ``vm5k`` and ``vm5k_max_vms`` commands: the original vm5k's options, a Request, exit statuses.

This is the only place that turns failures into messages: every `Vm5kError` becomes one line
``vm5k: error: ...`` on stderr and its exit status (2 for bad input, before anything is touched).

``vm5k --dry-run -i FILE`` (without ``--api``) is answered here: it needs no platform. Every other run
goes to ``vm5k.workflow.run(request) -> int`` (and ``vm5k_max_vms -j/-r`` to
``vm5k.workflow.max_vms(request, template) -> int``), which the workflow module provides.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import random
import sys
import unicodedata
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NoReturn

from vm5k import __version__, outdir, render
from vm5k.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, Vm5kError
from vm5k.log import add_file_handler, remove_file_handler, setup_logging
from vm5k.placement import (
    DEFAULT_DISTRIBUTION,
    DISTRIBUTIONS,
    NotEnoughCapacity,
    check,
    counted_fit,
    distribute,
    max_vms,
)
from vm5k.program import check_program
from vm5k.request import Request, build_request, format_walltime, parse_vm_template
from vm5k.runstate import check_outdir_reusable
from vm5k.topology import Host, Topology

log = logging.getLogger(__name__)


class _Exit(Exception):
    """argparse wants to stop (after --help or --version)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay on one line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


def _one_line(text: str) -> str:
    """Escape line breaks, control and format characters: an error is one line whatever the user typed."""
    return "".join(repr(char)[1:-1] if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") else char
                   for char in text.strip())


def _print_error(prog: str, message: str) -> None:
    sys.stderr.write(f"{prog}: error: {_one_line(message)}\n")
    sys.stderr.flush()


# -- vm5k -------------------------------------------------------------------------------------------------

def build_parser(now: datetime | None = None) -> argparse.ArgumentParser:
    """The original vm5k's options in its groups, with underscore and dashed spellings."""
    default_out = outdir.default_outdir(now)
    parser = _Parser(
        prog="vm5k", add_help=False, allow_abbrev=False, formatter_class=argparse.RawTextHelpFormatter,
        description="Deploy virtual machines on Grid'5000 (or on its testbed) with one command:\n"
                    "reserve hosts, install them, start the VMs, and write their lists in the outdir.",
        epilog="Examples:\n"
               "  vm5k --n_vm 100 -w 2:00:00\n"
               "  vm5k -r grid5000:20 -n 100 -d n_by_hosts\n"
               "  vm5k -n 20 -t '<vm mem=\"4096\" hdd=\"10\" n_cpu=\"4\" cpuset=\"auto\"/>'\n"
               "  vm5k --dry-run -i examples/two_sites.xml",
    )

    ex = parser.add_argument_group("Execution", "Manage how vm5k is executed")
    ex.add_argument("-h", "--help", action="help", help="show this help message and exit")
    ex.add_argument("--version", action="version", version=f"vm5k {__version__}")
    noise = ex.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", default=None, help="print debug messages")
    noise.add_argument("-q", "--quiet", action="store_true", default=None,
                       help="print only warning and error messages")
    ex.add_argument("-o", "--outdir", metavar="OUTDIR",
                    help=f"where to store the vm5k log files\ndefault={default_out}")
    ex.add_argument("-p", "--program", metavar="PROGRAM",
                    help="Launch a program at the end of the deployment")
    ex.add_argument("--plot", action="store_true", default=None,
                    help="draw a topological graph of the deployment")
    ex.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true", default=None,
                    help="plan only: print what would be reserved and where each VM\n"
                         "would go, write the initial topology to the outdir,\n"
                         "touch nothing remote")

    mode = parser.add_argument_group("Mode", "Define the mode of vm5k")
    what = mode.add_mutually_exclusive_group()
    what.add_argument("-n", "--n_vm", "--n-vm", dest="n_vm", metavar="N_VM",
                      help="number of virtual machines (default 30)")
    what.add_argument("-i", "--infile", metavar="INFILE",
                      help="XML file describing the placement of VMs on G5K sites and clusters")
    when = mode.add_mutually_exclusive_group()
    when.add_argument("-j", "--job_id", "--job-id", dest="job_id", metavar="JOB_ID",
                      help="use the hosts from a oargrid_job or a oar_job.\n"
                           "42895, grenoble:1657430 or grenoble:1657430,toulouse:415866")
    when.add_argument("-w", "--walltime", metavar="WALLTIME",
                      help="duration of your reservation\n"
                           "H:MM:SS, H:MM or seconds (default 1:00:00)")
    mode.add_argument("-k", "--kavlan", action="store_true", default=None, help="Deploy the VMs in a KaVLAN")
    again = mode.add_mutually_exclusive_group()
    again.add_argument("--resume", metavar="OUTDIR", help="continue the interrupted run recorded in OUTDIR")
    again.add_argument("--destroy", metavar="OUTDIR",
                       help="remove the VMs and disks of the run in OUTDIR\n"
                            "and end its reservation")
    mode.add_argument("--keep-job", "--keep_job", dest="keep_job", action="store_true", default=None,
                      help="with --destroy: keep the reservation running")

    phys = parser.add_argument_group("Physical hosts", "Tune the physical hosts.")
    phys.add_argument("-r", "--resources", metavar="RESOURCES",
                      help="list of Grid'5000 elements (default grid5000), e.g.\n"
                           "grid5000:20, taurus:4,nancy:10 or hercule,griffon")
    phys.add_argument("-b", "--blacklisted", metavar="BLACKLISTED",
                      help="list of Grid'5000 elements to be blacklisted")
    env = phys.add_mutually_exclusive_group()
    env.add_argument("-e", "--env_name", "--env-name", dest="env_name", metavar="ENV_NAME",
                     help="Kadeploy environment name")
    env.add_argument("-a", "--env_file", "--env-file", dest="env_file", metavar="ENV_FILE",
                     help="path to the Kadeploy environment file")
    deploy = phys.add_mutually_exclusive_group()
    deploy.add_argument("--forcedeploy", action="store_true", default=None,
                        help="force the deployment of the hosts")
    deploy.add_argument("--nodeploy", action="store_true", default=None,
                        help="consider that hosts are already deployed and configured")
    phys.add_argument("--host-packages", "--host_packages", dest="host_packages", metavar="HOST_PACKAGES",
                      help="comma separated list of packages to be installed\n"
                           "on the hosts")
    phys.add_argument("--packages-upgrade", "--packages_upgrade", dest="packages_upgrade",
                      action="store_true", default=None, help="upgrade the hosts' packages before installing")
    phys.add_argument("--platform", choices=("testbed", "grid5000", "hosts"),
                      help="where hosts come from (default: Grid'5000 when an\n"
                           "API is configured, else the embedded testbed)")
    phys.add_argument("--api", metavar="URL",
                      help="Grid'5000 REST API (implies --platform grid5000)\n"
                           "e.g. https://api.grid5000.fr/stable")
    phys.add_argument("--ssh-config", "--ssh_config", dest="ssh_config", metavar="FILE",
                      help="OpenSSH client config used to reach the hosts\n"
                           "(gateway, testbed)")
    phys.add_argument("--hosts", metavar="LIST|FILE",
                      help="use these SSH hosts: a comma separated list,\n"
                           "or a file with one host a line")
    phys.add_argument("--vm-network", "--vm_network", dest="vm_network", metavar="CIDR[,gateway=IP,...]",
                      help="with --hosts: the network the VMs sit on, served by\n"
                           "vm5k's dnsmasq; also block=CIDR (their addresses),\n"
                           "mac=grid5000|local, domain=NAME")
    phys.add_argument("--queue", metavar="QUEUE", help="OAR queue (default: default)")
    phys.add_argument("--host-reserve", "--host_reserve", dest="host_reserve", metavar="MIB",
                      help="RAM of each host kept for the hypervisor, in MiB\n"
                           "(default 1024)")
    phys.add_argument("--cpu-overcommit", "--cpu_overcommit", dest="cpu_overcommit", metavar="RATIO",
                      help="vCPUs allowed per hardware thread (default 2.0)")

    vms = parser.add_argument_group("Virtual machines", "Tune the virtual machines.")
    vms.add_argument("-t", "--vm_template", "--vm-template", dest="vm_template", metavar="VM_TEMPLATE",
                     help="XML string describing the virtual machine\n"
                          "default: <vm mem=\"1024\" hdd=\"10\" n_cpu=\"1\" cpuset=\"auto\"/>")
    vms.add_argument("-f", "--vm_backing_file", "--vm-backing-file", dest="vm_backing_file",
                     metavar="VM_BACKING_FILE", help="backing file for your virtual machines")
    vms.add_argument("-l", "--vm_disk_location", "--vm-disk-location", dest="vm_disk_location",
                     metavar="VM_DISK_LOCATION", choices=("one", "all"),
                     help="Where to create the qcow2: one (default) or all")
    vms.add_argument("-d", "--vm_distribution", "--vm-distribution", dest="vm_distribution",
                     metavar="VM_DISTRIBUTION",
                     help=f"how to distribute the VMs (default {DEFAULT_DISTRIBUTION}):\n"
                          + ", ".join(DISTRIBUTIONS))
    vms.add_argument("--vm-clean-disks", "--vm_clean_disks", dest="vm_clean_disks", action="store_true",
                     default=None, help="force to use a fresh copy of the vms backing_file")
    vms.add_argument("--boot-timeout", "--boot_timeout", dest="boot_timeout", metavar="SECONDS",
                     help="seconds a VM has to answer SSH before it is created\n"
                          "again (once), then reported KO (default 300)")
    vms.add_argument("--seed", metavar="N",
                     help="seed of the random distribution\n"
                          "(default: drawn and logged)")
    return parser


#: Input files vm5k reads (topology, host list) are small; a bigger one is a mistake (or /dev/zero), not
#: something to load into memory.
MAX_INPUT_BYTES = 64 << 20


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_INPUT_BYTES + 1)
    except OSError as error:
        raise UsageError(f"{what}: cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:  # e.g. a NUL byte in the path
        raise UsageError(f"{what}: cannot read {path!r}: {error}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise UsageError(f"{what}: {path} is larger than {MAX_INPUT_BYTES >> 20} MiB: not a vm5k input file")
    return data


def _hosts_text(value: str) -> str:
    """``--hosts``: a file when it names one, else the list itself."""
    if os.path.isfile(value):
        try:
            return _read(value, "--hosts").decode()
        except UnicodeDecodeError:
            raise UsageError(f"--hosts: {value} is not a text file") from None
    if "/" in value:
        raise UsageError(f"--hosts: no such file: {value}")
    return value


def _must_exist(path: str | None, what: str) -> None:
    if path is not None and not os.path.isfile(path):
        raise UsageError(f"{what}: no such file: {path}")


def parse_request(argv: Sequence[str], now: datetime | None = None) -> tuple[Request, list[str]]:
    """argv → (Request, warnings). Reads the files the options name; raises UsageError on bad input."""
    args = build_parser(now).parse_args(list(argv))
    options: dict[str, Any] = vars(args)
    if options.get("outdir") is None:
        options["outdir"] = outdir.default_outdir(now)
    if options.get("resume") is None and options.get("destroy") is None:
        outdir.check_outdir_path(options["outdir"])  # before any warning: bad input is one line
    infile_data = _read(options["infile"], "-i") if options.get("infile") is not None else None
    hosts_text = _hosts_text(options["hosts"]) if options.get("hosts") is not None else None
    env_file = options.get("env_file")
    if env_file is None or not env_file.startswith(("http://", "https://")):  # Kadeploy also takes URLs
        _must_exist(env_file, "-a")
    _must_exist(options.get("ssh_config"), "--ssh-config")
    request, warnings = build_request(options, infile_data=infile_data, hosts_text=hosts_text)
    if request.program is not None:
        check_program(request.program, os.getcwd())
    policy = request.placement
    if request.action == "deploy" and policy.distribution == "random" and policy.seed is None:
        seed = random.SystemRandom().randrange(2**31)
        request = dataclasses.replace(request, placement=dataclasses.replace(policy, seed=seed))
        warnings.append(f"random distribution: seed {seed} "
                        f"(give --seed {seed} to place the VMs the same way)")
    return request, warnings


def dry_run_from_file(request: Request) -> int:
    """``--dry-run -i FILE`` without a platform: plan from the file alone, write the initial topology."""
    topo = request.topology.copy()
    warnings: list[str] = []
    notes: list[str] = []
    skipped: list[str] = []
    if topo.unplaced:
        placement = distribute(topo, request.placement)
        warnings += placement.warnings
    unchecked = check(topo, request.placement.limits)
    if unchecked:
        skipped.append(f"capacity (RAM, vCPUs) of {len(unchecked)} of {len(topo.hosts())} hosts: the file "
                       "gives no ram/cores for them and no platform was asked "
                       "(add --api to check against Grid'5000)")
    else:
        notes.append(f"capacity checked from the file: {request.placement.limits.describe()}")
    skipped.append("availability of the hosts and the reservation slot: no platform was contacted")
    topo.meta.update({
        "vm5k_version": __version__, "dry_run": True, "infile": request.infile, "platform": None,
        "walltime": request.walltime, **request.placement.to_dict(),
    })
    folder = outdir.make_outdir(request.outdir)
    check_outdir_reusable(folder)
    add_file_handler(folder, request.verbosity)
    for warning in warnings:
        log.warning("%s", warning)
    for note in notes:
        log.info("%s", note)
    written = outdir.write_initial(folder, topo)
    sys.stdout.write("vm5k dry run: nothing reserved, nothing started, no platform contacted\n")
    walltime = format_walltime(request.walltime) if request.walltime else None
    sys.stdout.write(render.plan_text(topo, walltime=walltime, source=request.infile, skipped=skipped))
    sys.stdout.write(f"Initial topology written to {', '.join(str(path) for path in written)}\n")
    sys.stdout.flush()
    log.info("dry run of %s: %d hosts, %d VMs; initial topology in %s", request.infile, len(topo.hosts()),
             len(topo.vms()), folder)
    for line in skipped:
        log.info("skipped check: %s", line)
    return EXIT_OK


def _workflow() -> Any:
    """The workflow module, imported only when a run needs it (it pulls in the SSH and HTTP clients, which
    ``vm5k --help`` and input errors do not need)."""
    return importlib.import_module("vm5k.workflow")


def _run(argv: Sequence[str]) -> int:
    request, warnings = parse_request(argv)
    setup_logging(request.verbosity)
    for warning in warnings:
        log.warning("%s", warning)
    if not request.needs_platform:
        return dry_run_from_file(request)
    return int(_workflow().run(request))


def _guard(prog: str, body: Callable[[Sequence[str]], int], argv: Sequence[str]) -> int:
    """Run `body(argv)`, turning every failure into one line and an exit status."""
    try:
        return body(argv)
    except _Exit as stop:
        return stop.status
    except NotEnoughCapacity as error:
        sys.stderr.write(error.table() + "\n")
        _print_error(prog, str(error))
        return error.exit_status
    except Vm5kError as error:
        _print_error(prog, str(error))
        return error.exit_status
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as error:  # a bug: say so in one line, details in the log (-v shows them)
        log.debug("internal error", exc_info=True)
        _print_error(prog, f"internal error: {type(error).__name__}: {error} (run with -v for details)")
        return EXIT_FAILURE
    finally:
        remove_file_handler()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vm5k``; returns the exit status (0 ok, 1 failed, 2 bad input, 130 interrupted)."""
    return _guard("vm5k", _run, sys.argv[1:] if argv is None else argv)


# -- vm5k_max_vms -------------------------------------------------------------------------------------------

def build_max_vms_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vm5k_max_vms", add_help=False, allow_abbrev=False,
                     formatter_class=argparse.RawTextHelpFormatter,
                     description="How many VMs of a template fit on hosts (RAM after the hypervisor\n"
                                 "reserve, vCPUs within the overcommit ratio), per host and in total.")
    parser.add_argument("-h", "--help", action="help", help="show this help message and exit")
    parser.add_argument("--version", action="version", version=f"vm5k {__version__}")
    parser.add_argument("-t", "--vm_template", "--vm-template", dest="vm_template", required=True,
                        metavar="VM_TEMPLATE", help="XML string describing the virtual machine")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("-i", "--infile", metavar="INFILE",
                       help="a topology file whose hosts carry their capacity")
    where.add_argument("-j", "--job_id", "--job-id", dest="job_id", metavar="JOB_ID",
                       help="the hosts of these jobs (Grid'5000)")
    where.add_argument("-r", "--resources", metavar="RESOURCES",
                       help="Grid'5000 elements (reference hardware); a count (site:N)\n"
                            "also prints what N of its hosts hold")
    parser.add_argument("-b", "--blacklisted", metavar="BLACKLISTED",
                        help="with -r: clusters or hosts left out")
    parser.add_argument("--api", metavar="URL", help="Grid'5000 REST API")
    parser.add_argument("--ssh-config", "--ssh_config", dest="ssh_config", metavar="FILE")
    parser.add_argument("--host-reserve", "--host_reserve", dest="host_reserve", metavar="MIB",
                        help="RAM of each host kept for the hypervisor, in MiB (default 1024)")
    parser.add_argument("--cpu-overcommit", "--cpu_overcommit", dest="cpu_overcommit", metavar="RATIO",
                        help="vCPUs allowed per hardware thread (default 2.0)")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", default=None)
    noise.add_argument("-q", "--quiet", action="store_true", default=None)
    return parser


def _max_vms(argv: Sequence[str]) -> int:
    args = vars(build_max_vms_parser().parse_args(list(argv)))
    template = parse_vm_template(args["vm_template"])
    keys = ("api", "ssh_config", "host_reserve", "cpu_overcommit", "verbose", "quiet", "job_id", "resources",
            "blacklisted")
    if args.get("blacklisted") is not None and args.get("resources") is None:
        raise UsageError("-b goes with -r (it leaves hosts out of the reference hardware)")
    options = {key: args.get(key) for key in keys}
    options["outdir"] = "."
    infile = args.get("infile")
    request, _ = build_request(options)
    setup_logging(request.verbosity)
    if infile is None:
        hosts = _workflow().max_vms_hosts(request)
    else:
        topo = Topology.from_xml(_read(infile, "-i"))
        hosts = [Host(host.id, host.capacity) for host in topo.hosts()]  # the file's VMs are not counted
        if not hosts:
            raise UsageError(f"-i: {infile} names no host")
        if all(host.capacity is None for host in hosts):
            raise UsageError(f"-i: the hosts of {infile} carry no capacity (ram and cores attributes); "
                             "use -j or -r to read it from Grid'5000")
    result = max_vms(hosts, template, request.placement.limits)
    capacities = {}
    for host in hosts:
        budget = request.placement.limits.budget(host.capacity)
        if budget.mem is not None and budget.vcpus is not None:
            capacities[host.id] = (budget.mem, budget.vcpus)
    counted = []
    for element in request.resources:  # -r site:N: what N of its hosts hold (the platform marks them)
        if element.count is not None:
            label = f"{element.name}:{element.count}"
            members = [host.id for host in hosts if label in host.extra.get("counted", ())]
            counted.append(counted_fit(result, members, label, element.count))
    sys.stdout.write(render.max_vms_text(result, request.placement.limits, capacities, counted))
    return EXIT_OK


def max_vms_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vm5k_max_vms``."""
    return _guard("vm5k_max_vms", _max_vms, sys.argv[1:] if argv is None else argv)


__all__ = ["EXIT_USAGE", "build_max_vms_parser", "build_parser", "dry_run_from_file", "main", "max_vms_main",
           "parse_request"]
