"""When each host and VM of a run went through its phases: the times recorded, their rows, their picture.

Why: the run record keeps each step's duration, which says how long the hosts step took but not which host
held it up, nor how the VMs' boots spread over the VMs step. So the steps stamp wall-clock times (epoch
seconds, to 0.01 s, on the machine vm5k runs on) where things happen, into ``extra["times"]`` of the host or
VM, which topology.json keeps like every extra field. This module is the one owner of that key and of the
event names; `timeline_of` turns a topology into ordered rows (pure), `plot_timeline` draws them.

Host events, in pairs (a phase is drawn from its first event to its second):

- ``deploy_started``/``deployed``: Kadeploy (Grid'5000 platform): submitted, seen finished (OK or KO);
- ``setup_started``/``set_up``: the hosts step: its start, the host recorded ready or KO;
- ``image_started``/``image_ready``: the VM images' distribution: started, a verified copy on the host.

VM events: ``created`` (disk, seed and domain made), ``started`` (libvirt started it), ``answered`` (SSH
login with the run's key). A later occurrence replaces an earlier one (a recreated VM, a ``--start``):
the times tell the attempt that counts. A host or VM with no times (not reached, or a run made before they
were recorded) has rows without times, drawn as such.

>>> from vm5k.topology import Host, Topology, VM
>>> topo = Topology()
>>> host = topo.add_host("rennes", "paravance", Host("paravance-1"))
>>> topo.place(VM("vm-1", state="OK"), "paravance-1")
>>> stamp(host, SETUP_STARTED, 100.0); stamp(host, SET_UP, 130.5)
>>> stamp(topo.vm("vm-1"), STARTED, 131.0); stamp(topo.vm("vm-1"), ANSWERED, 140.25)
>>> rows = timeline_of(topo)
>>> rows.start, rows.end, [(p.name, p.start, p.end) for p in rows.hosts[0].phases]
(100.0, 140.25, [('set-up', 100.0, 130.5)])
>>> rows.hosts[0].vms[0].boot_seconds
9.25
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vm5k.topology import VM, VM_KO, VM_OK, Host, Topology, natural_key

TIMES_KEY = "times"

DEPLOY_STARTED, DEPLOYED = "deploy_started", "deployed"
SETUP_STARTED, SET_UP = "setup_started", "set_up"
IMAGE_STARTED, IMAGE_READY = "image_started", "image_ready"
#: a host's phases: (name shown, the event that starts it, the event that ends it)
HOST_PHASES = (("deploy", DEPLOY_STARTED, DEPLOYED), ("set-up", SETUP_STARTED, SET_UP),
               ("image", IMAGE_STARTED, IMAGE_READY))
CREATED, STARTED, ANSWERED = "created", "started", "answered"
VM_EVENTS = (CREATED, STARTED, ANSWERED)


def stamp(item: Host | VM, event: str, when: float | None = None) -> None:
    """Record that `event` happened to this host or VM now (or at `when`, epoch seconds), to 0.01 s."""
    times = item.extra.get(TIMES_KEY)
    if not isinstance(times, dict):
        times = item.extra[TIMES_KEY] = {}
    times[event] = round(time.time() if when is None else when, 2)


def times_of(item: Host | VM) -> dict[str, float]:
    """The times recorded for a host or VM, event → epoch seconds; anything malformed (a hand-edited
    topology.json) is left out rather than trusted.

    >>> times_of(VM("vm-1", extra={"times": {"started": 12.5, "answered": "soon"}}))
    {'started': 12.5}
    """
    times = item.extra.get(TIMES_KEY)
    if not isinstance(times, dict):
        return {}
    return {str(event): float(value) for event, value in times.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)}


@dataclass(frozen=True)
class Phase:
    """One phase of a host: `end` is None when it began and was never seen ending."""

    name: str
    start: float
    end: float | None


@dataclass(frozen=True)
class VmRow:
    """A VM's recorded times (None: not recorded) and its state."""

    id: str
    state: str
    created: float | None = None
    started: float | None = None
    answered: float | None = None

    @property
    def timed(self) -> bool:
        return any(value is not None for value in (self.created, self.started, self.answered))

    @property
    def boot_seconds(self) -> float | None:
        """From its start to its SSH login, when both are recorded."""
        if self.started is None or self.answered is None:
            return None
        return round(self.answered - self.started, 2)


@dataclass(frozen=True)
class HostRow:
    """A host's phases, in `HOST_PHASES` order, and its VMs, first started first (untimed ones last)."""

    id: str
    site: str
    cluster: str
    state: str
    phases: tuple[Phase, ...]
    vms: tuple[VmRow, ...]


@dataclass(frozen=True)
class Timeline:
    """The rows of a run: hosts by site and cluster as the topology lists them, VMs not placed apart;
    `start`/`end` are the first and last times recorded (None when there are none)."""

    hosts: tuple[HostRow, ...]
    unplaced: tuple[VmRow, ...]
    start: float | None
    end: float | None

    @property
    def vms(self) -> list[VmRow]:
        return [vm for host in self.hosts for vm in host.vms] + list(self.unplaced)


