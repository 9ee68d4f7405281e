"""The original vm5k's ``--plot``: a picture of the deployment, sites → clusters → hosts → VMs, by state.

The original drew a networkx "twopi" graph through Graphviz. Graphviz is not a dependency here, so the
layout is computed by hand and stays readable for hundreds of VMs: the VMs sit on the outer circle in
document order, every parent sits at the mean angle of its children on an inner circle, and the grid is the
centre. The same figure is written as PNG (to look at) and SVG (to zoom into).

Example::

    >>> from vm5k.topology import Topology, Host, VM
    >>> topo = Topology()
    >>> _ = topo.add_host("rennes", "paravance", Host("paravance-1.rennes.grid5000.fr"))
    >>> topo.place(VM("vm-1"), "paravance-1.rennes.grid5000.fr")
    >>> graph = topology_graph(topo)
    >>> sorted(data["level"] for _, data in graph.nodes(data=True))
    ['cluster', 'grid', 'host', 'site', 'vm']
"""

from __future__ import annotations

import math
from pathlib import Path

import networkx as nx

from vm5k.topology import HOST_KO, HOST_OK, VM_KO, VM_OK, Topology

# radius of each level's circle, and how each level is drawn
RADIUS = {"grid": 0.0, "site": 1.0, "cluster": 2.0, "host": 3.0, "vm": 4.2}
NODE_SIZE = {"grid": 500, "site": 350, "cluster": 250, "host": 160, "vm": 45}
STATE_COLOURS = {VM_OK: "#2ca02c", VM_KO: "#d62728"}  # the same words for hosts (HOST_OK/HOST_KO)
LEVEL_COLOURS = {"grid": "#444444", "site": "#1f77b4", "cluster": "#9467bd"}
OTHER_STATE_COLOUR = "#bbbbbb"  # planned, or any state between planned and OK/KO
assert (HOST_OK, HOST_KO) == (VM_OK, VM_KO)


def topology_graph(topo: Topology) -> nx.DiGraph:
    """The topology as a tree: node keys are ``level:id``, with `level`, `label` and `state` attributes."""
    graph = nx.DiGraph()
    graph.add_node("grid", level="grid", label="grid5000", state=None)
    for site in topo.sites:
        site_key = f"site:{site.id}"
        graph.add_node(site_key, level="site", label=site.id, state=None)
        graph.add_edge("grid", site_key)
        for cluster in site.clusters:
            cluster_key = f"cluster:{site.id}/{cluster.id}"
            graph.add_node(cluster_key, level="cluster", label=cluster.id, state=None)
            graph.add_edge(site_key, cluster_key)
            for host in cluster.hosts:
                host_key = f"host:{host.id}"
                graph.add_node(host_key, level="host", label=host.id.split(".")[0], state=host.state)
                graph.add_edge(cluster_key, host_key)
                for vm in host.vms:
                    vm_key = f"vm:{vm.id}"
                    graph.add_node(vm_key, level="vm", label=vm.id, state=vm.state)
                    graph.add_edge(host_key, vm_key)
    return graph


def radial_layout(graph: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """Positions: leaves spread evenly on their level's circle, parents at their children's mean angle."""
    angles: dict[str, float] = {}
    leaves = [node for node in nx.dfs_preorder_nodes(graph, "grid") if graph.out_degree(node) == 0]
    for index, leaf in enumerate(leaves):
        angles[leaf] = 2 * math.pi * index / max(len(leaves), 1)
    for node in reversed(list(nx.dfs_preorder_nodes(graph, "grid"))):
        children = list(graph.successors(node))
        if children:
            # mean of unit vectors, so a parent whose children straddle angle 0 is not sent to the far side
            x = sum(math.cos(angles[child]) for child in children)
            y = sum(math.sin(angles[child]) for child in children)
            angles[node] = math.atan2(y, x)
    positions = {}
    for node, data in graph.nodes(data=True):
        radius = RADIUS[data["level"]]
        positions[node] = (radius * math.cos(angles[node]), radius * math.sin(angles[node]))
    return positions


def _colour(level: str, state: str | None) -> str:
    if level in LEVEL_COLOURS:
        return LEVEL_COLOURS[level]
    return STATE_COLOURS.get(state or "", OTHER_STATE_COLOUR)


def plot_topology(topo: Topology, outdir: str | Path, name: str = "topology") -> list[Path]:
    """Draw the topology into ``<outdir>/<name>.png`` and ``.svg``; return both paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    graph = topology_graph(topo)
    positions = radial_layout(graph)
    n_vms = sum(1 for _, data in graph.nodes(data=True) if data["level"] == "vm")
    size = min(8 + n_vms / 40, 30)  # inches: grows with the fleet, bounded
    figure, axes = plt.subplots(figsize=(size, size))
    axes.set_axis_off()
    axes.set_aspect("equal")
    nx.draw_networkx_edges(graph, positions, ax=axes, arrows=False, width=0.6, edge_color="#999999")
    for level in RADIUS:
        nodes = [node for node, data in graph.nodes(data=True) if data["level"] == level]
        colours = [_colour(level, graph.nodes[node]["state"]) for node in nodes]
        nx.draw_networkx_nodes(graph, positions, nodelist=nodes, node_color=colours,
                               node_size=NODE_SIZE[level], ax=axes)
    labelled = [node for node, data in graph.nodes(data=True) if data["level"] != "vm" or n_vms <= 200]
    nx.draw_networkx_labels(graph, positions, labels={node: graph.nodes[node]["label"] for node in labelled},
                            font_size=7, ax=axes)
    ok = sum(1 for _, data in graph.nodes(data=True) if data["level"] == "vm" and data["state"] == VM_OK)
    axes.set_title(f"vm5k: {n_vms} VMs ({ok} OK) on {len(topo.hosts())} hosts of {len(topo.sites)} site(s)")
    legend = [Line2D([0], [0], marker="o", linestyle="", color=colour, label=label)
              for label, colour in (("OK", STATE_COLOURS[VM_OK]), ("KO", STATE_COLOURS[VM_KO]),
                                    ("other", OTHER_STATE_COLOUR))]
    axes.legend(handles=legend, loc="lower right")
    written = []
    folder = Path(outdir)
    for suffix in ("png", "svg"):
        path = folder / f"{name}.{suffix}"
        figure.savefig(path, format=suffix, bbox_inches="tight", dpi=100)
        written.append(path)
    plt.close(figure)
    return written
