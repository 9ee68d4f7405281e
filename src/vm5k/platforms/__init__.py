"""Where hosts come from: one face for every platform, so that the workflow treats them alike.

A platform is a set of steps. Each takes the topology and returns it richer (a new object; the one passed
in is left untouched, so a failed step leaves a true record), and each is re-entrant: it reads what the
topology already records (``meta``) and skips what is done, so a resumed run calls the same steps again.

======================  =================================================================================
``plan(topo, request)``  choose the hosts and the start time; predicted hosts and VM placement in `topo`
``plan_text(topo)``      what ``--dry-run`` prints: start time, the exact requests, the placement
``reserve(topo)``        reserve the plan (or take the ``-j`` jobs); records the jobs
``wait_running(topo)``   wait until the reservation runs, reporting progress
``resources(topo)``      the reserved hosts (with their capacity), VMs placed, the address pool and pairs
``deploy_hosts(topo)``   install the hosts' system (KO hosts excluded, their VMs placed elsewhere)
``reservation_over(t)``  why the run's reservation has ended (asked of the API), or None while it holds
``destroy(topo)``        give everything back (kill the jobs the run created)
======================  =================================================================================

The workflow calls them in that order (``plan`` then ``plan_text`` only, for a dry run), saving the
topology after each. Long steps report `ProgressReport` through the callback given to the platform; the
platform also logs it. `make_platform` builds a platform by name: ``grid5000`` (a Grid'5000 REST API,
real or the testbed's: same code), ``testbed`` (the same, named so in messages), ``hosts`` (SSH hosts you
already have, ``vm5k.platforms.hosts``).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from vm5k.errors import UsageError

if TYPE_CHECKING:
    from vm5k.placement import PlacementPolicy
    from vm5k.remote import SshSettings
    from vm5k.request import Request
    from vm5k.topology import Host, Topology

STEPS = ("plan", "reserve", "wait_running", "resources", "deploy_hosts")


@dataclass(frozen=True)
class ProgressItem:
    """One thing being waited for: a job or a deployment, its state, start (epoch) and seconds left."""

    name: str
    state: str
    start: int | None = None
    left: int | None = None


@dataclass(frozen=True)
class ProgressReport:
    """A progress report of a step: a line for humans and the items (for a live table)."""

    step: str
    message: str
    items: tuple[ProgressItem, ...] = ()


ProgressCallback = Callable[[ProgressReport], None]


@runtime_checkable
class Platform(Protocol):
    """The steps every platform offers (see the module docstring)."""

    name: str

    def plan(self, topology: Topology, request: Request | None = None) -> Topology: ...

    def plan_text(self, topology: Topology) -> str: ...

    def reserve(self, topology: Topology) -> Topology: ...

    def wait_running(self, topology: Topology) -> Topology: ...

    def resources(self, topology: Topology) -> Topology: ...

    def deploy_hosts(self, topology: Topology) -> Topology: ...

    def reservation_over(self, topology: Topology) -> str | None: ...

    def destroy(self, topology: Topology) -> Topology: ...


@dataclass(frozen=True)
class Access:
    """How a run reaches its platform: found when the run starts (`PlatformKind.prepare`), recorded with the
    run, and found again by every later operation (`PlatformKind.reach_again`). Never credentials."""

    api: str | None = None  # a Grid'5000 REST API (the real one, or the testbed's)
    ssh_config: str | None = None  # the OpenSSH config that reaches the hosts (gateway, testbed)
    testbed_state: str | None = None  # the testbed's state folder: where it says where it is now
    hosts: tuple[str, ...] = ()  # --hosts
    vm_network: dict[str, str] | None = None  # --vm-network
    gateway: bool = False  # every connection goes through an access gateway: fewer parallel connections
    image: str | None = None  # the platform's own default VM image (the testbed's), if any


@dataclass(frozen=True)
class Services:
    """What the workflow gives every platform it builds: SSH settings, the run's public key, callbacks."""

    ssh: SshSettings | None = None
    public_key: str | None = None
    progress: ProgressCallback | None = None
    checkpoint: Callable[[Topology], object] | None = None
    sleep: Callable[[float], None] = time.sleep
    placement: PlacementPolicy | None = None


