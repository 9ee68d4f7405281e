"""The OAR resource grammar (`oarsub -l`), as Grid'5000 clients send it in a job's `resources`.

Supported, which covers python-grid5000, enoslib, execo and vm5k:

* nodes: `nodes=N`, `host=N`, `{cluster='x'}/nodes=N`, `{network_address in ('a','b')}/nodes=N`,
  `nodes=ALL`, `nodes=BEST`, any property filter of `oar_properties`;
* subnets: `slash_22=K`, `slash_16=K`, optionally prefixed by `{type='subnet'}/`;
* vlans: `{type='kavlan'}/vlan=1`, `kavlan-local`, `kavlan-global`;
* `+` joins parts, `,walltime=H:M:S` (or `H:M`, or `H`) ends the request.

>>> req = parse_resources("{cluster='gros'}/nodes=2+slash_22=1,walltime=1:30:00")
>>> [type(p).__name__ for p in req.parts], req.walltime
(['NodesPart', 'SubnetPart'], 5400)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from g5k_testbed.oar_properties import FilterSyntaxError, Predicate, compile_filter

VLAN_KINDS = ("kavlan-local", "kavlan", "kavlan-global")
ALL = -1  # nodes=ALL: every eligible node
BEST = -2  # nodes=BEST: as many eligible nodes as are free


class ResourceSyntaxError(ValueError):
    """A resource request OAR would refuse to parse."""


@dataclass(frozen=True)
class NodesPart:
    count: int  # a positive count, ALL or BEST
    filter_text: str
    match: Predicate


@dataclass(frozen=True)
class SubnetPart:
    prefix: int  # 22 or 16
    count: int

    @property
    def blocks(self) -> int:
        """How many /22 resources one unit of this part holds (a /16 is 64 of them)."""
        return 1 << (22 - self.prefix)


@dataclass(frozen=True)
class VlanPart:
    kind: str
    count: int


Part = NodesPart | SubnetPart | VlanPart


@dataclass(frozen=True)
class ResourceRequest:
    parts: tuple[Part, ...]
    walltime: int | None  # seconds; None when the request does not say

    @property
    def node_parts(self) -> list[NodesPart]:
        return [p for p in self.parts if isinstance(p, NodesPart)]


def parse_walltime(text: str) -> int:
    """`H:M:S`, `H:M` or `H` (hours), as OAR reads a walltime, in seconds."""
    fields = text.strip().split(":")
    if not 1 <= len(fields) <= 3 or not all(f.strip().isdigit() for f in fields):
        raise ResourceSyntaxError(f"Bad walltime syntax: {text!r}")
    numbers = [int(f) for f in fields] + [0] * (3 - len(fields))
    seconds = numbers[0] * 3600 + numbers[1] * 60 + numbers[2]
    if seconds <= 0:
        raise ResourceSyntaxError(f"Bad walltime: {text!r} (must be positive)")
    return seconds


def format_walltime(seconds: int) -> str:
    """OAR's compact form, e.g. `1:30:0` (as in a job's message `W=1:30:0`)."""
    return f"{seconds // 3600}:{seconds % 3600 // 60}:{seconds % 60}"


def _split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside braces and quotes."""
    out, depth, quote, start = [], 0, "", 0
    for i, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise ResourceSyntaxError(f"unbalanced braces in {text!r}")
        elif char == sep and depth == 0:
            out.append(text[start:i])
            start = i + 1
    if depth or quote:
        raise ResourceSyntaxError(f"unbalanced braces or quotes in {text!r}")
    out.append(text[start:])
    return out


_LEVEL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([A-Za-z0-9]+)\s*$")
_VLAN_TYPE = re.compile(r"^\s*\(?\s*type\s*=\s*'(kavlan|kavlan-local|kavlan-global)'\s*\)?\s*$")
_SUBNET_TYPE = re.compile(r"^\s*\(?\s*type\s*=\s*'subnet'\s*\)?\s*$")


def _count(value: str, what: str) -> int:
    if value.upper() == "ALL" and what == "nodes":
        return ALL
    if value.upper() == "BEST" and what == "nodes":
        return BEST
    if not value.isdigit() or int(value) <= 0:
        raise ResourceSyntaxError(f"Bad resource count {value!r} for {what}")
    return int(value)


def _parse_part(text: str) -> Part:
    text = text.strip()
    filter_text = ""
    if text.startswith("{"):
        depth, close = 0, -1
        for i, char in enumerate(text):
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    close = i
                    break
        if close < 0:
            raise ResourceSyntaxError(f"unbalanced braces in {text!r}")
        filter_text = text[1:close].strip()
        text = text[close + 1 :].strip()
    levels = [lvl for lvl in text.strip("/").split("/") if lvl.strip()]
    if not levels:
        raise ResourceSyntaxError("empty resource request")
    parsed = []
    for level in levels:
        m = _LEVEL.match(level)
        if not m:
            raise ResourceSyntaxError(f"Bad resource level syntax: {level!r}")
        parsed.append((m.group(1).lower(), m.group(2)))
    if len(parsed) != 1:
        raise ResourceSyntaxError(
            f"unsupported resource hierarchy {text!r}: the testbed allocates whole nodes, subnets and vlans"
        )
    name, value = parsed[0]
    if name in ("nodes", "host", "network_address"):
        if _VLAN_TYPE.match(filter_text) or _SUBNET_TYPE.match(filter_text):
            raise ResourceSyntaxError(f"a {filter_text!r} filter cannot select nodes")
        try:
            match = compile_filter(filter_text)
        except FilterSyntaxError as exc:
            raise ResourceSyntaxError(str(exc)) from exc
        return NodesPart(_count(value, "nodes"), filter_text, match)
    if name in ("slash_22", "slash_16"):
        if filter_text and not _SUBNET_TYPE.match(filter_text):
            raise ResourceSyntaxError(f"unsupported subnet filter {filter_text!r}")
        return SubnetPart(int(name[-2:]), _count(value, name))
    if name == "vlan":
        m = _VLAN_TYPE.match(filter_text)
        if not m:
            raise ResourceSyntaxError(
                "a vlan request needs {type='kavlan'}, {type='kavlan-local'} or {type='kavlan-global'}"
            )
        return VlanPart(m.group(1), _count(value, "vlan"))
    raise ResourceSyntaxError(f"unsupported resource type {name!r}")


def parse_resources(text: str | None) -> ResourceRequest:
    """Parse a job's `resources` string (OAR defaults to `nodes=1` when there is none)."""
    text = (text or "").strip() or "nodes=1"
    walltime: int | None = None
    chunks = _split_top(text, ",")
    request_text = chunks[0]
    for extra in chunks[1:]:
        key, _, value = extra.partition("=")
        if key.strip().lower() != "walltime" or not value.strip():
            raise ResourceSyntaxError(f"Bad resource request option {extra.strip()!r}")
        walltime = parse_walltime(value)
    if request_text.strip().lower().startswith("walltime="):
        walltime = parse_walltime(request_text.split("=", 1)[1])
        request_text = "nodes=1"
    parts = tuple(_parse_part(p) for p in _split_top(request_text, "+"))
    kinds = [p.kind for p in parts if isinstance(p, VlanPart)]
    if sum(p.count for p in parts if isinstance(p, VlanPart)) > 1 or len(kinds) > 1:
        raise ResourceSyntaxError("only one vlan can be requested per job")
    return ResourceRequest(parts, walltime)
