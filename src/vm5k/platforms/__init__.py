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

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from vm5k.errors import UsageError

if TYPE_CHECKING:
    from vm5k.request import Request
    from vm5k.topology import Topology

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


__all__ = ["STEPS", "Platform", "ProgressCallback", "ProgressItem", "ProgressReport", "make_platform"]
