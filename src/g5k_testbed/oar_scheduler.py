"""OAR-like placement for one site: the earliest slot where every part of a request is free.

Each node, /22 subnet and vlan has a `Calendar` of busy intervals (running and predicted jobs). A request
is placed by moving a candidate start time forward: for each part, the N-th smallest "next free gap of
the walltime's length" over its eligible resources is a lower bound of the start; the maximum of these
bounds is the next candidate; at a candidate where every part has enough free resources, the resources
are picked in reference (natural) order. This is conservative backfilling, as OAR does it: a new job
never delays an already scheduled one.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from g5k_testbed.calendar import Calendar
from g5k_testbed.oar_grammar import ALL, BEST, NodesPart, ResourceRequest, SubnetPart, VlanPart
from g5k_testbed.oar_properties import Predicate, Props
from g5k_testbed.subnets import slash16_of

#: Queue -> node queue that makes a node eligible (besteffort jobs run on the default queue's nodes).
QUEUE_NODE_QUEUE = {"besteffort": "default"}
MAX_ITERATIONS = 100_000


class NotEnoughResources(Exception):
    """The request can never be satisfied on this site (OAR: `There are not enough resources`)."""


@dataclass
class Placement:
    start: int
    nodes: list[str] = field(default_factory=list)
    vlans: list[str] = field(default_factory=list)
    subnets: list[str] = field(default_factory=list)


class SiteScheduler:
    """Calendars of one site's resources and the placement of requests on them."""

    def __init__(
        self,
        nodes: dict[str, Props],
        node_queues: dict[str, tuple[str, ...]],
        vlans: dict[str, str],
        slash22s: list[str],
        usable: Callable[[str], bool] = lambda fqdn: True,
    ) -> None:
        self.node_props = nodes  # FQDN -> OAR properties, natural order
        self.node_queues = node_queues
        self.usable = usable
        self.nodes = {fqdn: Calendar() for fqdn in nodes}
        self.vlan_kinds = vlans  # id -> kind (kavlan-local, kavlan, kavlan-global)
        self.vlans = {vid: Calendar() for vid in vlans}
        self.subnets = {cidr: Calendar() for cidr in slash22s}
        self.slash16s: dict[str, list[str]] = {}
        for cidr in slash22s:
            self.slash16s.setdefault(slash16_of(cidr), []).append(cidr)
        self.queues = {q for qs in node_queues.values() for q in qs} | {"besteffort"}

    # ------------------------------------------------------------------ bookkeeping
    def book(
        self,
        uid: int,
        start: int,
        end: int,
        nodes: Iterable[str],
        vlans: Iterable[str],
        subnets: Iterable[str],
    ) -> None:
        for fqdn in nodes:
            self.nodes[fqdn].add(start, end, uid)
        for vid in vlans:
            self.vlans[vid].add(start, end, uid)
        for cidr in subnets:
            self.subnets[cidr].add(start, end, uid)

    def release(self, uid: int, nodes: Iterable[str], vlans: Iterable[str], subnets: Iterable[str]) -> None:
        for fqdn in nodes:
            self.nodes[fqdn].remove(uid)
        for vid in vlans:
            self.vlans[vid].remove(uid)
        for cidr in subnets:
            self.subnets[cidr].remove(uid)

    # ------------------------------------------------------------------ placement
    def eligible_nodes(self, part: NodesPart, queue: str, extra: Predicate | None) -> list[str]:
        wanted_queue = QUEUE_NODE_QUEUE.get(queue, queue)
        out = []
        for fqdn, props in self.node_props.items():
            if queue != "admin" and wanted_queue not in self.node_queues[fqdn]:
                continue
            if not self.usable(fqdn) or not part.match(props) or (extra is not None and not extra(props)):
                continue
            out.append(fqdn)
        return out

    def _candidates(
        self, request: ResourceRequest, queue: str, extra: Predicate | None
    ) -> list[tuple[object, list[str]]]:
        """Each part with the resources it may use (node FQDNs, /22 CIDRs, /16 names or vlan ids)."""
        out: list[tuple[object, list[str]]] = []
        for part in request.parts:
            if isinstance(part, NodesPart):
                pool = self.eligible_nodes(part, queue, extra)
                need = len(pool) if part.count == ALL else 1 if part.count == BEST else part.count
                if not pool or need > len(pool):
                    raise NotEnoughResources(
                        f"There are not enough resources for your request ({len(pool)} eligible "
                        f"node(s) for {part.filter_text or 'nodes'}, {need} wanted)"
                    )
            elif isinstance(part, SubnetPart):
                pool = list(self.subnets) if part.prefix == 22 else list(self.slash16s)
                if part.count > len(pool):
                    raise NotEnoughResources("There are not enough resources for your request (subnets)")
            else:
                assert isinstance(part, VlanPart)
                pool = [vid for vid, kind in self.vlan_kinds.items() if kind == part.kind]
                if not pool:
                    raise NotEnoughResources(f"There are not enough resources for your request ({part.kind})")
            out.append((part, pool))
        return out

    def _gap(self, part: object, resource: str, t: int, length: int) -> int:
        if isinstance(part, NodesPart):
            return self.nodes[resource].next_free(t, length)
        if isinstance(part, VlanPart):
            return self.vlans[resource].next_free(t, length)
        assert isinstance(part, SubnetPart)
        if part.prefix == 22:
            return self.subnets[resource].next_free(t, length)
        blocks = self.slash16s[resource]
        s = t
        while True:  # the /16 is free when all of its /22s are: iterate to the common gap
            later = max(self.subnets[cidr].next_free(s, length) for cidr in blocks)
            if later == s:
                return s
            s = later

    def _free(self, part: object, resource: str, t: int, length: int) -> bool:
        return self._gap(part, resource, t, length) == t

    @staticmethod
    def _need(part: object, pool: list[str]) -> int:
        if isinstance(part, NodesPart):
            return len(pool) if part.count == ALL else 1 if part.count == BEST else part.count
        assert isinstance(part, (SubnetPart, VlanPart))
        return part.count

    def _assign(self, candidates: list[tuple[object, list[str]]], t: int, length: int) -> Placement | None:
        placement = Placement(t)
        taken: set[str] = set()
        for part, pool in candidates:
            free = [r for r in pool if r not in taken and self._free(part, r, t, length)]
            need = self._need(part, pool)
            if isinstance(part, NodesPart) and part.count == BEST:
                need = max(1, len(free))
            if len(free) < need:
                return None
            chosen = free[:need]
            taken.update(chosen)
            if isinstance(part, NodesPart):
                placement.nodes.extend(chosen)
            elif isinstance(part, VlanPart):
                placement.vlans.extend(chosen)
            elif isinstance(part, SubnetPart) and part.prefix == 22:
                placement.subnets.extend(chosen)
            else:
                placement.subnets.extend(c for s16 in chosen for c in self.slash16s[s16])
        return placement

    def _next_change(self, candidates: list[tuple[object, list[str]]], t: int) -> int | None:
        ends = []
        for part, pool in candidates:
            calendars: list[Calendar]
            if isinstance(part, NodesPart):
                calendars = [self.nodes[r] for r in pool]
            elif isinstance(part, VlanPart):
                calendars = [self.vlans[r] for r in pool]
            elif isinstance(part, SubnetPart) and part.prefix == 22:
                calendars = [self.subnets[r] for r in pool]
            else:
                calendars = [self.subnets[c] for r in pool for c in self.slash16s[r]]
            for cal in calendars:
                end = cal.next_end_after(t)
                if end is not None:
                    ends.append(end)
        return min(ends) if ends else None

    def place(
        self,
        request: ResourceRequest,
        queue: str,
        walltime: int,
        not_before: int,
        extra: Predicate | None = None,
        exact: bool = False,
        before: int | None = None,
    ) -> Placement | None:
        """The earliest placement starting at or after `not_before`.

        With `exact`, only a start at `not_before` will do (an advance reservation): None when it is not
        possible there (call again without `exact` for the date OAR would propose). With `before`, only a
        start earlier than that will do (None otherwise), which keeps gantt compaction cheap.
        Raises NotEnoughResources when no date would ever do.
        """
        candidates = self._candidates(request, queue, extra)
        t = not_before
        for _ in range(MAX_ITERATIONS):
            if before is not None and t >= before:
                return None
            bound = t
            for part, pool in candidates:
                need = self._need(part, pool)
                gaps = (self._gap(part, r, t, walltime) for r in pool)
                bound = max(bound, heapq.nsmallest(need, gaps)[-1])
            if bound == t:
                placement = self._assign(candidates, t, walltime)
                if placement is not None:
                    return placement
                if exact:
                    return None
                following = self._next_change(candidates, t)
                if following is None:  # nothing will ever change: the parts compete for too few resources
                    raise NotEnoughResources("There are not enough resources for your request")
                t = following
            else:
                if exact:
                    return None
                t = bound
        raise NotEnoughResources("There are not enough resources for your request (no slot found)")
