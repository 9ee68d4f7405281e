"""execo's `execo_g5k.api_utils` reads the reference data from the testbed when pointed at it.

execo is not a dependency of vm5k: it is installed only in the benchmark environment (`pip install
.[bench]`) or a throw-away venv named by `VM5K_EXECO_PYTHON`. The client runs in a subprocess whose HOME
is a temporary folder holding `~/.execo.conf.py`, so execo can never fall back to api.grid5000.fr.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from g5k_testbed.http_server import ServerHandle

SCRIPT = """
import json
from execo_g5k import api_utils as api
print(json.dumps({
    "sites": sorted(api.get_g5k_sites()),
    "clusters": sorted(api.get_site_clusters("nancy", queues=None)),
    "gros": len(api.get_cluster_hosts("gros")),
    "cores": api.get_host_attributes("gros-1")["architecture"]["nb_cores"],
    "site_of": api.get_host_site("parasilo-3.rennes.grid5000.fr"),
    "equipments": len(api.get_site_network_equipments("nancy")),
}))
"""


def execo_python() -> str | None:
    if importlib.util.find_spec("execo_g5k") is not None:
        return sys.executable
    return os.environ.get("VM5K_EXECO_PYTHON") or None


def test_execo_api_utils_reads_the_testbed(server: ServerHandle, tmp_path: Path) -> None:
    python = execo_python()
    if python is None:
        pytest.skip("execo is not installed (pip install .[bench], or set VM5K_EXECO_PYTHON)")
    home = tmp_path / "home"
    home.mkdir()
    api_uri = server.base_url + "/3.0/"  # execo's own default form, https://api.grid5000.fr/3.0/
    (home / ".execo.conf.py").write_text(f"g5k_configuration = {{'api_uri': {api_uri!r}}}\n")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["HOME"] = str(home)
    proc = subprocess.run([python, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["sites"] == ["lyon", "nancy", "rennes"]
    assert "gros" in data["clusters"] and data["gros"] > 100
    assert data["cores"] == 18
    assert data["site_of"] == "rennes"
    assert data["equipments"] > 0
