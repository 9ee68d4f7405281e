"""The testbed's live record: every resource it created (written *before* creating it) and node states.

`up`, `down`, `status` and the API server's `LabBackend` are different processes (and the server runs
deployments in threads), so every change is a read-modify-write of `lab-runtime.json` under an exclusive
`flock` on `.lab.lock` (one lock per open file: threads of one process exclude each other too), and the
file is replaced atomically so a crash never leaves half a record.

A crash in the middle of `up` therefore leaves a record of everything that may exist, and `down` undoes
each of them, tolerating the ones that were never really made.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from g5k_testbed.lab.layout import Layout


def write_json(path: Path, data: Any, mode: int = 0o644) -> None:
    """Write JSON atomically (temporary file + rename), so readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def read_json(path: Path, default: Any = None) -> Any:
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError:
        return default


class Runtime:
    """`lab-runtime.json`: {"resources": {key: record}, "order": [keys], "nodes": {...}, ...}."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.layout.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.layout.lock_file, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self) -> dict[str, Any]:
        data = read_json(self.layout.runtime_json, {}) or {}
        data.setdefault("resources", {})
        data.setdefault("order", [])
        data.setdefault("nodes", {})
        return data

    @contextlib.contextmanager
    def edit(self) -> Iterator[dict[str, Any]]:
        """Read, let the caller change, and write back, all under the lock (do not nest)."""
        with self.locked():
            data = self.read()
            yield data
            write_json(self.layout.runtime_json, data)

    def record(self, key: str, kind: str, **fields: Any) -> None:
        """Remember a resource before creating it (in creation order; a new record replaces an old one)."""
        with self.edit() as data:
            data["resources"][key] = {"kind": kind, **fields}
            if key in data["order"]:
                data["order"].remove(key)
            data["order"].append(key)

    def forget(self, key: str) -> None:
        with self.edit() as data:
            data["resources"].pop(key, None)
            if key in data["order"]:
                data["order"].remove(key)

    def resource(self, key: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.read()["resources"].get(key)
        return found
