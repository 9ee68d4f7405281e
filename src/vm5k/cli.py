"""The ``vm5k`` and ``vm5k_max_vms`` commands: a thin shell over the Python API (`vm5k.api`).

The options are the original vm5k's; each long option is a keyword of `vm5k.deploy`/`vm5k.plan` (or a
method of `vm5k.Run`: ``--resume``, ``--destroy``, ``--keep-job``), so the command and the API cannot
disagree. This module only parses, prints and exits: it sets up logging (``-v``/``-q``), turns SIGTERM
into the Ctrl-C the API handles, prints the dry run's plan and ``vm5k_max_vms``'s table, and turns every
`Vm5kError` into one line ``vm5k: error: ...`` on stderr and its exit status (2 for bad input, before
anything is touched; 1 when a run did not give everything; 130 when interrupted).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, NoReturn

from vm5k import __version__, outdir, render
from vm5k.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Interrupted,
    UsageError,
    Vm5kError,
)
from vm5k.log import remove_file_handler, setup_logging
from vm5k.options import PLACE_OPTIONS, request_from_options
from vm5k.placement import DISTRIBUTIONS, NotEnoughCapacity
from vm5k.request import DEPLOY_OPTIONS, PLATFORMS, Request

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
    """The seed's options in the seed's groups, with underscore and dashed spellings."""
    default_out = outdir.default_outdir(now)
    parser = _Parser(
        prog="vm5k", add_help=False, allow_abbrev=False, formatter_class=argparse.RawTextHelpFormatter,
        description="Deploy virtual machines on Grid'5000 (or on its testbed) with one command:\n"
                    "reserve hosts, install them, start the VMs, and write their lists in the outdir.",
        epilog="Examples:\n"
               "  vm5k --n_vm 100 -w 2:00:00\n"
               "  vm5k -r grid5000:20 -n 100 -d n_by_hosts\n"
               "  vm5k -n 20 -t '<vm mem=\"4096\" hdd=\"10\" n_cpu=\"4\" cpuset=\"auto\"/>'\n"
               "  vm5k --dry-run -i examples/two_sites.xml\n"
               "Changing a running fleet:\n"
               "  vm5k --stop OUTDIR [vm-1,vm-2] [--grace 60]   (--start, --reboot, --reset alike)\n"
               "  vm5k --resume OUTDIR -n 40 [-t TEMPLATE]        (grow to 40 VMs)\n"
               "  vm5k --remove OUTDIR vm-7,vm-8\n"
               "  vm5k --migrate OUTDIR vm-3=paradoxe-2[,vm-5=paradoxe-1] [--parallel 2]",
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
                    help="draw a topological graph of the deployment and a\n"
                         "timeline of the run (PNG and SVG in the outdir)")
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
    again.add_argument("--resume", metavar="OUTDIR",
                       help="continue the interrupted run recorded in OUTDIR;\n"
                            "with -n TOTAL [-t TEMPLATE]: grow it to TOTAL VMs")
    again.add_argument("--destroy", metavar="OUTDIR",
                       help="remove the VMs and disks of the run in OUTDIR\n"
                            "and end its reservation")
    for action, text in (("stop", "shut down (forced off after --grace) VMS of the run\n"
                                  "in OUTDIR (default: all)"),
                         ("start", "start the stopped VMS of the run in OUTDIR (default: all)"),
                         ("reboot", "reboot VMS of the run in OUTDIR (default: all)"),
                         ("reset", "give VMS of the run in OUTDIR (default: all) a fresh disk\n"
                                   "from their backing file, same id, IP, MAC and host")):
        again.add_argument(f"--{action}", nargs="+", metavar=("OUTDIR", "VMS"), help=text)
    again.add_argument("--migrate", nargs="+", metavar=("OUTDIR", "VM=HOST"),
                       help="live-migrate VMs of the run in OUTDIR to other hosts\n"
                            "of the run: vm-3=paradoxe-2[,vm-5=paradoxe-1]")
    mode.add_argument("--parallel", metavar="N",
                      help="with --migrate: migrations at a time (default 2)")
    again.add_argument("--remove", nargs="+", metavar=("OUTDIR", "VMS"),
                       help="remove VMS (vm-7,vm-8) of the run in OUTDIR: domains,\n"
                            "disks, addresses and names freed")
    mode.add_argument("--grace", metavar="SECONDS",
                      help="with --stop and --reboot: seconds a VM has to shut\n"
                           "down cleanly before it is forced off (default 60)")
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
    phys.add_argument("--platform", choices=PLATFORMS,
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
                     help="how to distribute the VMs (default round-robin):\n"
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


def _api() -> Any:
    """The API module, imported only when a run needs it (``vm5k --help`` and input errors do not)."""
    return importlib.import_module("vm5k.api")


@contextlib.contextmanager
def _sigterm_as_sigint() -> Iterator[None]:
    """SIGTERM stops a run the way Ctrl-C does (state saved, message printed), instead of killing it.

    Both end up as SIGINT, which Python turns into KeyboardInterrupt, which the API turns into a clean
    stop of the running step. A vm5k started with SIGINT ignored (the background job of a script, which is
    what batch systems stop with SIGTERM) gets Ctrl-C's handling back for the run: a stop, whatever its
    signal, must save the state and say how to go on.
    """
    def forward(signum: int, frame: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    try:
        previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int in (signal.SIG_IGN, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if previous_int in (signal.SIG_IGN, None):
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def parse_request(argv: Sequence[str], now: datetime | None = None) -> tuple[Request, list[str]]:
    """argv → the checked `Request` that the API builds for this command line, and the warnings to show
    (reads the files the options name; raises `UsageError` on bad input)."""
    args = vars(build_parser(now).parse_args(list(argv)))
    return request_from_options(args, default_outdir=outdir.default_outdir(now))


def _print_plan(plan: Any) -> None:
    if plan.platform is None:
        sys.stdout.write("vm5k dry run: nothing reserved, nothing started, no platform contacted\n")
    else:
        sys.stdout.write(f"vm5k dry run on {plan.platform}: nothing reserved, nothing started\n")
    sys.stdout.write(plan.text)
    written = " and ".join(str(path) for path in plan.files) if plan.platform else \
        ", ".join(str(path) for path in plan.files)
    sys.stdout.write(f"Initial topology written to {written}\n")
    sys.stdout.flush()


def _run(argv: Sequence[str], now: datetime | None = None) -> int:
    args: dict[str, Any] = vars(build_parser(now).parse_args(list(argv)))
    setup_logging(1 if args.get("verbose") else -1 if args.get("quiet") else 0)
    if args.get("outdir") is None:
        args["outdir"] = outdir.default_outdir(now)
    api = _api()
    with _sigterm_as_sigint():
        for action in CHANGES:
            if args.get(action) is not None:
                return _change(api, action, args)
        if args.get("grace") is not None:
            raise UsageError("--grace goes with --stop or --reboot")
        if args.get("parallel") is not None:
            raise UsageError("--parallel goes with --migrate")
        if args.get("resume") is not None and (args.get("n_vm") is not None
                                               or args.get("vm_template") is not None):
            return _grow(api, args)
        for action in ("resume", "destroy"):
            if args.get(action) is not None:
                request_from_options(args, default_outdir=args["outdir"])  # the checks: no deployment option
                run = api.Run.load(args[action], api=args.get("api"), ssh_config=args.get("ssh_config"),
                                   progress=True)
                if action == "destroy":
                    run.destroy(keep_job=bool(args.get("keep_job")))
                    return EXIT_OK
                run.resume()
                return EXIT_OK if run.ok else EXIT_FAILURE
        if args.get("keep_job"):
            raise UsageError("--keep-job goes with --destroy OUTDIR")
        keywords = {name: args.get(name) for name in (*DEPLOY_OPTIONS, *PLACE_OPTIONS)}
        if args.get("dry_run"):
            _print_plan(api.plan(progress=True, **keywords))
            return EXIT_OK
        run = api.deploy(progress=True, **keywords)
        return EXIT_OK if run.ok else EXIT_FAILURE


#: The options that change a running fleet: each a method of `vm5k.Run` with the same name.
CHANGES = ("stop", "start", "reboot", "reset", "remove", "migrate")


def _grow(api: Any, args: dict[str, Any]) -> int:
    """``--resume OUTDIR -n TOTAL [-t TEMPLATE]``: add VMs up to TOTAL (`vm5k.Run.add`)."""
    outdir_arg = args["resume"]
    if args.get("n_vm") is None:
        raise UsageError("-t with --resume goes with -n TOTAL (the run's new number of VMs)")
    others = {"n_vm", "vm_template"}
    given = [name for name in (*DEPLOY_OPTIONS, "keep_job", "grace", "parallel") if name not in others
             and args.get(name) not in (None, False)]
    if given:
        raise UsageError(f"--resume -n adds VMs to the run recorded in its outdir: "
                         f"--{given[0].replace('_', '-')} cannot be given with it")
    text = str(args["n_vm"]).strip()
    if not text.isdigit():
        raise UsageError(f"-n: {args['n_vm']!r} is not a number of VMs")
    total = int(text)
    run = api.Run.load(outdir_arg, api=args.get("api"), ssh_config=args.get("ssh_config"), progress=True)
    now = len(run.vms)
    if total < now:
        raise UsageError(f"-n {total} is fewer than the {now} VMs of the run: remove VMs with "
                         f"vm5k --remove {outdir_arg} VM,VM,...")
    if total == now:
        raise UsageError(f"the run already has {now} VMs: -n with --resume is the new total")
    run.add(total - now, vm_template=args.get("vm_template"), dry_run=bool(args.get("dry_run")))
    if run.change_plan is not None:
        sys.stdout.write(f"vm5k dry run: nothing touched\n{run.change_plan}\n")
        sys.stdout.flush()
        return EXIT_OK
    return EXIT_OK if run.ok else EXIT_FAILURE


def _change(api: Any, action: str, args: dict[str, Any]) -> int:
    """``--stop/--start/--reboot/--reset OUTDIR [VMS]``: the run's method, or what it would do (--dry-run)."""
    values = args[action]
    if len(values) > 2:
        raise UsageError(f"--{action} takes OUTDIR and at most one comma separated list of VMs, "
                         f"not {' '.join(values[2:])!r}")
    given = [name for name in (*DEPLOY_OPTIONS, "keep_job") if args.get(name) not in (None, False)]
    if given:
        raise UsageError(f"--{action} changes the run recorded in its outdir: "
                         f"--{given[0].replace('_', '-')} cannot be given with it")
    if args.get("grace") is not None and action not in ("stop", "reboot"):
        raise UsageError("--grace goes with --stop or --reboot")
    if args.get("parallel") is not None and action != "migrate":
        raise UsageError("--parallel goes with --migrate")
    vms = values[1] if len(values) == 2 else None
    if action == "remove" and vms is None:
        raise UsageError("--remove needs the VMs to remove: --remove OUTDIR vm-7,vm-8 (--destroy removes a "
                         "whole run)")
    if action == "migrate" and vms is None:
        raise UsageError("--migrate needs VM=HOST pairs: --migrate OUTDIR vm-3=paradoxe-2[,vm-5=paradoxe-1]")
    run = api.Run.load(values[0], api=args.get("api"), ssh_config=args.get("ssh_config"), progress=True)
    options: dict[str, Any] = {"grace": args["grace"]} if args.get("grace") is not None else {}
    if args.get("parallel") is not None:
        text = str(args["parallel"]).strip()
        if not text.isdigit():
            raise UsageError(f"--parallel: {args['parallel']!r} is not a whole number")
        options["parallel"] = int(text)
    getattr(run, action)(vms, dry_run=bool(args.get("dry_run")), **options)
    if run.change_plan is not None:
        sys.stdout.write(f"vm5k dry run: nothing touched\n{run.change_plan}\n")
        sys.stdout.flush()
        return EXIT_OK
    return EXIT_OK if run.ok else EXIT_FAILURE


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
    except Interrupted as error:
        sys.stderr.write(f"{prog}: {_one_line(str(error))}\n" + (f"{error.hint}\n" if error.hint else ""))
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
    setup_logging(1 if args.get("verbose") else -1 if args.get("quiet") else 0)
    keys = ("vm_template", "infile", "job_id", "resources", "blacklisted", "api", "ssh_config",
            "host_reserve", "cpu_overcommit")
    result = _api().max_vms(**{key: args.get(key) for key in keys})
    capacities = {}
    for host in result.hosts:
        budget = result.limits.budget(host.capacity)
        if budget.mem is not None and budget.vcpus is not None:
            capacities[host.id] = (budget.mem, budget.vcpus)
    sys.stdout.write(render.max_vms_text(result.fit, result.limits, capacities, result.counted))
    return EXIT_OK


def max_vms_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vm5k_max_vms``."""
    return _guard("vm5k_max_vms", _max_vms, sys.argv[1:] if argv is None else argv)


__all__ = ["EXIT_USAGE", "build_max_vms_parser", "build_parser", "main", "max_vms_main", "parse_request"]
