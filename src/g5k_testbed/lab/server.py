"""Start the testbed's API server (`vm5k-testbed serve`) in the background, and find its URL.

    vm5k-testbed serve --state <state> --port 0 --sites rennes,nancy

runs detached (own session; stdout in <state>/logs/api.out, stderr in <state>/logs/api.log); its
first output line is its base URL.
The server finds `<state>/lab.json` and drives the nodes through `LabBackend`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

from g5k_testbed.lab.errors import LabError
from g5k_testbed.lab.layout import Layout
from g5k_testbed.lab.procs import ProcRef
from g5k_testbed.lab.runtime import Runtime

START_TIMEOUT = 60
_URL = re.compile(r"(https?://[^\s/]+(?::\d+)?)")


def api_url(base: str) -> str:
    """The URL clients use (python-grid5000's `uri`): the base URL followed by `/stable`."""
    base = base.rstrip("/")
    return base if base.endswith("/stable") else base + "/stable"


def start(layout: Layout, runtime: Runtime, sites: list[str], extra: list[str]) -> tuple[ProcRef, str]:
    record = runtime.resource("process:api")
    if record and ProcRef.from_dict(record).alive() and record.get("url"):
        return ProcRef.from_dict(record), record["url"]
    out_path = layout.logs_dir / "api.out"
    err_path = layout.logs_dir / "api.log"
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-c", "import sys; from g5k_testbed.cli import main; sys.exit(main())",
            "serve", "--state", str(layout.state_dir), "--port", "0", "--sites", ",".join(sites), *extra]
    with open(out_path, "wb") as out, open(err_path, "ab") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True, cwd="/")
    ref = ProcRef.of(proc.pid)
    runtime.record("process:api", "process", **ref.to_dict())
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        output = out_path.read_text(errors="replace")
        match = _URL.search(output.splitlines()[0]) if "\n" in output else None
        if match:
            url = match.group(1)
            runtime.record("process:api", "process", **ref.to_dict(), url=url)
            return ref, url
        if proc.poll() is not None:
            tail = " | ".join(err_path.read_text(errors="replace").strip().splitlines()[-3:])
            raise LabError(f"the API server exited with status {proc.returncode}: {tail}")
        time.sleep(0.05)
    raise LabError(f"the API server printed no URL within {START_TIMEOUT} s (see {err_path})")