def _vm_row(vm: VM) -> VmRow:
    times = times_of(vm)
    return VmRow(vm.id, vm.state, times.get(CREATED), times.get(STARTED), times.get(ANSWERED))


def _vm_order(row: VmRow) -> tuple[Any, ...]:
    first = row.started if row.started is not None else row.created
    return (first is None, first or 0.0, natural_key(row.id))


def timeline_of(topo: Topology) -> Timeline:
    """The run's timeline rows from the times its hosts and VMs recorded (see the module docstring)."""
    hosts: list[HostRow] = []
    items: list[Host | VM] = [*topo.hosts(), *topo.vms()]
    seen = [when for item in items for when in times_of(item).values()]
    for site, cluster, host in topo.locations():
        times = times_of(host)
        phases = tuple(Phase(name, times[begin], times.get(end)) for name, begin, end in HOST_PHASES
                       if begin in times)
        vms = tuple(sorted((_vm_row(vm) for vm in host.vms), key=_vm_order))
        hosts.append(HostRow(host.id, site.id, cluster.id, host.state, phases, vms))
    unplaced = tuple(sorted((_vm_row(vm) for vm in topo.unplaced), key=_vm_order))
    return Timeline(tuple(hosts), unplaced, min(seen, default=None), max(seen, default=None))


# -- the picture ---------------------------------------------------------------------------------------------

PHASE_COLOURS = {"deploy": "#8c6d31", "set-up": "#1f77b4", "image": "#17becf"}
BOOT_COLOURS = {VM_OK: "#2ca02c", VM_KO: "#d62728"}
OTHER_COLOUR = "#999999"
ROW_POINTS_MAX = 14.0  # a host's row, in points: enough for its label and a few VM lanes
FIGURE_ROWS_INCHES = 22.0  # the host panel never grows beyond this: past it, rows get thinner
LABEL_POINTS = 6.5  # a host label needs a row at least this high (else clusters are labelled); a VM's too
VM_LABELS_MAX = 60  # VMs are named on their lanes in fleets up to this size, when the lanes are high enough


def counts_over_time(rows: Timeline, event: str) -> tuple[list[float], list[int]]:
    """Seconds since the timeline's start at which VMs reached `event`, and how many had by then: the
    cumulative curve of the top panel.

    >>> rows = Timeline((), (VmRow("a", "OK", answered=5.0), VmRow("b", "OK", answered=3.0)), 1.0, 5.0)
    >>> counts_over_time(rows, ANSWERED)
    ([2.0, 4.0], [1, 2])
    """
    start = rows.start or 0.0
    values = sorted(getattr(vm, event) - start for vm in rows.vms if getattr(vm, event) is not None)
    return [round(value, 2) for value in values], list(range(1, len(values) + 1))


