"""Where ``--plot`` puts every node and label of the topology picture: pure geometry, checked without drawing.

Why a layout of its own: a radial tree with one circle per level puts hundreds of hosts on one ring and
their labels over each other. This one is a sunburst: the grid is a disc at the centre; sites, clusters
and hosts are arcs on rings around it, each within its parent's angle; VMs are small marks outside their
host's arc, a few rows deep. The angle of a site, cluster or host is proportional to the VM slots it holds
(a host without VMs still gets one), with a gap between clusters and a wider one between sites, so a site
with most of the VMs gets most of the circle.

Labels are placed only where they fit, and the rules are decided here, on boxes, not left to the renderer:

- the grid's name inside its disc; a site's or a cluster's inside its arc, along it when it fits, else
  across it, else not at all (the picture's note counts them);
- hosts: rotated radially just outside the host ring when every neighbour leaves room for a line of text
  (the rings grow, up to a bound, to make room); otherwise each cluster's label carries its host count;
- VMs: named radially outside their mark in small fleets (one row of marks), never beyond `VM_LABELS_MAX`.

Units are typographic points of the figure at its natural size (the drawing maps one data unit to one
point), so text sizes and mark sizes are known here; text widths are estimated generously (`CHAR_WIDTH`).

>>> from vm5k.topology import Topology, Host, VM
>>> topo = Topology()
>>> _ = topo.add_host("rennes", "paravance", Host("paravance-1.rennes.grid5000.fr"))
>>> for n in range(1, 5):
...     topo.place(VM(f"vm-{n}"), "paravance-1.rennes.grid5000.fr")
>>> layout = layout_topology(topo)
>>> layout.positions["grid"], layout.host_labels, layout.vm_labels
((0.0, 0.0), True, True)
>>> sorted(label.text for label in layout.labels)
['grid5000', 'paravance', 'paravance-1', 'rennes', 'vm-1', 'vm-2', 'vm-3', 'vm-4']
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from vm5k.topology import Topology

FONT = 7.0  # points: every label
SMALL_FONT = 5.5  # a site's or cluster's name too long for its arc at FONT tries this size
CHAR_WIDTH = 0.66  # of the font size: wider than DejaVu Sans' digits and lower case, so estimates hold
TEXT_HEIGHT = FONT * 1.3
PAD = 2.0  # between a label and anything else
GRID_RADIUS = 24.0
HOST_BAND = 8.0  # thickness of the host ring
VM_MARK = 4.0  # side of the square a VM's mark fits in
BIG_VM_MARK = 8.0  # the same in fleets small enough to name their VMs
MARK_GAP = 1.5  # between VM marks, along a row and across rows
MIN_HOST_RADIUS = 150.0  # small fleets: room for the inner rings' labels
GROWTH_LIMIT = 1.6  # the host ring may grow this much beyond the VMs' need to make room for host labels
VM_LABELS_MAX = 80  # VMs are named only in fleets up to this size (and in one row)
SITE_GAP = math.radians(3.0)
CLUSTER_GAP = math.radians(1.0)


def text_width(text: str, size: float = FONT) -> float:
    """A generous estimate of a text's width in points."""
    return len(text) * size * CHAR_WIDTH


@dataclass(frozen=True)
class Node:
    """One node of the picture: the grid's disc (`radius`), an arc between `inner` and `outer` from angle
    `start` to `end` (radians, counter-clockwise), or a VM's square mark of side `size` at `x`, `y`."""

    key: str  # "grid", "site:<id>", "cluster:<site>/<id>", "host:<id>", "vm:<id>"
    level: str  # grid, site, cluster, host, vm
    state: str | None
    x: float = 0.0
    y: float = 0.0
    radius: float = 0.0
    inner: float = 0.0
    outer: float = 0.0
    start: float = 0.0
    end: float = 0.0
    size: float = 0.0

    @property
    def kind(self) -> str:
        return {"grid": "disc", "vm": "mark"}.get(self.level, "arc")


@dataclass(frozen=True)
class Label:
    """A text centred at `x`, `y`, turned by `rotation` degrees; `corners` is its box (4 points)."""

    text: str
    owner: str  # the key of the node it names (it may lie on that node, never on another)
    x: float
    y: float
    rotation: float
    corners: tuple[tuple[float, float], ...]
    size: float = FONT


@dataclass
class Layout:
    """Every node and label; `extent` is the half-width of the square that holds them all."""

    nodes: list[Node] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    positions: dict[str, tuple[float, float]] = field(default_factory=dict)
    extent: float = 0.0
    host_labels: bool = False
    vm_labels: bool = False
    vm_mark: float = VM_MARK
    unnamed: list[str] = field(default_factory=list)  # sites and clusters too narrow for their name