class PlatformKind(Protocol):
    """One kind of platform: everything the workflow knows about it goes through here, so that a new
    platform is one module (with a ``KIND`` of this protocol) and one line of `KINDS`."""

    name: str

    def applies(self, request: Request) -> bool:
        """Whether a request that names no platform goes to this one (asked in the order of `KINDS`)."""
        ...

    def validate(self, request: Request) -> None:
        """Refuse (`UsageError`) what the request says about this platform, before anything is made."""
        ...

    def prepare(self, request: Request) -> Access:
        """Find (or start) the platform for a new run, say which it is (a log line), and how to reach it."""
        ...

    def reach_again(self, access: Access, api: str | None, ssh_config: str | None) -> Access:
        """Where a recorded run's platform is now; `api`/`ssh_config` given again win."""
        ...

    def build(self, access: Access, services: Services) -> Platform:
        """The platform whose steps the run uses."""
        ...

    def hardware(self, request: Request) -> list[Host]:
        """The hosts ``vm5k_max_vms -j/-r`` counts on, with their hardware."""
        ...


#: platform name → the module whose ``KIND`` it is; a request naming no platform goes to the first that
#: applies (``hosts`` with ``--hosts``, ``grid5000`` when an API is configured, else the ``testbed``)
KINDS = {"hosts": "vm5k.platforms.hosts", "grid5000": "vm5k.platforms.grid5000.kind",
         "testbed": "vm5k.platforms.testbed"}


def platform_kind(name: str) -> PlatformKind:
    """The kind of platform called `name`.

    >>> platform_kind("openstack")
    Traceback (most recent call last):
    ...
    vm5k.errors.UsageError: unknown platform 'openstack': choose from hosts, grid5000, testbed
    """
    module = KINDS.get(name)
    if module is None:
        raise UsageError(f"unknown platform {name!r}: choose from {', '.join(KINDS)}")
    return cast(PlatformKind, importlib.import_module(module).KIND)


def choose_platform(request: Request) -> str:
    """``--platform``, else the first kind of `KINDS` that applies to the request."""
    if request.platform:
        return request.platform
    return next(name for name in KINDS if platform_kind(name).applies(request))


def make_platform(name: str, **settings: Any) -> Platform:
    """A platform by name; `settings` go to its constructor (e.g. ``api``, ``ssh``, ``public_key``). The
    ``hosts`` platform takes the settings it knows (``hosts``, ``network``, ``ssh``, ``progress``...) and
    ignores the others (it has no key to install, nothing to checkpoint).

    >>> make_platform("openstack")
    Traceback (most recent call last):
    ...
    vm5k.errors.UsageError: unknown platform 'openstack': choose from grid5000, testbed, hosts
    """
    if name in ("grid5000", "testbed"):
        from vm5k.platforms.grid5000 import Grid5000Platform

        return Grid5000Platform(name=name, **settings)
    if name == "hosts":
        import dataclasses

        from vm5k.platforms.hosts import HostsPlatform

        accepted = {f.name for f in dataclasses.fields(HostsPlatform)}
        missing = [key for key in ("hosts", "network") if key not in settings]
        if missing:
            raise UsageError(f"the hosts platform needs {' and '.join(missing)}")
        return HostsPlatform(**{key: value for key, value in settings.items() if key in accepted})
    raise UsageError(f"unknown platform {name!r}: choose from grid5000, testbed, hosts")


__all__ = ["KINDS", "STEPS", "Access", "Platform", "PlatformKind", "ProgressCallback", "ProgressItem",
           "ProgressReport", "Services", "choose_platform", "make_platform", "platform_kind"]
