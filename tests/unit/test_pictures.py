"""The ``--plot`` pictures at scale, checked on the computed layout (no drawing needed for the rules) and on
the files written: the topology (`vm5k.topology_layout`, `vm5k.plot`) and the run's timeline
(`vm5k.timeline`). The overlap check below is this test's own geometry, not the layout's."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

from vm5k import plot, timeline
from vm5k.timeline import ANSWERED, CREATED, SET_UP, SETUP_STARTED, STARTED, stamp, timeline_of
from vm5k.topology import VM, Host, Topology
from vm5k.topology_layout import Layout, Node, layout_topology

from .synthetic_fleet import T0, synthetic_fleet

Polygon = Sequence[tuple[float, float]]


def _axes(polygon: Polygon) -> Iterable[tuple[float, float]]:
    for (x0, y0), (x1, y1) in zip(polygon, [*polygon[1:], polygon[0]], strict=True):
        yield y0 - y1, x1 - x0


def convex_overlap(a: Polygon, b: Polygon, tolerance: float = 1e-6) -> bool:
    """Separating axes: two convex polygons overlap unless some edge normal separates them."""
    for nx, ny in [*_axes(a), *_axes(b)]:
        pa = [x * nx + y * ny for x, y in a]
        pb = [x * nx + y * ny for x, y in b]
        if max(pa) <= min(pb) + tolerance or max(pb) <= min(pa) + tolerance:
            return False
    return True


def node_polygons(node: Node) -> list[Polygon]:
    """Convex polygons that together contain the node: a circumscribed 24-gon for the disc, the square of
    a VM's mark, pieces of at most 2° for an arc (outer corners pushed out so they contain the arc)."""
    if node.kind == "disc":
        r = node.radius / math.cos(math.pi / 24)
        return [[(r * math.cos(k * math.pi / 12), r * math.sin(k * math.pi / 12)) for k in range(24)]]
    if node.kind == "mark":
        h = node.size / 2
        return [[(node.x - h, node.y - h), (node.x + h, node.y - h), (node.x + h, node.y + h),
                 (node.x - h, node.y + h)]]
    pieces = max(1, math.ceil((node.end - node.start) / math.radians(2)))
    step = (node.end - node.start) / pieces
    out = node.outer / math.cos(step / 4)
    polygons = []
    for k in range(pieces):
        a = node.start + k * step
        points = [(node.inner * math.cos(a), node.inner * math.sin(a))]
        points += [(out * math.cos(a + j * step / 2), out * math.sin(a + j * step / 2)) for j in range(3)]
        points.append((node.inner * math.cos(a + step), node.inner * math.sin(a + step)))
        polygons.append(points)
    return polygons


def overlaps(layout: Layout) -> list[str]:
    """Every label that overlaps another label, or a node other than the one it names."""
    shapes: list[tuple[str, str, Polygon]] = []  # (what, owner, polygon)
    for label in layout.labels:
        shapes.append(("label", label.owner, label.corners))
    for node in layout.nodes:
        shapes.extend(("node", node.key, polygon) for polygon in node_polygons(node))
    cell = 20.0
    grid: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, (_, _, polygon) in enumerate(shapes):
        xs, ys = [x for x, _ in polygon], [y for _, y in polygon]
        for i in range(math.floor(min(xs) / cell), math.floor(max(xs) / cell) + 1):
            for j in range(math.floor(min(ys) / cell), math.floor(max(ys) / cell) + 1):
                grid[i, j].append(index)
    found: set[tuple[int, int]] = set()
    for members in grid.values():
        for a in members:
            if shapes[a][0] != "label":
                continue
            for b in members:
                if b == a or (min(a, b), max(a, b)) in found:
                    continue
                if shapes[b][0] == "node" and shapes[b][1] == shapes[a][1]:
                    continue  # a label may lie on the node it names
                if convex_overlap(shapes[a][2], shapes[b][2]):
                    found.add((min(a, b), max(a, b)))
    return sorted(f"{shapes[a][1]} / {shapes[b][1]}" for a, b in found)


@pytest.fixture(scope="module")
def big() -> Topology:
    return synthetic_fleet(300, 3000)


