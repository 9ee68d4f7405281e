"""The original vm5k's ``--plot``: a picture of the deployment, sites → clusters → hosts → VMs, by state.

The original drew a networkx "twopi" graph through Graphviz, unreadable past a few dozen VMs. Here
`vm5k.topology_layout` computes a sunburst (where every node and label goes, in points, labels only where
they fit) and this module only draws it: arcs as wedges, VMs as one scatter per state, texts where the
layout put them, one data unit to one point so the layout's sizes hold. The same figure is written as PNG
(to look at) and SVG (to zoom into); `vm5k.timeline` draws the run's other picture.

Example::

    >>> from vm5k.topology import Topology, Host, VM
    >>> topo = Topology()
    >>> _ = topo.add_host("rennes", "paravance", Host("paravance-1.rennes.grid5000.fr"))
    >>> topo.place(VM("vm-1", state="OK"), "paravance-1.rennes.grid5000.fr")
    >>> summary(topo)
    'vm5k: 1 VMs (1 OK, 0 KO, 0 other) on 1 hosts (0 OK) in 1 clusters of 1 sites'
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vm5k.topology import HOST_KO, HOST_OK, VM_KO, VM_OK, Topology
from vm5k.topology_layout import Layout, layout_topology

STATE_COLOURS = {VM_OK: "#2ca02c", VM_KO: "#d62728"}  # the same words for hosts (HOST_OK/HOST_KO)
OTHER_STATE_COLOUR = "#bbbbbb"  # planned, stopped, or any state between planned and OK/KO
GRID_COLOUR = "#444444"
#: sites take these in turn; their clusters a lighter shade of the same
SITE_COLOURS = ("#9ecae1", "#fdae6b", "#a1d99b", "#bcbddc", "#fdd0a2", "#c7e9c0", "#dadaeb", "#fcbba1",
                "#d9d9d9", "#c6dbef")
TITLE_INCHES, LEGEND_INCHES = 0.6, 0.5
assert (HOST_OK, HOST_KO) == (VM_OK, VM_KO)


def summary(topo: Topology) -> str:
    """The picture's title: what the fleet is, in counts."""
    vms = topo.vms()
    hosts = topo.hosts()
    ok = sum(1 for vm in vms if vm.state == VM_OK)
    ko = sum(1 for vm in vms if vm.state == VM_KO)
    clusters = sum(1 for site in topo.sites for cluster in site.clusters if cluster.hosts)
    sites = sum(1 for site in topo.sites if any(cluster.hosts for cluster in site.clusters))
    hosts_ok = sum(1 for host in hosts if host.state == HOST_OK)
    return (f"vm5k: {len(vms)} VMs ({ok} OK, {ko} KO, {len(vms) - ok - ko} other) on {len(hosts)} hosts "
            f"({hosts_ok} OK) in {clusters} clusters of {sites} sites")


def _state_colour(state: str | None) -> str:
    return STATE_COLOURS.get(state or "", OTHER_STATE_COLOUR)


def _lighter(colour: str, share: float = 0.5) -> str:
    red, green, blue = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c + (255 - c) * share):02x}" for c in (red, green, blue))


