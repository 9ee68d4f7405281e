"""What a run records about itself in ``topology.meta["run"]``: enough for ``--resume`` and ``--destroy``.

The topology is the one document of a run (see docs/architecture.md); the platforms keep their own part of
``meta`` (jobs, deployments, the address pool), and this module keeps the workflow's: the run id, the
platform and how to reach it (API URL, SSH config — never credentials), the hypervisor's settings, the
options the later steps need (program, plot), the steps done with their durations, and the run's status.
The run id is also ``meta["run_id"]``, the key the platforms read to name their jobs.

>>> from vm5k.topology import Topology
>>> topo = Topology()
>>> record = RunRecord(run_id="20261125-ab12", platform="testbed", start_dir="/home/alice")
>>> record.step_done("topology", 1.5)
>>> RunRecord.load(record.save(topo)) == record
True
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vm5k import outdir
from vm5k.errors import UsageError
from vm5k.placement import PlacementPolicy
from vm5k.platforms import Access
from vm5k.topology import Topology

RUN_KEY = "run"
RUN_ID_KEY = "run_id"  # shared with the platforms (they name their jobs vm5k-<run id>)

RUNNING, INTERRUPTED, FAILED, DONE, DESTROYED = "running", "interrupted", "failed", "done", "destroyed"


def new_run_id() -> str:
    """A short, unique, name-safe run id: ``YYYYmmddHHMMSS-<6 hex>`` (UTC), sortable by start time."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


@dataclass
class RunRecord:
    """The workflow's part of the run's state (see the module docstring)."""

    run_id: str
    platform: str
    start_dir: str
    api: str | None = None
    ssh_config: str | None = None
    testbed_state: str | None = None
    identity_files: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)  # the hosts platform's hosts (--hosts)
    vm_network: dict[str, str] | None = None  # the hosts platform's VM network (--vm-network)
    gateway: bool = False  # hosts are reached through an access gateway: fewer parallel connections
    placement: PlacementPolicy | None = None  # to place VMs again the way the user asked
    hypervisor: dict[str, Any] = field(default_factory=dict)  # RunSettings.to_dict()
    program: str | None = None
    plot: bool = False
    dry_run: bool = False
    steps: dict[str, float] = field(default_factory=dict)  # steps done -> seconds they took
    reached: list[str] = field(default_factory=list)  # steps begun (done or not): what destroy must undo
    reservation_ended: bool = False  # vm5k ended it (destroy): hosts left to clean are still contacted
    status: str = RUNNING
    message: str | None = None  # why it stopped, when it did not end well
    holder: str | None = None  # the last operation that held the run: what, by which pid, where, since

    @property
    def access(self) -> Access:
        """How the run reaches its platform (the fields the platform's kind chose: `set_access`)."""
        return Access(api=self.api, ssh_config=self.ssh_config, testbed_state=self.testbed_state,
                      hosts=tuple(self.hosts), vm_network=self.vm_network, gateway=self.gateway)

    def set_access(self, access: Access) -> None:
        self.api, self.ssh_config, self.testbed_state = access.api, access.ssh_config, access.testbed_state
        self.hosts, self.vm_network, self.gateway = list(access.hosts), access.vm_network, access.gateway

    @property
    def planned(self) -> bool:
        """The plan is recorded: from here on a run may own things outside (a reservation, hosts, VMs)."""
        return "topology" in self.steps

    @property
    def may_own_resources(self) -> bool:
        """True while the run may hold a reservation, VMs or files on hosts: its outdir is then the only
        way to find and remove them, so it must never be overwritten by another run."""
        began_outside = any(step != "topology" for step in self.reached)
        return not self.dry_run and self.status != DESTROYED and began_outside

    def step_begun(self, name: str) -> None:
        if name not in self.reached:
            self.reached.append(name)

    def step_done(self, name: str, seconds: float) -> None:
        self.steps[name] = round(seconds, 3)

    def save(self, topology: Topology) -> Topology:
        data = asdict(self)
        data["placement"] = self.placement.to_dict() if self.placement is not None else None
        topology.meta[RUN_KEY] = data
        topology.meta[RUN_ID_KEY] = self.run_id
        return topology

    @classmethod
    def load(cls, topology: Topology) -> RunRecord:
        data = topology.meta.get(RUN_KEY)
        if not isinstance(data, dict) or "run_id" not in data:
            raise UsageError("this outdir holds no vm5k run record (topology.json without its run)")
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        try:
            placement = known.get("placement")
            known["placement"] = PlacementPolicy.from_dict(placement) if placement else None
            return cls(**known)
        except TypeError as error:
            raise UsageError(f"the run record in topology.json is broken: {error}") from None


def check_outdir_reusable(folder: Path) -> None:
    """Refuse to start a run (a dry run included) in an outdir whose run may still own something.

    Why: topology.json is what ``--resume`` and ``--destroy`` read; overwriting it loses the reservation
    and the VMs of the run it described (they would run on, and nothing would know them). A dry run, a
    destroyed run, or a run stopped before it reserved anything holds nothing: its outdir can be reused.
    """
    if not (folder / outdir.STATE_FILE).exists():
        return
    try:
        previous = RunRecord.load(outdir.read_state(folder))
    except UsageError:
        return  # no run record: a file of the original's or a dry run from a file
    if previous.may_own_resources:
        raise UsageError(f"{folder} already holds run {previous.run_id} ({previous.status}): "
                         f"vm5k --resume {folder} continues it, vm5k --destroy {folder} removes it, "
                         "or choose another -o")
