"""`vm5k-testbed up|down|status|image`: the lab's subcommands, added to the `vm5k-testbed` parser.

    vm5k-testbed up [--site rennes:3,nancy:2] [--nodes N] [--state DIR] [--node-memory 4G] [--api-arg ARG]
    vm5k-testbed status [--json] [--state DIR]
    vm5k-testbed down [--state DIR]
    vm5k-testbed image [--flavour tiny|debian] [--force] [--no-install]

The default state folder is /var/lib/vm5k-testbed/default (`--state`, or $VM5K_TESTBED_STATE). Bad input
gives one line `vm5k-testbed: error: ...` and exit status 2; a failed step exit status 1. Importing this
module is cheap: `serve` imports it too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

PROG = "vm5k-testbed"
STATE_ENV = "VM5K_TESTBED_STATE"


def _state_default() -> str:
    from g5k_testbed.lab.layout import DEFAULT_STATE_DIR
    return os.environ.get(STATE_ENV) or str(DEFAULT_STATE_DIR)


def _size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a memory size: {text!r} (e.g. 4G, 512M)")
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[match.group(2).lower()]
    value = int(float(match.group(1)) * factor)
    if value < 64 << 20:
        raise argparse.ArgumentTypeError(f"{text!r} is too small for a node (at least 64M)")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive number of nodes: {text!r}")
    return int(text)


def register(subparsers: Any) -> None:
    """Add `up`, `down`, `status` and `image` to an argparse subparsers object."""
    up = subparsers.add_parser("up", help="start the API server and real nodes (namespaces, sshd, libvirtd)")
    up.add_argument("--site", metavar="SITE[:N],...", help="sites and node counts, e.g. rennes:3,nancy:2 "
                    "(default rennes; a cluster may be named: rennes:paradoxe:2)")
    up.add_argument("--nodes", type=_count, metavar="N", help="nodes per site without a count (default 3)")
    up.add_argument("--state", metavar="DIR", default=None, help="state folder (default %(default)s: "
                    f"${STATE_ENV} or /var/lib/vm5k-testbed/default)")
    up.add_argument("--node-memory", type=_size, metavar="SIZE",
                    help="memory limit of each node, e.g. 4G (default: the machine's memory minus a reserve)")
    up.add_argument("--api-arg", action="append", default=[], metavar="ARG",
                    help="extra option for the API server, e.g. --api-arg=--admin (repeatable)")
    up.add_argument("--json", action="store_true", help="print the status as JSON when ready")
    up.set_defaults(func=_cmd_up)

    down = subparsers.add_parser("down", help="stop everything `up` started and remove what it created")
    down.add_argument("--state", metavar="DIR", default=None, help="state folder (as given to up)")
    down.set_defaults(func=_cmd_down)

    status = subparsers.add_parser("status", help="show the API, the SSH config, the image and the nodes")
    status.add_argument("--state", metavar="DIR", default=None, help="state folder (as given to up)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_cmd_status)

    image = subparsers.add_parser("image", help="build the guest image (cached) and install it in /grid5000")
    image.add_argument("--flavour", choices=("tiny", "debian"), default="tiny",
                       help="tiny: busybox+dropbear, SSH in ~5 s (default); debian: debootstrap + systemd")
    image.add_argument("--force", action="store_true", help="rebuild even when the cache is current")
    image.add_argument("--no-install", action="store_true", help="build into the cache only")
    image.set_defaults(func=_cmd_image)


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def _guarded(action: Any, args: argparse.Namespace) -> int:
    from g5k_testbed.lab.errors import LabError, UsageError
    try:
        return int(action(args) or 0)
    except UsageError as exc:
        return _fail(str(exc), 2)
    except LabError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return _fail("interrupted (run `vm5k-testbed down` to clean up a half-built testbed)", 130)


def _lab(args: argparse.Namespace) -> Any:
    from g5k_testbed.lab.lab import Lab
    from g5k_testbed.lab.layout import Layout
    return Lab(Layout(args.state or _state_default()))


def _progress(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _cmd_up(args: argparse.Namespace) -> int:
    def action(args: argparse.Namespace) -> int:
        from g5k_testbed.lab.lab import UpOptions
        from g5k_testbed.lab.plan import parse_site_spec
        lab = _lab(args)
        requests = None
        if args.site is not None or args.nodes is not None or lab.info() is None:
            requests = parse_site_spec(args.site, args.nodes)
        status = lab.up(UpOptions(requests=requests, node_memory=args.node_memory, api_args=args.api_arg,
                                  progress=_progress))
        _print_status(status, args.json)
        return 0 if status["state"] == "up" else 1
    return _guarded(action, args)


def _cmd_down(args: argparse.Namespace) -> int:
    def action(args: argparse.Namespace) -> int:
        problems = _lab(args).down(progress=_progress)
        for problem in problems:
            print(f"{PROG}: left behind: {problem}", file=sys.stderr)
        return 1 if problems else 0
    return _guarded(action, args)


def _cmd_status(args: argparse.Namespace) -> int:
    def action(args: argparse.Namespace) -> int:
        status = _lab(args).status()
        _print_status(status, args.json)
        return 0 if status["state"] == "up" else 1
    return _guarded(action, args)


def _cmd_image(args: argparse.Namespace) -> int:
    def action(args: argparse.Namespace) -> int:
        from g5k_testbed.lab.image import install
        if os.geteuid() != 0:
            from g5k_testbed.lab.errors import UsageError
            raise UsageError("building and installing images needs root")
        with install.cache_lock():
            folder = install.build(args.flavour, force=args.force, progress=_progress)
            if args.no_install:
                print(folder)
            else:
                print(install.install(folder, install.INSTALL_NAMES[args.flavour]))
        return 0
    return _guarded(action, args)


def _print_status(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(status, indent=1, sort_keys=True))
        return
    if status.get("state") == "down":
        print(f"testbed {status['testbed_id']} in {status['state_dir']}: down")
        return
    print(f"testbed {status['testbed_id']} ({status['state']}) in {status['state_dir']}")
    print(f"  API          {status.get('api')}")
    print(f"  SSH config   {status.get('ssh_config')}    (admin: ssh -F ... root@<node>)")
    print(f"  routing only {status.get('routing_ssh_config')}    (clients: ssh -F ... -i YOUR_KEY)")
    print(f"  image        {status.get('image')}")
    print(f"  accelerator  {status.get('accel')} ({status.get('accel_reason')})")
    for node in status["nodes"]:
        vlan = "" if node["vlan"] == "DEFAULT" else f"  vlan {node['vlan']}"
        print(f"  {node['name']:40} {node['ip']:15} {node['state']:10}{vlan}")


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (python -m g5k_testbed.lab.cli ...), the same commands as `vm5k-testbed`."""
    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:
            print(f"{PROG}: error: {message}", file=sys.stderr)
            raise SystemExit(2)

    parser = Parser(prog=PROG)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    subparsers.required = True
    register(subparsers)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
