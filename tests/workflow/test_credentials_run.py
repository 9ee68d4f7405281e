"""A whole run with a Grid'5000 password: it is used, and it is never written anywhere.

The API is a testbed server on 127.0.0.1 that accepts only alice with her password; vm5k reads them from
`~/.python-grid5000.yaml` (HOME is this test's folder), as it would for the real API. The run plans,
reserves, deploys, then cannot reach its hosts (their SSH goes through a ProxyCommand that fails at once:
nothing leaves this machine) and stops; it is then destroyed. Every byte vm5k printed or wrote, debug log
included, is searched for the password, in clear and in the Basic authorization header's encoding.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from g5k_testbed.auth import AuthConfig
from g5k_testbed.http_server import ServerHandle, start_server
from g5k_testbed.testbed import TestbedConfig as Config

VM5K = str(Path(sys.executable).parent / "vm5k")
PASSWORD = "s3cret-Pw-7f1c9e"


@pytest.fixture
def server() -> Iterator[ServerHandle]:
    handle = start_server(Config(sites=["rennes"], auth=AuthConfig(users={"alice": PASSWORD}),
                                        kadeploy_duration=1, launch_delay=0))
    try:
        yield handle
    finally:
        handle.stop()


def vm5k(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("VM5K_API", "VM5K_TESTBED_STATE")}
    env["HOME"] = str(home)
    return subprocess.run([VM5K, *args], cwd=home, env=env, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, check=False)


def test_a_run_uses_the_password_and_never_writes_it(server: ServerHandle, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    credentials = home / ".python-grid5000.yaml"
    credentials.write_text(f"uri: {server.url}\nusername: alice\npassword: {PASSWORD}\n")
    credentials.chmod(0o600)
    unreachable = home / "ssh_config"
    unreachable.write_text("Host *\n  ProxyCommand /bin/false\n")
    out = home / "out"

    run = vm5k(home, "-v", "-n", "2", "-r", "rennes:1", "-w", "0:10:00", "-o", str(out),
               "--ssh-config", str(unreachable))
    assert run.returncode == 1, run.stderr[-3000:]
    assert "platform: grid5000" in run.stderr and "Traceback" not in run.stderr
    assert "job rennes:" in run.stderr  # the password opened the API: the job was submitted as alice
    jobs = [job for oar in server.testbed.oar.values() for job in oar.jobs.values()]
    assert [job.user for job in jobs] == ["alice"]
    destroy = vm5k(home, "-v", "--destroy", str(out))
    assert "Traceback" not in destroy.stderr
    assert all(job.state not in ("waiting", "launching", "running") for job in jobs)

    secrets = [PASSWORD, base64.b64encode(f"alice:{PASSWORD}".encode()).decode()]
    printed = run.stdout + run.stderr + destroy.stdout + destroy.stderr
    assert not [secret for secret in secrets if secret in printed]
    written = sorted(path for path in out.rglob("*") if path.is_file())
    assert {path.name for path in written} >= {"vm5k.log", "topology.json", "initial_topo.xml"}
    leaks = [path.name for path in written for secret in secrets if secret.encode() in path.read_bytes()]
    assert leaks == []