def test_the_big_fleet_has_every_node_placed_the_grid_centred_no_label_over_another(big: Topology) -> None:
    layout = layout_topology(big)
    assert layout.positions["grid"] == (0.0, 0.0)
    assert all(f"host:{host.id}" in layout.positions for host in big.hosts())
    assert all(f"vm:{vm.id}" in layout.positions for vm in big.vms())
    assert len(layout.positions) == 1 + 6 + 12 + 300 + 3000
    assert overlaps(layout) == []
    # the grid is where it belongs: the picture's square is centred on it, every node inside
    assert all(abs(x) < layout.extent and abs(y) < layout.extent for x, y in layout.positions.values())
    # too many hosts to name them one by one: clusters say how many they hold; VMs are not named
    assert not layout.host_labels and not layout.vm_labels
    texts = {label.text for label in layout.labels}
    assert any(text.endswith(" hosts)") for text in texts)
    assert not any(text.startswith("vm-") for text in texts)


def test_no_vm_mark_lies_over_another_in_the_big_fleet(big: Topology) -> None:
    layout = layout_topology(big)
    side = layout.vm_mark
    marks = [(node.x, node.y) for node in layout.nodes if node.kind == "mark"]
    cells: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for x, y in marks:
        cells[int(x // side), int(y // side)].append((x, y))
    for (i, j), members in cells.items():
        for x, y in members:
            near = [p for di in (-1, 0, 1) for dj in (-1, 0, 1) for p in cells.get((i + di, j + dj), [])]
            assert all(p == (x, y) or math.hypot(p[0] - x, p[1] - y) >= side for p in near)


@pytest.mark.parametrize(("hosts", "vms"), [(1, 4), (1, 0), (3, 1), (12, 64), (30, 300), (2, 80)])
def test_small_and_middle_fleets_are_named_without_overlaps(hosts: int, vms: int) -> None:
    topo = synthetic_fleet(hosts, vms)
    layout = layout_topology(topo)
    assert overlaps(layout) == []
    assert layout.positions["grid"] == (0.0, 0.0)
    texts = {label.text for label in layout.labels}
    assert {host.id.split(".")[0] for host in topo.hosts()} <= texts  # few hosts: each named
    if vms <= 80:
        assert {vm.id for vm in topo.vms()} <= texts  # few VMs: each named
    marks = [(node.x, node.y) for node in layout.nodes if node.kind == "mark"]
    assert len(marks) == vms
    assert all(math.hypot(x1 - x0, y1 - y0) >= layout.vm_mark
               for i, (x0, y0) in enumerate(marks) for x1, y1 in marks[i + 1:])


def test_a_site_gets_an_angle_in_proportion_to_its_vms() -> None:
    topo = Topology()
    for n in range(1, 4):
        topo.add_host("rennes", "paravance", Host(f"paravance-{n}.rennes.grid5000.fr"))
    topo.add_host("nancy", "gros", Host("gros-1.nancy.grid5000.fr"))
    for n in range(1, 31):
        host = f"paravance-{n % 3 + 1}.rennes.grid5000.fr" if n <= 27 else "gros-1.nancy.grid5000.fr"
        topo.place(VM(f"vm-{n}"), host)
    arcs = {node.key: node.end - node.start for node in layout_topology(topo).nodes if node.level == "site"}
    assert arcs["site:rennes"] / arcs["site:nancy"] == pytest.approx(27 / 3, rel=0.05)


def test_the_topology_picture_is_written_as_png_and_svg(tmp_path: Path) -> None:
    written = plot.plot_topology(synthetic_fleet(1, 4), tmp_path)
    assert [path.name for path in written] == ["topology.png", "topology.svg"]
    assert (tmp_path / "topology.png").read_bytes().startswith(b"\x89PNG")
    svg = (tmp_path / "topology.svg").read_text()
    assert "<svg" in svg and "4 VMs (3 OK, 1 KO, 0 other)" in plot.summary(synthetic_fleet(1, 4))


# -- the timeline ------------------------------------------------------------------------------------------


def test_timeline_rows_follow_the_topology_and_the_recorded_times(big: Topology) -> None:
    rows = timeline_of(big)
    assert [row.id for row in rows.hosts] == [host.id for host in big.hosts()]  # by site, then cluster
    assert rows.start == T0 and rows.end is not None and rows.end > T0
    for host_row in rows.hosts:
        assert [phase.name for phase in host_row.phases] == ["deploy", "set-up", "image"]
        assert all(phase.end is not None and phase.end >= phase.start for phase in host_row.phases)
        started = [vm.started for vm in host_row.vms if vm.started is not None]
        assert started == sorted(started)  # first started first, untimed last
        assert all(not vm.timed for vm in host_row.vms[len(started):])
    answered = {vm.id: vm.answered for vm in rows.vms}
    for vm in big.vms():
        assert answered[vm.id] == vm.extra.get("times", {}).get(ANSWERED)


def test_timeline_stamps_are_epoch_seconds_to_a_hundredth_and_the_latest_wins() -> None:
    vm = VM("vm-1")
    stamp(vm, STARTED, 100.123)
    stamp(vm, STARTED, 200.456)
    assert vm.extra["times"] == {"started": 200.46}
    stamp(vm, CREATED)
    assert abs(vm.extra["times"][CREATED] - __import__("time").time()) < 5


def test_a_vm_or_host_without_times_is_shown_as_such(tmp_path: Path) -> None:
    topo = Topology()
    host = topo.add_host("rennes", "paravance", Host("paravance-1"))
    other = topo.add_host("rennes", "paravance", Host("paravance-2"))
    topo.place(VM("vm-1", state="OK"), host.id)
    topo.place(VM("vm-2", state="KO"), host.id)
    topo.place(VM("vm-3", extra={"times": {"started": "garbled"}}), other.id)
    topo.add_vm(VM("vm-4"))  # never placed
    stamp(host, SETUP_STARTED, T0)
    stamp(host, SET_UP, T0 + 30)
    stamp(topo.vm("vm-1"), STARTED, T0 + 40)
    stamp(topo.vm("vm-1"), ANSWERED, T0 + 52.5)
    stamp(topo.vm("vm-2"), STARTED, T0 + 41)
    rows = timeline_of(topo)
    assert [vm.id for vm in rows.hosts[0].vms] == ["vm-1", "vm-2"]
    assert rows.hosts[0].vms[0].boot_seconds == 12.5 and rows.hosts[0].vms[1].answered is None
    assert rows.hosts[1].phases == () and not rows.hosts[1].vms[0].timed
    assert [vm.id for vm in rows.unplaced] == ["vm-4"]
    written = timeline.plot_timeline(topo, tmp_path)
    assert [path.name for path in written] == ["timeline.png", "timeline.svg"]
    assert (tmp_path / "timeline.png").read_bytes().startswith(b"\x89PNG")
    svg = (tmp_path / "timeline.svg").read_text()
    assert "paravance-2 (no times)" in svg and "2 VMs without recorded times" in svg


def test_a_topology_without_any_time_still_gets_its_timeline(tmp_path: Path) -> None:
    topo = synthetic_fleet(3, 6, times=False)
    assert timeline_of(topo).start is None
    written = timeline.plot_timeline(topo, tmp_path)
    assert all(path.stat().st_size > 0 for path in written)
    assert "no times recorded" in (tmp_path / "timeline.svg").read_text()


def test_the_big_timeline_labels_clusters_with_their_host_counts(big: Topology, tmp_path: Path) -> None:
    timeline.plot_timeline(big, tmp_path)
    svg = (tmp_path / "timeline.svg").read_text()
    assert "rennes/paravance (" in svg and "hosts)" in svg


def test_a_run_draws_both_pictures_from_its_outdir_alone(tmp_path: Path) -> None:
    import vm5k
    from vm5k import outdir
    from vm5k.runstate import DONE, RunRecord

    topo = synthetic_fleet(4, 10)
    RunRecord(run_id="20261125-ab12", platform="testbed", start_dir=str(tmp_path), status=DONE).save(topo)
    outdir.write_state(tmp_path, topo)
    with vm5k.Run.load(tmp_path) as run:
        written = run.plot(tmp_path / "pictures")
        assert [path.name for path in written] == ["topology.png", "topology.svg", "timeline.png",
                                                   "timeline.svg"]
        assert all(path.parent == tmp_path / "pictures" and path.stat().st_size > 0 for path in written)
        assert [path.parent for path in run.plot()] == [tmp_path] * 4  # the run's outdir by default
