"""`vm5k-testbed`: run the Grid'5000 API of the testbed (`serve`), plus the lab's commands when installed.

    vm5k-testbed serve [--host 127.0.0.1] [--port N] [--sites rennes,nancy|all] [--state DIR] [--admin] ...

`serve` prints the base URL (ending in `/stable`) on the first line of stdout, then runs in the foreground
until SIGTERM or SIGINT. Bad input gives one line `vm5k-testbed: error: ...` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

from g5k_testbed.auth import AuthConfig, default_inside_user
from g5k_testbed.faults import FaultConfig
from g5k_testbed.reference import Reference
from g5k_testbed.testbed import TestbedConfig

PROG = "vm5k-testbed"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


class UsageError(Exception):
    """Bad command-line input: reported on one line, exit status 2."""


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return int(text)


def _add_serve(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the Grid'5000 REST API of the testbed in the foreground")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=0, help="TCP port (default 0: a free port)")
    serve.add_argument("--sites", default="all", help="sites to serve, e.g. rennes,nancy (default all)")
    serve.add_argument("--state", metavar="DIR", help="folder where jobs, deployments and vlans persist")
    serve.add_argument("--admin", action="store_true", help="serve the control endpoints under /_testbed/")
    serve.add_argument(
        "--users",
        metavar="FILE",
        help='JSON {"login": "password"}: Basic auth is checked '
        "against it (default: any password is accepted)",
    )
    serve.add_argument(
        "--inside-user",
        default=None,
        help="who a request without credentials is (default: the local user name; "
        "'anonymous' makes such requests read-only)",
    )
    serve.add_argument("--kadeploy-duration", type=_seconds, default=5.0, help="seconds a deployment takes")
    serve.add_argument("--launch-delay", type=_seconds, default=1.0, help="seconds from launching to running")
    serve.add_argument("--faults", metavar="FILE", help="JSON fault settings (see g5k_testbed.faults)")
    serve.add_argument("--fail-rate", type=_rate, help="fraction of API calls answered 500/502/504")
    serve.add_argument("--lost-reply-rate", type=_rate, help="fraction of POSTs executed but answered 5xx")
    serve.add_argument("--latency", type=_seconds, help="seconds added to every reply")
    serve.add_argument("--slow-rate", type=_rate, help="fraction of replies delayed by --slow-seconds")
    serve.add_argument("--slow-seconds", type=_seconds, help="delay of slow replies (default 2)")
    serve.add_argument("--ko-nodes", type=_csv, help="FQDNs whose deployments come back KO")
    serve.add_argument("--dead-nodes", type=_csv, help="FQDNs that OAR shows Dead")
    serve.add_argument("--seed", type=int, help="seed of the fault injector's random choices")
    serve.set_defaults(func=cmd_serve)


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise UsageError(f"{what} {path} is not valid JSON: {exc}") from exc


def build_config(args: argparse.Namespace) -> TestbedConfig:
    """The testbed configuration from `serve`'s options (UsageError on bad input)."""
    sites = None if args.sites.strip() == "all" else _csv(args.sites)
    if sites is not None:
        known = Reference.available_sites()
        unknown = [s for s in sites if s not in known]
        if not sites or unknown:
            named = ", ".join(unknown) if unknown else repr(args.sites)
            raise UsageError(f"unknown site(s) {named}; known: {', '.join(known)}")
    users = None
    if args.users:
        users = _read_json(args.users, "user table")
        if not isinstance(users, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in users.items()
        ):
            raise UsageError(f'user table {args.users} must be a JSON object {{"login": "password"}}')
    faults = FaultConfig()
    settings: dict[str, Any] = _read_json(args.faults, "fault settings") if args.faults else {}
    if not isinstance(settings, dict):
        raise UsageError(f"fault settings {args.faults} must be a JSON object")
    for option, key in (
        ("fail_rate", "error_rate"),
        ("lost_reply_rate", "lost_reply_rate"),
        ("latency", "latency"),
        ("slow_rate", "slow_rate"),
        ("slow_seconds", "slow_seconds"),
        ("ko_nodes", "ko_nodes"),
        ("dead_nodes", "dead_nodes"),
        ("seed", "seed"),
    ):
        if getattr(args, option) is not None:
            settings[key] = getattr(args, option)
    try:
        faults.update(settings)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad fault settings: {exc}") from exc
    state = str(Path(args.state).resolve()) if args.state else None
    if state is not None:
        try:
            Path(state).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create state folder {args.state}: {exc.strerror}") from exc
    return TestbedConfig(
        sites=sites,
        state_dir=state,
        auth=AuthConfig(
            users=users,
            inside_user=args.inside_user if args.inside_user is not None else default_inside_user(),
        ),
        faults=faults,
        admin=args.admin,
        launch_delay=round(args.launch_delay),
        kadeploy_duration=round(args.kadeploy_duration),
    )


def cmd_serve(args: argparse.Namespace) -> int:
    from g5k_testbed.http_server import start_server  # the server and its data load only for `serve`

    config = build_config(args)
    try:
        handle = start_server(config, host=args.host, port=args.port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(handle.url, flush=True)
    try:
        while not stop.wait(3600):
            pass
    finally:
        handle.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="A Grid'5000 site in a box: REST API, OAR, Kadeploy, KaVLAN.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    _add_serve(subparsers)
    try:
        from g5k_testbed.lab import cli as lab_cli  # the lab's commands: `up`, `down`, `status`, `image`
    except ImportError:
        return parser
    lab_cli.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
