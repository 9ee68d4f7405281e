"""What the Grid'5000 platform keeps in the topology: ``--resume`` and ``--destroy`` need nothing else.

``topology.meta["grid5000"]`` holds the run's options (what the user asked, resolved), the plan, the OAR
jobs (ours, and those given with ``-j``), the Kadeploy runs and the hosts deployed. Platform-neutral keys
(the network step reads them, as for the ``hosts`` platform): ``meta["address_pool"]`` (the ranges, see
``vm5k.addresses``) and ``meta["service_address"]`` (an address of the pool kept for the run's DNS/DHCP).
``meta["run_id"]`` names the jobs (``vm5k-<run id>``). Never credentials: only the API URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from vm5k.placement import PlacementPolicy
from vm5k.platforms.grid5000.kadeploy import DEFAULT_ENVIRONMENT, DeploymentRecord, Environment
from vm5k.platforms.grid5000.oar import JobRecord
from vm5k.platforms.grid5000.planning import Plan
from vm5k.request import DEFAULT_WALLTIME, GRID5000, Element, JobRef, Request
from vm5k.runstate import RUN_ID_KEY, new_run_id
from vm5k.topology import Topology

META_KEY = "grid5000"


def run_id(topology: Topology) -> str:
    """The topology's run id, created (and recorded) when missing."""
    value = topology.meta.get(RUN_ID_KEY)
    if not isinstance(value, str) or not value:
        value = topology.meta[RUN_ID_KEY] = new_run_id()
    return value


def job_name(topology: Topology) -> str:
    return f"vm5k-{run_id(topology)}"


@dataclass(frozen=True)
class Options:
    """The user's choices that the platform's steps need, kept with the run (see `from_request`)."""

    resources: tuple[Element, ...] = (Element(GRID5000),)
    blacklist: tuple[str, ...] = ()
    jobs: tuple[JobRef, ...] = ()
    walltime: int | None = DEFAULT_WALLTIME
    kavlan: bool = False
    queue: str = "default"
    environment: Environment = field(default_factory=lambda: Environment(DEFAULT_ENVIRONMENT))
    forcedeploy: bool = False
    nodeploy: bool = False
    placement: PlacementPolicy = field(default_factory=PlacementPolicy)

    @classmethod
    def from_request(cls, request: Request, environment: Environment) -> Options:
        return cls(resources=tuple(request.resources), blacklist=tuple(request.blacklist),
                   jobs=tuple(request.jobs), walltime=request.walltime, kavlan=request.kavlan,
                   queue=request.queue, environment=environment, forcedeploy=request.forcedeploy,
                   nodeploy=request.nodeploy, placement=request.placement)

    def with_(self, **changes: Any) -> Options:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"resources": [[e.name, e.count] for e in self.resources], "blacklist": list(self.blacklist),
                "jobs": [[j.site, j.id] for j in self.jobs], "walltime": self.walltime, "kavlan": self.kavlan,
                "queue": self.queue, "environment": self.environment.to_dict(),
                "forcedeploy": self.forcedeploy, "nodeploy": self.nodeploy,
                **self.placement.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Options:
        return cls(tuple(Element(str(n), c) for n, c in data.get("resources") or [[GRID5000, None]]),
                   tuple(str(b) for b in data.get("blacklist") or ()),
                   tuple(JobRef(s, int(i)) for s, i in data.get("jobs") or ()),
                   data.get("walltime"), bool(data.get("kavlan")), str(data.get("queue") or "default"),
                   Environment.from_dict(data.get("environment") or {"name": DEFAULT_ENVIRONMENT}),
                   bool(data.get("forcedeploy")), bool(data.get("nodeploy")),
                   PlacementPolicy.from_dict(data))


@dataclass
class Grid5000Record:
    """The platform's part of ``topology.meta`` (see the module docstring)."""

    api: str | None = None
    options: Options = field(default_factory=Options)
    plan: Plan | None = None
    jobs: list[JobRecord] = field(default_factory=list)
    deployments: list[DeploymentRecord] = field(default_factory=list)
    deployed: list[str] = field(default_factory=list)  # hosts deployed (or found deployed) by this run
    vlan: str | None = None
    destroyed: bool = False

    @classmethod
    def load(cls, topology: Topology) -> Grid5000Record:
        data = topology.meta.get(META_KEY) or {}
        plan = data.get("plan")
        return cls(data.get("api"), Options.from_dict(data.get("options") or {}),
                   Plan.from_dict(plan) if plan else None,
                   [JobRecord.from_dict(j) for j in data.get("jobs") or ()],
                   [DeploymentRecord.from_dict(d) for d in data.get("deployments") or ()],
                   [str(h) for h in data.get("deployed") or ()], data.get("vlan"),
                   bool(data.get("destroyed")))

    def save(self, topology: Topology) -> Topology:
        topology.meta[META_KEY] = {
            "api": self.api, "options": self.options.to_dict(),
            "plan": self.plan.to_dict() if self.plan else None,
            "jobs": [j.to_dict() for j in self.jobs],
            "deployments": [d.to_dict() for d in self.deployments],
            "deployed": list(self.deployed), "vlan": self.vlan, "destroyed": self.destroyed,
        }
        return topology

    @property
    def sites(self) -> list[str]:
        """Every site the run planned on or holds jobs on."""
        names = [job.site for job in self.jobs]
        if self.plan is not None:
            names += list(self.plan.sites)
        return list(dict.fromkeys(names))
