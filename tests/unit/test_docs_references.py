"""docs/reliability.md names the test that proves each promise: every name it cites must exist.

A promise whose test was renamed or removed would otherwise still read as proven.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
RELIABILITY = TESTS.parent / "docs" / "reliability.md"
CITED = re.compile(r"`([\w/]+\.py)?(?:::(\w+))?`")


def cited_tests(text: str) -> list[tuple[str, str | None]]:
    """(file, test) pairs in citation order; `::name` alone continues the file cited just before."""
    pairs: list[tuple[str, str | None]] = []
    current: str | None = None
    for match in CITED.finditer(text):
        path, name = match.groups()
        if path is None and name is None:
            continue
        if path is not None:
            current = path
        if current is not None and (path is None or path.count("/") >= 1):
            pairs.append((current, name))
    return pairs


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_cited_by_the_reliability_promises_exists() -> None:
    pairs = cited_tests(RELIABILITY.read_text())
    assert len(pairs) > 50  # the document cites its proofs; an empty parse would prove nothing
    missing = []
    for file, name in pairs:
        path = TESTS / file if (TESTS / file).is_file() else TESTS.parent / file  # tests/... or src/...
        if not path.is_file():
            missing.append(file)
        elif name is not None and name not in defined_tests(path):
            missing.append(f"{file}::{name}")
    assert missing == []


def test_continuations_follow_the_file_cited_before() -> None:
    text = "`a/test_x.py::test_one`, `::test_two` then `b/test_y.py` and `conftest.py`"
    assert cited_tests(text) == [
        ("a/test_x.py", "test_one"), ("a/test_x.py", "test_two"), ("b/test_y.py", None)
    ]
