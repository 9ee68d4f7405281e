"""Persistence of the testbed's state in `--state DIR`, so that a restart loses no job, deployment or vlan.

One small JSON file per job and per deployment (written when it changes: a submission costs one small
write, never a dump of every job), plus `meta.json` (clock, id counters, faults) and `kavlan.json`.
Writes are atomic (temporary file + rename). Without a state folder everything stays in memory.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class StateStore:
    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None
        if self.root is not None:
            for sub in ("jobs", "deployments", "files"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def _write(self, path: Path, data: Any) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, separators=(",", ":"))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def save(self, kind: str, name: str, data: Any) -> None:
        """kind: "jobs" or "deployments" (one file each), or "" for a top-level file."""
        if self.root is None:
            return
        folder = self.root / kind if kind else self.root
        self._write(folder / f"{name}.json", data)

    def load_all(self, kind: str) -> list[Any]:
        if self.root is None:
            return []
        out = []
        for path in sorted((self.root / kind).glob("*.json")):
            out.append(json.loads(path.read_text()))
        return out

    def load(self, name: str) -> Any | None:
        if self.root is None:
            return None
        path = self.root / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def save_file(self, name: str, content: str) -> None:
        if self.root is not None:
            path = self.root / "files" / name
            if not path.exists():
                path.write_text(content)

    def read_file(self, name: str) -> str | None:
        if self.root is None:
            return None
        path = self.root / "files" / name
        return path.read_text() if path.exists() else None
