"""`vm5k-testbed serve` as a parent process uses it: URL on the first line, clean exit on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

CLI = [sys.executable, "-m", "g5k_testbed.cli"]


def test_serve_prints_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"alice": "pw"}))
    proc = subprocess.Popen(
        [
            *CLI,
            "serve",
            "--port",
            "0",
            "--sites",
            "nancy,lyon",
            "--state",
            str(tmp_path / "s"),
            "--users",
            str(users),
            "--admin",
            "--fail-rate",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/stable")
        sites = requests.get(f"{url}/sites", headers={"Accept": "application/json"}, timeout=10).json()
        assert [s["uid"] for s in sites["items"]] == ["lyon", "nancy"]
        assert requests.get(f"{url}/sites", auth=("alice", "bad"), timeout=10).status_code == 401
        base = url.rsplit("/", 1)[0]
        assert requests.get(f"{base}/_testbed/clock", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert (tmp_path / "s" / "meta.json").exists()


def test_serve_has_no_control_endpoints_unless_asked(tmp_path: Path) -> None:
    """Fault injection and the clock are the testbed's own: off by default, 404 as any unknown path."""
    proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--sites", "rennes", "--state",
                             str(tmp_path / "s")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        base = url.rsplit("/", 1)[0]
        for method, path in (("GET", "clock"), ("POST", "clock"), ("PATCH", "faults"), ("GET", "state")):
            answer = requests.request(method, f"{base}/_testbed/{path}", json={}, timeout=10)
            assert answer.status_code == 404, (method, path)
        assert requests.get(f"{url}/sites/rennes", headers={"Accept": "application/json"},
                            timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--sites", "mars"], "unknown site(s) mars"),
        (["serve", "--port", "http"], "not a TCP port"),
        (["serve", "--fail-rate", "2"], "must be between 0 and 1"),
        (["serve", "--users", "/nonexistent/users.json"], "cannot read user table"),
        (["serve", "--nope"], "unrecognized arguments"),
        ([], "required"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vm5k-testbed: error: ") and message in lines[0]
    assert "Traceback" not in proc.stderr