def plot_timeline(topo: Topology, outdir: str | Path, name: str = "timeline") -> list[Path]:
    """Draw the run's timeline into ``<outdir>/<name>.png`` and ``.svg``; return both paths.

    Top: how many VMs were created, started and answering over time. Below: one row per host (grouped by
    site and cluster) with its phases as bars and its VMs as thin lanes from start to SSH login (to the
    end of the timeline, red, for a VM that never answered). Thousands of VMs stay one collection of
    rectangles per colour, so the picture renders in seconds.
    """
    from vm5k.plot import pyplot, save_figure  # here: vm5k.plot's write_pictures imports this module

    plt = pyplot()
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    rows = timeline_of(topo)
    n_hosts = max(len(rows.hosts), 1)
    row_points = min(ROW_POINTS_MAX, FIGURE_ROWS_INCHES * 72 / n_hosts)
    panel = max(1.5, n_hosts * row_points / 72)  # inches, as every figure below
    title, top, gap, bottom = 0.55, 2.0, 0.25, 1.0
    height = title + top + gap + panel + bottom
    figure = plt.figure(figsize=(14, height))
    counts = figure.add_axes((0.17, (bottom + panel + gap) / height, 0.8, top / height))
    lanes = figure.add_axes((0.17, bottom / height, 0.8, panel / height), sharex=counts)
    start = rows.start or 0.0
    span = max((rows.end or start) - start, 1.0)
    all_vms = rows.vms
    untimed = sum(1 for vm in all_vms if not vm.timed)
    ok = sum(1 for vm in all_vms if vm.state == VM_OK)
    ko = sum(1 for vm in all_vms if vm.state == VM_KO)
    figure.suptitle(f"vm5k run timeline: {len(rows.hosts)} hosts, {len(all_vms)} VMs ({ok} OK, {ko} KO)"
                    + (f", {untimed} VMs without recorded times" if untimed else ""), fontsize=11,
                    y=1 - 0.12 / height, va="top")  # inside the title's band, whatever the figure's height
    for event, colour in ((CREATED, "#aec7e8"), (STARTED, "#1f77b4"), (ANSWERED, BOOT_COLOURS[VM_OK])):
        xs, ys = counts_over_time(rows, event)
        counts.step([0.0, *xs], [0, *ys], where="post", color=colour, label=f"VMs {event}")
    counts.set_ylabel("VMs")
    counts.legend(loc="center left", fontsize=8)
    counts.grid(alpha=0.3)
    counts.tick_params(labelbottom=False)
    if rows.start is None:
        counts.text(0.5, 0.5, "no times recorded (a plan, or a run made before vm5k recorded them)",
                    transform=counts.transAxes, ha="center", va="center")

    boxes: dict[str, list[list[tuple[float, float]]]] = {}

    def bar(colour: str, x0: float, x1: float, y0: float, y1: float) -> None:
        x0, x1 = x0 - start, max(x1 - start, x0 - start + span / 2000)  # never thinner than a pixel or so
        boxes.setdefault(colour, []).append([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])

    end = rows.end or start

    def lane_points(share: float) -> float:
        return share * 0.8 * panel * 72 / n_hosts

    for index, host in enumerate(rows.hosts):
        top = n_hosts - index  # first host at the top; the row spans [top - 1, top]
        for phase in host.phases:
            y = top - 0.08 - 0.14 * (phase.name == "image")  # the image copy overlaps the set-up: below it
            phase_end = phase.end if phase.end is not None else end
            bar(PHASE_COLOURS[phase.name], phase.start, phase_end, y - 0.12, y)
        timed = [vm for vm in host.vms if vm.timed]
        lane = 0.6 / max(len(timed), 1)
        for k, vm in enumerate(timed):
            y1 = top - 0.36 - k * lane
            y0 = y1 - lane * 0.8
            if vm.created is not None and vm.started is not None and vm.started > vm.created:
                bar("#dddddd", vm.created, vm.started, y0, y1)
            first = vm.started if vm.started is not None else vm.created
            assert first is not None
            last = vm.answered if vm.answered is not None else end
            if vm.answered is not None:
                bar(BOOT_COLOURS[VM_OK] if vm.state == VM_OK else OTHER_COLOUR, first, last, y0, y1)
            else:
                bar(BOOT_COLOURS[VM_KO] if vm.state == VM_KO else OTHER_COLOUR, first, last, y0, y1)
            if lane_points(lane) >= LABEL_POINTS and len(all_vms) <= VM_LABELS_MAX:
                lanes.text(last - start + span / 200, (y0 + y1) / 2, vm.id, fontsize=6, va="center")
    for colour, verts in boxes.items():
        lanes.add_collection(PolyCollection(verts, facecolors=colour, edgecolors="none"))
    lanes.set_xlim(-span * 0.01, span * 1.06)
    lanes.set_ylim(0, n_hosts)
    lanes.set_xlabel("seconds since the first recorded time"
                     + (time.strftime(" (%Y-%m-%d %H:%M:%S UTC)", time.gmtime(start)) if rows.start else ""))
    _label_rows(lanes, rows, n_hosts, row_points)
    legend = [Patch(color=colour, label=name) for name, colour in PHASE_COLOURS.items()]
    legend += [Patch(color="#dddddd", label="VM created → started"),
               Patch(color=BOOT_COLOURS[VM_OK], label="VM started → answered"),
               Patch(color=BOOT_COLOURS[VM_KO], label="VM KO: never answered"),
               Patch(color=OTHER_COLOUR, label="VM other state")]
    figure.legend(handles=legend, loc="lower center", bbox_to_anchor=(0.57, 0.05 / height), ncol=7,
                  fontsize=8, frameon=False)
    return save_figure(figure, outdir, name)


def _label_rows(axes: Any, rows: Timeline, n_hosts: int, row_points: float) -> None:
    """Host names when a row is high enough for one, else one label per cluster with its host count;
    lines between clusters either way."""
    groups: list[tuple[str, str, int, int]] = []  # site, cluster, first index, count
    for index, host in enumerate(rows.hosts):
        if groups and groups[-1][:2] == (host.site, host.cluster):
            site, cluster, first, count = groups[-1]
            groups[-1] = (site, cluster, first, count + 1)
        else:
            groups.append((host.site, host.cluster, index, 1))
    for _, _, first, _ in groups[1:]:
        axes.axhline(n_hosts - first, color="#cccccc", linewidth=0.5)
    if row_points >= LABEL_POINTS:
        axes.set_yticks([n_hosts - index - 0.5 for index in range(len(rows.hosts))])
        axes.set_yticklabels([host.id.split(".")[0] + ("" if _timed(host) else " (no times)")
                              for host in rows.hosts], fontsize=min(8.0, row_points * 0.75))
    else:
        axes.set_yticks([n_hosts - first - count / 2 for _, _, first, count in groups])
        axes.set_yticklabels([f"{site}/{cluster} ({count} hosts)" for site, cluster, _, count in groups],
                             fontsize=7)
    axes.tick_params(axis="y", length=0)


def _timed(host: HostRow) -> bool:
    return bool(host.phases) or any(vm.timed for vm in host.vms)