def plot_topology(topo: Topology, outdir: str | Path, name: str = "topology") -> list[Path]:
    """Draw the topology into ``<outdir>/<name>.png`` and ``.svg``; return both paths."""
    plt = pyplot()
    from matplotlib.collections import PatchCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, Wedge

    layout = layout_topology(topo)
    side = 2 * layout.extent / 72  # inches: one data unit is one point
    height = side + TITLE_INCHES + LEGEND_INCHES
    figure = plt.figure(figsize=(side, height))
    axes = figure.add_axes((0, LEGEND_INCHES / height, 1, side / height))
    axes.set_axis_off()
    axes.set_xlim(-layout.extent, layout.extent)
    axes.set_ylim(-layout.extent, layout.extent)
    axes.set_aspect("equal")
    site_colour: dict[str, str] = {}
    wedges, colours = [], []
    for node in layout.nodes:
        if node.kind != "arc":
            continue
        if node.level == "site":
            site_colour[node.key.removeprefix("site:")] = SITE_COLOURS[len(site_colour) % len(SITE_COLOURS)]
            colour = site_colour[node.key.removeprefix("site:")]
        elif node.level == "cluster":
            colour = _lighter(site_colour[node.key.removeprefix("cluster:").split("/")[0]])
        else:
            colour = _state_colour(node.state)
        wedges.append(Wedge((0, 0), node.outer, math.degrees(node.start), math.degrees(node.end),
                            width=node.outer - node.inner))
        colours.append(colour)
    axes.add_collection(PatchCollection(wedges, facecolors=colours, edgecolors="white", linewidths=0.3))
    axes.add_patch(Circle((0, 0), layout.nodes[0].radius, color=GRID_COLOUR))
    marks: dict[str, tuple[list[float], list[float]]] = {}
    for node in layout.nodes:
        if node.kind == "mark":
            xs, ys = marks.setdefault(_state_colour(node.state), ([], []))
            xs.append(node.x)
            ys.append(node.y)
    for colour, (xs, ys) in marks.items():  # a disc inside the layout's square; scatter wants points²
        axes.scatter(xs, ys, s=layout.vm_mark ** 2, c=colour, marker="o", linewidths=0)
    for label in layout.labels:
        axes.text(label.x, label.y, label.text, fontsize=label.size, rotation=label.rotation,
                  rotation_mode="anchor", ha="center", va="center_baseline",
                  color="white" if label.owner == "grid" else "black")
    title = summary(topo)
    unplaced = len(topo.unplaced)
    notes = [f"{unplaced} VMs not placed (not drawn)"] if unplaced else []
    if not layout.host_labels and topo.hosts():
        notes.append("hosts counted per cluster (too many to name)")
    if layout.unnamed:
        names = [key.split(":", 1)[1] for key in layout.unnamed]
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        notes.append(f"too narrow to name: {shown}")
    figure.suptitle(title + ("\n" + "; ".join(notes) if notes else ""), fontsize=10,
                    y=1 - 0.1 / height, va="top")
    legend = [Line2D([0], [0], marker="o", linestyle="", color=colour, label=label)
              for label, colour in (("OK", STATE_COLOURS[VM_OK]), ("KO", STATE_COLOURS[VM_KO]),
                                    ("other (planned, stopped...)", OTHER_STATE_COLOUR))]
    legend.append(Line2D([0], [0], linestyle="", label="VMs: dots; hosts: the outer arcs"))
    figure.legend(handles=legend, loc="lower center", ncol=4, fontsize=8, frameon=False,
                  bbox_to_anchor=(0.5, 0.05 / height))
    return save_figure(figure, outdir, name)


def pyplot() -> Any:
    """matplotlib's pyplot, drawing into files only (never needs a display); imported when a picture is
    asked for, since matplotlib takes a second to load."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, outdir: str | Path, name: str) -> list[Path]:
    """Write a figure as ``<outdir>/<name>.png`` (to look at) and ``.svg`` (to zoom into), then free it;
    returns both paths. Every picture of a run is written this way."""
    plt = pyplot()
    written = []
    for suffix in ("png", "svg"):
        path = Path(outdir) / f"{name}.{suffix}"
        figure.savefig(path, format=suffix, dpi=100)
        written.append(path)
    plt.close(figure)
    return written


def write_pictures(topo: Topology, outdir: str | Path) -> list[Path]:
    """Both pictures of a run, what ``--plot`` writes: topology.png/.svg and timeline.png/.svg."""
    from vm5k.timeline import plot_timeline

    return plot_topology(topo, outdir) + plot_timeline(topo, outdir)


__all__ = ["Layout", "layout_topology", "plot_topology", "pyplot", "save_figure", "summary",
           "write_pictures"]
