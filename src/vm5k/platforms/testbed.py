"""The embedded default: when no Grid'5000 is configured, vm5k runs on the testbed of this machine.

The testbed is a Grid'5000 site in a box (``vm5k-testbed``, the package ``g5k_testbed``). vm5k never
imports it: exactly as with Grid'5000, it only talks to its REST API and to its nodes over SSH. This
module finds it through its command line — ``vm5k-testbed status --json`` says where its API and its SSH
config are — and starts it (``vm5k-testbed up``) when it is not up, with the site and node count the
request names (``-r rennes:2``). A testbed that is up is used as it is. The run then uses the Grid'5000
platform with the testbed's API URL and its routing-only SSH config (how to reach each node, no key): vm5k
gets in with its own run key, which Kadeploy installed, exactly as on Grid'5000 — never with the
testbed's admin key, so a node vm5k did not deploy (or whose job ended) refuses it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vm5k.errors import PlatformError, UsageError
from vm5k.platforms import Access, Platform, Services
from vm5k.request import Request
from vm5k.topology import Host

log = logging.getLogger(__name__)

TESTBED_COMMAND = "vm5k-testbed"
DEFAULT_SITE = "rennes"
DEFAULT_NODES = 3
#: ``up`` builds the guest image the first time (minutes on two cores); later ups take seconds.
UP_TIMEOUT = 1800.0
ENV_TESTBED_STATE = "VM5K_TESTBED_STATE"
GRID5000_SITES = ("bordeaux", "grenoble", "lille", "louvain", "luxembourg", "lyon", "nancy", "nantes",
                  "rennes", "sophia", "strasbourg", "toulouse")


@dataclass(frozen=True)
class TestbedInfo:
    """What ``vm5k-testbed status --json`` says about a running testbed."""

    api: str
    ssh_config: str
    image: str | None
    state_dir: str | None
    nodes: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    #: ``up``, or ``degraded`` when some of its nodes are not up (dead, failed): its API still answers
    state: str = "up"

    @property
    def not_up(self) -> list[str]:
        """The nodes that are not up (a dead node is to the testbed what a Dead node is to Grid'5000).

        A node being deployed counts as up: Kadeploy, or the reboot that ends a job, is working on it (its
        API knows), and restarting the testbed then would race with that work.
        """
        return [str(node.get("name")) for node in self.nodes if node.get("state") not in ("up", "deploying")]

    @property
    def sites(self) -> dict[str, int]:
        """Site → number of nodes up."""
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[str(node.get("site"))] = counts.get(str(node.get("site")), 0) + 1
        return counts


def testbed_command() -> str:
    """The ``vm5k-testbed`` program: next to this Python (same venv), else on the PATH."""
    beside = Path(sys.executable).parent / TESTBED_COMMAND
    if beside.exists():
        return str(beside)
    found = shutil.which(TESTBED_COMMAND)
    if found is None:
        raise PlatformError("no Grid'5000 API is configured and the testbed (vm5k-testbed) is not installed: "
                            "give --api URL, or install vm5k with its testbed (scripts/setup.sh)")
    return found


def _state_args(state_dir: str | None) -> list[str]:
    state = state_dir or os.environ.get(ENV_TESTBED_STATE)
    return ["--state", state] if state else []


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    command = [testbed_command(), *args]
    log.debug("running %s", " ".join(command))
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise PlatformError(f"the testbed did not answer within {timeout:.0f} s ({' '.join(args)})") from None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def parse_status(text: str) -> TestbedInfo | None:
    """The testbed described by ``status --json`` output, or None when it is down or its API is.

    A testbed whose API answers but some of whose nodes are not up is ``degraded``: it is returned (with
    that state), since vm5k can still reach its reservations and its other nodes, as on Grid'5000 where
    some nodes are always dead.
    """
    try:
        data = json.loads(text)
    except ValueError:
        raise PlatformError(f"the testbed's status is not JSON: {_last_line(text)[:200]}") from None
    if not isinstance(data, dict) or not data.get("api") or not data.get("ssh_config"):
        return None
    # the routing-only config; a testbed older than it only has its admin one
    ssh_config = str(data.get("routing_ssh_config") or data["ssh_config"])
    state = str(data.get("state") or "up")
    pids = data.get("pids")
    pids = pids if isinstance(pids, dict) else {}
    api = pids.get("api")
    api = api if isinstance(api, dict) else {}
    if state not in ("up", "degraded") or not api.get("alive", state == "up"):
        return None
    nodes = tuple(node for node in data.get("nodes") or () if isinstance(node, dict))
    return TestbedInfo(str(data["api"]), ssh_config, data.get("image"), data.get("state_dir"), nodes, state)


def recorded(text: str) -> bool:
    """Whether ``status --json`` output describes a testbed at all (up, degraded, or with its API down)."""
    try:
        return json.loads(text).get("state") not in (None, "down")
    except (ValueError, AttributeError):
        return False


def _status_text(state_dir: str | None) -> str:
    done = _run(["status", "--json", *_state_args(state_dir)], timeout=120)
    if not done.stdout.strip():  # `status` exits 1 when the testbed is not up, but still says so in JSON
        raise PlatformError(f"vm5k-testbed status failed: {_last_line(done.stderr)}")
    return done.stdout


def status(state_dir: str | None = None) -> TestbedInfo | None:
    """The running testbed, or None."""
    return parse_status(_status_text(state_dir))


def ensure_testbed(site: str | None, nodes: int, state_dir: str | None = None) -> TestbedInfo:
    """The running testbed, used as it is; started (with `nodes` nodes of `site`) when there is none, and
    restarted as it is (its nodes unchanged) when it is degraded."""
    text = _status_text(state_dir)
    info = parse_status(text)
    if info is not None and (info.state == "up" or not info.not_up):
        return info
    if info is not None or recorded(text):
        # `up` again restarts what is not running (dead nodes, its API) and keeps the testbed's nodes
        why = f"{', '.join(info.not_up)} not up" if info is not None else "its API is down"
        log.warning("the embedded testbed is degraded (%s): restarting it (vm5k-testbed up)", why)
        up = ["up", "--json"]
    else:
        spec = f"{site or DEFAULT_SITE}:{max(nodes, 1)}"
        log.info("starting the embedded testbed (vm5k-testbed up --site %s); the first time, this builds "
                 "its guest image and takes a few minutes", spec)
        up = ["up", "--site", spec, "--json"]
    done = _run([*up, *_state_args(state_dir)], timeout=UP_TIMEOUT)
    if done.returncode != 0:
        raise PlatformError(f"could not start the testbed: {_last_line(done.stderr or done.stdout)}")
    info = status(state_dir)
    if info is None:
        raise PlatformError("the testbed started but does not report itself up (vm5k-testbed status --json)")
    return info


def testbed_size(request: Request) -> tuple[str | None, int]:
    """The site and node count to start the testbed with, from ``-r`` (the first site it names)."""
    for element in request.resources:
        if element.name in GRID5000_SITES:
            return element.name, max(element.count or DEFAULT_NODES, 1)
    return None, DEFAULT_NODES


class TestbedKind:
    """`vm5k.platforms.PlatformKind` of the embedded testbed: the default when nothing else applies. Its
    runs use the Grid'5000 platform on the testbed's API, and record its state folder, since the API gets
    a new port whenever the testbed starts again."""

    name = "testbed"

    def applies(self, request: Request) -> bool:
        return True

    def validate(self, request: Request) -> None:
        """Nothing to check beyond the request's own rules."""

    def prepare(self, request: Request) -> Access:
        site, nodes = testbed_size(request)
        info = ensure_testbed(site, nodes)
        log.info("platform: testbed (the embedded Grid'5000: API %s, nodes through %s)", info.api,
                 info.ssh_config)
        return Access(api=info.api, ssh_config=info.ssh_config, testbed_state=info.state_dir,
                      image=info.image)

    def reach_again(self, access: Access, api: str | None, ssh_config: str | None) -> Access:
        if api:
            return replace(access, api=api, ssh_config=ssh_config or access.ssh_config)
        info = status(access.testbed_state)
        if info is None:
            raise UsageError(f"the testbed of this run ({access.testbed_state}) is not up: start it again "
                             f"(vm5k-testbed up --state {access.testbed_state}) or give --api")
        if info.not_up:  # reached as it is: what vm5k cannot reach on a dead node, it reports
            log.warning("the testbed of this run is degraded: %s not up", ", ".join(info.not_up))
        return replace(access, api=info.api, ssh_config=ssh_config or info.ssh_config)

    def build(self, access: Access, services: Services) -> Platform:
        from vm5k.platforms.grid5000.platform import Grid5000Platform

        return Grid5000Platform(access.api, name=self.name, ssh=services.ssh, public_key=services.public_key,
                                progress=services.progress, checkpoint=services.checkpoint,
                                sleep=services.sleep)

    def hardware(self, request: Request) -> list[Host]:
        from vm5k.platforms.grid5000.platform import Grid5000Platform

        site, nodes = testbed_size(request)
        return Grid5000Platform(ensure_testbed(site, nodes).api, name=self.name).hardware(request)


KIND = TestbedKind()