def _box(cx: float, cy: float, along: float, across: float, theta: float) -> tuple[tuple[float, float], ...]:
    """The corners of a `along` × `across` rectangle centred at (cx, cy), its length along angle `theta`."""
    ux, uy = math.cos(theta), math.sin(theta)
    vx, vy = -uy, ux
    a, b = along / 2, across / 2
    return tuple((cx + sa * a * ux + sb * b * vx, cy + sa * a * uy + sb * b * vy)
                 for sa, sb in ((-1, -1), (1, -1), (1, 1), (-1, 1)))


def _readable(theta: float) -> float:
    """Degrees for text along angle `theta`, turned half a circle where it would read upside down."""
    degrees = math.degrees(theta) % 360
    return degrees - 180 if 90 < degrees <= 270 else degrees


def radial_label(text: str, owner: str, theta: float, r0: float, size: float = FONT) -> Label:
    """A label along the ray at `theta`, from radius `r0` outwards."""
    width = text_width(text, size)
    r = r0 + width / 2
    cx, cy = r * math.cos(theta), r * math.sin(theta)
    return Label(text, owner, cx, cy, _readable(theta), _box(cx, cy, width, size * 1.3, theta), size)


def radial_fits(width: float, theta_span: float, inner: float, outer: float, size: float = FONT) -> bool:
    """A radial label of `width` fits in the band [inner, outer] of an arc spanning `theta_span`."""
    r0 = inner + PAD
    height = size * 1.3
    room_along = math.hypot(r0 + width, height / 2) <= outer - PAD
    room_across = r0 * math.tan(min(theta_span, 3.0) / 2) >= height / 2 + PAD
    return room_along and room_across


def tangential_radius(width: float, theta_span: float, inner: float, outer: float,
                      size: float = FONT) -> float | None:
    """The radius at which a label of `width` along the arc fits in its band, or None."""
    height = size * 1.3
    lowest = inner + PAD + height / 2
    middle = (inner + outer) / 2
    candidates = sorted((lowest + step * (outer - inner) / 12 for step in range(12)),
                        key=lambda r: abs(r - middle))  # the middle of the band reads best
    for r in candidates:
        inside = math.hypot(r + height / 2, width / 2) <= outer - PAD
        narrow = math.atan2(width / 2, r - height / 2) + PAD / r <= min(theta_span, math.pi) / 2
        if inside and narrow:
            return r
    return None


def _band_label(layout: Layout, texts: list[str], owner: str, theta0: float, theta1: float, inner: float,
                outer: float) -> None:
    """Name an arc inside its band: the first of `texts` that fits, along the arc, else across it, at
    `FONT`, then at `SMALL_FONT`."""
    span, middle = theta1 - theta0, (theta0 + theta1) / 2
    for size in (FONT, SMALL_FONT):
        for text in texts:
            width = text_width(text, size)
            r = tangential_radius(width, span, inner, outer, size)
            if r is not None:
                cx, cy = r * math.cos(middle), r * math.sin(middle)
                along = middle + math.pi / 2
                layout.labels.append(Label(text, owner, cx, cy, _readable(along),
                                           _box(cx, cy, width, size * 1.3, along), size))
                return
            if radial_fits(width, span, inner, outer, size):
                layout.labels.append(radial_label(text, owner, middle, inner + PAD, size))
                return
    layout.unnamed.append(owner)


