"""Contract test: EnOSlib 10.9.0's G5k provider, unmodified, against the testbed, configured as a user would.

EnOSlib is not a dependency of vm5k: it lives in its own venv (`scripts/setup.sh --with-enoslib`, named by
`VM5K_ENOSLIB_PYTHON`; scripts/test.sh sets it). The client (`enoslib_client.py`) runs in a subprocess
whose HOME is a temporary folder holding `.python-grid5000.yaml` (the testbed's API) and the user's key,
with `g5k_auto_jump` off and `ANSIBLE_SSH_ARGS=-F <routing-only config> -i <key>`: EnOSlib reaches the
nodes only with what Kadeploy installed (deploy job) or with the key of the user's shared home and
`sudo-g5k` (standard environment), never with the testbed's key.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import requests

from lab_fixtures import LabTestbed

pytestmark = pytest.mark.integration

CLIENT = Path(__file__).with_name("enoslib_client.py")


def enoslib_python() -> str | None:
    return os.environ.get("VM5K_ENOSLIB_PYTHON") or None


@pytest.fixture
def enoslib_lab(lab_testbed_factory) -> LabTestbed:  # type: ignore[no-untyped-def]
    if enoslib_python() is None or not Path(str(enoslib_python())).exists():
        pytest.skip("EnOSlib is not installed (scripts/setup.sh --with-enoslib, VM5K_ENOSLIB_PYTHON)")
    return lab_testbed_factory("rennes:2", ("--api-arg=--kadeploy-duration=1",))


def run_client(lab: LabTestbed, tmp_path: Path, mode: str) -> dict:
    (user,) = lab.status["users"]
    home = tmp_path / "home"
    ssh = home / ".ssh"
    ssh.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(ssh / "id_rsa")],
                   check=True)
    (home / ".python-grid5000.yaml").write_text(
        f"uri: {lab.api}\nusername: {user['login']}\npassword: any\nverify_ssl: false\n")
    # the user's key in its NFS home, as a Grid'5000 user has it on every node
    shared = Path(user["home"]) / ".ssh"
    for name in ("authorized_keys", "id_rsa.pub"):
        (shared / name).write_text((ssh / "id_rsa.pub").read_text())
        os.chown(shared / name, user["uid"], user["uid"])
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(HOME=str(home), ANSIBLE_SSH_ARGS=f"-F {lab.routing_ssh_config} -i {ssh / 'id_rsa'}",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"), USER=user["login"])
    cluster = lab.status["nodes"][0]["cluster"]
    proc = subprocess.run([str(enoslib_python()), str(CLIENT), mode, "rennes", cluster], capture_output=True,
                          text=True, env=env, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def deployments(lab: LabTestbed) -> int:
    return int(requests.get(f"{lab.api}/sites/rennes/deployments", timeout=30).json()["total"])


def job(lab: LabTestbed, uid: int) -> dict:
    return requests.get(f"{lab.api}/sites/rennes/jobs/{uid}", timeout=30).json()


def test_enoslib_deploy_job_with_two_groups_and_a_subnet(enoslib_lab: LabTestbed, tmp_path: Path) -> None:
    lab = enoslib_lab
    before = deployments(lab)
    seen = run_client(lab, tmp_path, "deploy")
    nodes = sorted(lab.nodes)
    assert sorted(seen["roles"]["a"] + seen["roles"]["b"]) == nodes
    assert deployments(lab) == before + 1  # deployed once: the second init() took the job up as it was
    assert seen["again_jobs"] == seen["jobs"]
    for step in ("first", "again"):
        assert sorted(seen[step]) == nodes
        assert all(out.split() == ["root", "debian12-x64-min-2025010712"] for out in seen[step].values())
    site = requests.get(f"{lab.api}/sites/rennes", timeout=30).json()
    (prod4,) = [n for n in seen["networks"]["prod"] if "." in n["network"]]
    assert prod4["network"] == site["kavlans"]["default"]["network"]
    assert prod4["gateway"] == prod4["dns"] == site["kavlans"]["default"]["gateway"]
    (subnet,) = seen["networks"]["subnet"]
    held = job(lab, seen["jobs"][0])["resources_by_type"]["subnets"]
    assert subnet["network"] == held[0] and subnet["gateway"] == site["g5ksubnet"]["gateway"]
    assert subnet["free"] and all(ip.startswith(held[0].rsplit(".", 2)[0]) for ip in subnet["free"])
    # destroy(): the job ends and its nodes are back in the standard environment
    assert job(lab, seen["jobs"][0])["state"] in ("finishing", "error")


def test_enoslib_standard_environment_job(enoslib_lab: LabTestbed, tmp_path: Path) -> None:
    lab = enoslib_lab
    before = deployments(lab)
    seen = run_client(lab, tmp_path, "standard")
    (node,) = seen["roles"]["a"]
    assert deployments(lab) == before  # nothing deployed: the standard environment
    for step in ("first", "again"):  # root through sudo-g5k and the user's own key
        assert seen[step][node].split() == ["root", "debian12-x64-std-2025010712"]
    assert seen["again_jobs"] == seen["jobs"]
