"""The OAR job record: what a job asked for, what it holds, and where it is in its life.

Jobs are plain data so that they persist as JSON and render in the API's exact key order (`views.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: OAR states that still hold or will hold resources (they count for status and planning).
ACTIVE_STATES = frozenset(
    {
        "waiting",
        "hold",
        "tolaunch",
        "toerror",
        "toackreservation",
        "launching",
        "running",
        "suspended",
        "resuming",
        "finishing",
    }
)
FINAL_STATES = frozenset({"terminated", "error"})


@dataclass
class Job:
    uid: int
    site: str
    user: str
    resources: str
    walltime: int
    queue: str
    project: str
    types: list[str]
    command: str
    properties: str
    directory: str
    submitted_at: int
    name: str | None = None
    reservation: int | None = None  # the advance-reservation start asked for (epoch), if any
    scheduled_at: int = 0
    started_at: int = 0
    stopped_at: int = 0
    state: str = "waiting"
    message: str = ""
    exit_code: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)  # FQDNs, head node first
    cores: dict[str, int] = field(default_factory=dict)  # FQDN -> number of cores held
    vlans: list[str] = field(default_factory=list)
    subnets: list[str] = field(default_factory=list)
    final_state: str | None = None  # while `finishing`: the state it ends in once its nodes are rebooted
    command_seconds: int | None = None  # how long the command runs (`sleep N` shorter than the walltime)
    version: int = 0  # bumped on every change, so renderings can be cached

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def start(self) -> int:
        """When the job starts or started (`started_at`, else the predicted `scheduled_at`)."""
        return self.started_at or self.scheduled_at

    @property
    def end(self) -> int:
        return self.start + self.walltime

    @property
    def deploy(self) -> bool:
        return "deploy" in self.types

    def touch(self) -> None:
        self.version += 1

    def add_event(self, uid: int, created_at: int, kind: str, description: str) -> None:
        self.events.append({"uid": uid, "created_at": created_at, "type": kind, "description": description})
        self.touch()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("version")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        known = {name for name in cls.__dataclass_fields__ if name != "version"}
        return cls(**{key: value for key, value in data.items() if key in known})