def layout_topology(topo: Topology) -> Layout:
    """Positions of every node and the boxes of every label (see the module docstring)."""
    hosts = topo.hosts()
    n_vms = sum(len(host.vms) for host in hosts)
    most = max((len(host.vms) for host in hosts), default=0)
    rows = 1 if n_vms <= VM_LABELS_MAX else min(12, max(1, math.ceil(math.sqrt(most))))
    slots = {host.id: max(1, math.ceil(len(host.vms) / rows)) for host in hosts}
    clusters = [(site, cluster) for site in topo.sites for cluster in site.clusters if cluster.hosts]
    sites = [site for site in topo.sites if any(cluster.hosts for cluster in site.clusters)]
    gaps = len(sites) * SITE_GAP + (len(clusters) - len(sites)) * CLUSTER_GAP
    gaps = min(gaps, math.pi / 2)
    scale = gaps / max(len(sites) * SITE_GAP + (len(clusters) - len(sites)) * CLUSTER_GAP, 1e-9)
    alpha = (2 * math.pi - gaps) / max(sum(slots.values()), 1)  # one VM slot's angle
    # angles: hosts in document order; each parent spans its children
    spans: dict[str, tuple[float, float]] = {}
    theta = scale * SITE_GAP / 2
    for site in sites:
        site_start = theta
        for cluster in [c for c in site.clusters if c.hosts]:
            cluster_start = theta
            for host in cluster.hosts:
                spans[f"host:{host.id}"] = (theta, theta + slots[host.id] * alpha)
                theta += slots[host.id] * alpha
            spans[f"cluster:{site.id}/{cluster.id}"] = (cluster_start, theta)
            theta += scale * CLUSTER_GAP
        theta -= scale * CLUSTER_GAP
        spans[f"site:{site.id}"] = (site_start, theta)
        theta += scale * SITE_GAP
    vm_labels = n_vms <= VM_LABELS_MAX and rows == 1
    mark = BIG_VM_MARK if vm_labels else VM_MARK
    pitch = mark + MARK_GAP
    names = {host.id: host.id.split(".")[0] for host in hosts}
    host_text = max((text_width(name) for name in names.values()), default=0.0)
    vm_text = max((text_width(vm.id) for host in hosts for vm in host.vms), default=0.0)
    # the rings: the VMs' innermost row needs `alpha` to leave `pitch` between marks (and a line of text
    # between VM labels); host labels need a line of text between neighbours at the ring's outer edge
    text_room = (TEXT_HEIGHT + PAD) / 2
    vm_row = pitch / alpha if hosts else 0.0
    if vm_labels:
        vm_row = max(vm_row, text_room / math.tan(min(alpha, 3.0) / 2) - mark / 2 - PAD)
    host_gaps = _neighbour_angles([spans[f"host:{host.id}"] for host in hosts])
    labels_out = PAD + host_text + PAD + mark / 2
    ring = max(MIN_HOST_RADIUS, vm_row - labels_out)
    needed = text_room / math.tan(min(min(host_gaps, default=math.pi), 3.0) / 2) - PAD
    host_labels = bool(hosts) and needed <= max(ring, vm_row - mark / 2) * GROWTH_LIMIT
    ring = max(ring, needed) if host_labels else max(MIN_HOST_RADIUS, vm_row - PAD - mark / 2)
    vm_start = ring + (labels_out if host_labels else PAD + mark / 2)
    layout = Layout(host_labels=host_labels, vm_labels=vm_labels, vm_mark=mark)
    # the inner rings share the room between the grid's disc and the host ring
    inner = GRID_RADIUS + PAD
    band = (ring - HOST_BAND - PAD - inner - PAD) / 2
    site_band = (inner, inner + band)
    cluster_band = (inner + band + PAD, inner + 2 * band + PAD)
    layout.nodes.append(Node("grid", "grid", None, radius=GRID_RADIUS))
    layout.positions["grid"] = (0.0, 0.0)
    layout.labels.append(Label("grid5000", "grid", 0.0, 0.0, 0.0,
                               _box(0.0, 0.0, text_width("grid5000"), TEXT_HEIGHT, 0.0)))
    for site in sites:
        key = f"site:{site.id}"
        _arc(layout, key, "site", None, spans[key], site_band)
        _band_label(layout, [site.id], key, *spans[key], *site_band)
    for site, cluster in clusters:
        key = f"cluster:{site.id}/{cluster.id}"
        _arc(layout, key, "cluster", None, spans[key], cluster_band)
        count = len(cluster.hosts)
        texts = [cluster.id] if host_labels else [f"{cluster.id} ({count} host{'s' * (count > 1)})",
                                                  f"{cluster.id} ({count})", cluster.id]
        _band_label(layout, texts, key, *spans[key], *cluster_band)
    outermost = ring
    for host in hosts:
        key = f"host:{host.id}"
        start, end = spans[key]
        _arc(layout, key, "host", host.state, (start, end), (ring - HOST_BAND, ring))
        if host_labels:
            layout.labels.append(radial_label(names[host.id], key, (start + end) / 2, ring + PAD))
        for index, vm in enumerate(host.vms):
            column, row = divmod(index, rows)
            angle = start + (column + 0.5) * alpha
            radius = vm_start + row * pitch
            x, y = radius * math.cos(angle), radius * math.sin(angle)
            layout.nodes.append(Node(f"vm:{vm.id}", "vm", vm.state, x=x, y=y, size=mark))
            layout.positions[f"vm:{vm.id}"] = (x, y)
            outermost = max(outermost, radius + mark / 2)
            if vm_labels:
                label = radial_label(vm.id, f"vm:{vm.id}", angle, radius + mark / 2 + PAD)
                layout.labels.append(label)
                outermost = max(outermost, radius + mark / 2 + 2 * PAD + vm_text)
    if host_labels and not any(host.vms for host in hosts):
        outermost = max(outermost, ring + 2 * PAD + host_text)
    layout.extent = outermost + 3 * PAD
    return layout


def _neighbour_angles(spans: list[tuple[float, float]]) -> list[float]:
    """The angles between the middles of neighbouring arcs, around the circle."""
    middles = sorted((start + end) / 2 for start, end in spans)
    if len(middles) < 2:
        return []
    return [b - a for a, b in itertools.pairwise(middles)] + \
        [middles[0] + 2 * math.pi - middles[-1]]


def _arc(layout: Layout, key: str, level: str, state: str | None, span: tuple[float, float],
         band: tuple[float, float]) -> None:
    start, end = span
    middle, radius = (start + end) / 2, (band[0] + band[1]) / 2
    layout.nodes.append(Node(key, level, state, inner=band[0], outer=band[1], start=start, end=end))
    layout.positions[key] = (radius * math.cos(middle), radius * math.sin(middle))
