"""OAR property filters: the SQL-like expressions inside `{...}` of a resource request and in `properties`.

OAR hands these to its database; the testbed evaluates them itself on each node's OAR properties
(`cluster`, `host`, `network_address`, `type`, `deploy`, `virtual`, `memnode`, ...), which it derives from
the reference data. The grammar is the subset clients write:
`cluster='paravance'`, `network_address in ('a', 'b')`, `(type='default' or type='disk') AND cluster='x'`,
`memnode >= 8192`, `NOT exotic='YES'`, `host LIKE 'gros-%'`.

>>> match = compile_filter("cluster='gros' and memnode >= 1024")
>>> match({"cluster": "gros", "memnode": 98304})
True
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Props = dict[str, Any]
Predicate = Callable[[Props], bool]

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*'|\"[^\"]*\")|(?P<num>-?\d+(?:\.\d+)?)|(?P<op><>|!=|<=|>=|=|<|>)"
    r"|(?P<punct>[(),])|(?P<word>[A-Za-z_][A-Za-z0-9_.\-]*))"
)


class FilterSyntaxError(ValueError):
    """A property expression the testbed cannot parse (OAR would reject it too)."""


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise FilterSyntaxError(f"syntax error in property expression near {text[pos : pos + 20]!r}")
        pos = m.end()
        if m.group("str") is not None:
            raw = m.group("str")
            out.append(("value", raw[1:-1].replace("''", "'") if raw[0] == "'" else raw[1:-1]))
        elif m.group("num") is not None:
            num = m.group("num")
            out.append(("value", float(num) if "." in num else int(num)))
        elif m.group("op") is not None:
            out.append(("op", "!=" if m.group("op") == "<>" else m.group("op")))
        elif m.group("punct") is not None:
            out.append((m.group("punct"), m.group("punct")))
        else:
            word = m.group("word")
            lowered = word.lower()
            if lowered in ("and", "or", "not", "in", "like", "is", "null"):
                out.append((lowered, lowered))
            else:
                out.append(("name", word))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def take(self, kind: str) -> Any:
        if self.peek() != kind:
            found = self.tokens[self.pos][1] if self.pos < len(self.tokens) else "end of expression"
            raise FilterSyntaxError(f"syntax error in property expression: expected {kind}, found {found!r}")
        value = self.tokens[self.pos][1]
        self.pos += 1
        return value

    def parse(self) -> Predicate:
        pred = self.disjunction()
        if self.peek() is not None:
            raise FilterSyntaxError(f"syntax error in property expression near {self.tokens[self.pos][1]!r}")
        return pred

    def disjunction(self) -> Predicate:
        preds = [self.conjunction()]
        while self.peek() == "or":
            self.take("or")
            preds.append(self.conjunction())
        return preds[0] if len(preds) == 1 else (lambda p: any(f(p) for f in preds))

    def conjunction(self) -> Predicate:
        preds = [self.negation()]
        while self.peek() == "and":
            self.take("and")
            preds.append(self.negation())
        return preds[0] if len(preds) == 1 else (lambda p: all(f(p) for f in preds))

    def negation(self) -> Predicate:
        if self.peek() == "not":
            self.take("not")
            inner = self.negation()
            return lambda p: not inner(p)
        if self.peek() == "(":
            self.take("(")
            inner = self.disjunction()
            self.take(")")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        name = self.take("name").lower()
        kind = self.peek()
        if kind == "op":
            op = self.take("op")
            value = self.take("value")
            return lambda p: _compare(p.get(name), op, value)
        negate = False
        if kind == "not":
            self.take("not")
            negate = True
            kind = self.peek()
        if kind == "in":
            self.take("in")
            self.take("(")
            values = [self.take("value")]
            while self.peek() == ",":
                self.take(",")
                values.append(self.take("value"))
            self.take(")")
            wanted = {str(v) for v in values}
            return lambda p: (str(p.get(name)) in wanted) != negate
        if kind == "like":
            self.take("like")
            pattern = re.compile(
                "^"
                + "".join(
                    ".*" if c == "%" else "." if c == "_" else re.escape(c) for c in str(self.take("value"))
                )
                + "$"
            )
            return lambda p: bool(pattern.match(str(p.get(name, "")))) != negate
        if kind == "is" and not negate:
            self.take("is")
            is_not = self.peek() == "not"
            if is_not:
                self.take("not")
            self.take("null")
            return lambda p: (p.get(name) is None) != is_not
        raise FilterSyntaxError(f"syntax error in property expression after {name!r}")


def _compare(actual: Any, op: str, wanted: Any) -> bool:
    if actual is None:
        return False
    if isinstance(wanted, (int, float)) and not isinstance(actual, bool):
        try:
            actual = float(actual)
        except (TypeError, ValueError):
            return False
    else:
        actual, wanted = str(actual), str(wanted)
    if op == "=":
        return bool(actual == wanted)
    if op == "!=":
        return bool(actual != wanted)
    if op == "<":
        return bool(actual < wanted)
    if op == ">":
        return bool(actual > wanted)
    if op == "<=":
        return bool(actual <= wanted)
    return bool(actual >= wanted)


def compile_filter(text: str) -> Predicate:
    """Compile an OAR property expression into a predicate over a node's property dict."""
    if not text.strip():
        return lambda p: True
    return _Parser(text).parse()


def node_properties(doc: dict[str, Any], site: str, cluster: str, fqdn: str) -> Props:
    """The OAR properties of a node (the names Grid'5000's OAR uses), from its reference document."""
    arch = doc.get("architecture", {})
    virtual = doc.get("supported_job_types", {}).get("virtual")
    gpus: dict[str, dict[str, Any]] = doc.get("gpu_devices") or {}
    return {
        "type": "default",
        "site": site,
        "cluster": cluster,
        "host": fqdn,
        "network_address": fqdn,
        "nodeset": doc.get("nodeset", cluster),
        "deploy": "YES",
        "besteffort": "YES",
        "maintenance": "NO",
        "exotic": "YES" if doc.get("exotic") else "NO",
        "virtual": virtual if virtual else "NO",
        "cpuarch": arch.get("platform_type"),
        "cputype": (doc.get("processor") or {}).get("model"),
        "core_count": arch.get("nb_cores"),
        "cpucore": (arch.get("nb_cores") or 0) // max(arch.get("nb_procs") or 1, 1),
        "thread_count": arch.get("nb_threads"),
        "memnode": (doc.get("main_memory", {}).get("ram_size") or 0) // (1024 * 1024),
        "gpu_count": len(gpus),
        "gpu_model": next(iter(gpus.values()), {}).get("model") if gpus else None,
    }
