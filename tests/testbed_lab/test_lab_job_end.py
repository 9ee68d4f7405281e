"""The end of a job on real nodes, as on Grid'5000: whatever ends it, its nodes go back to the standard env.

A testbed of its own (one nancy node, admin API: the test moves its clock). A deploy job gets the node
with the test's key; a VM and a process run on it; then the walltime runs out (testbed clock), or the user
kills the job, or an admin does: the job is `finishing` while the node reboots, then `error`; the node
then has no VM, no process of the job, no deployed file, no key of the user, and runs the standard
environment; the next job gets it fresh. The test reaches the node with the routing-only config and its
own key (proving its access), and inspects it with the testbed's admin config.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
from grid5000 import Grid5000

from lab_fixtures import LabTestbed, create_vm, prepare_bridge
from waiting import wait_for

pytestmark = pytest.mark.integration

DEPLOY_JOB = {"resources": "nodes=1,walltime=1:00:00", "command": "sleep 31536000", "types": ["deploy"]}


@pytest.fixture
def node_lab(lab_testbed_factory) -> LabTestbed:  # type: ignore[no-untyped-def]
    return lab_testbed_factory("nancy:1", ("--api-arg=--admin", "--api-arg=--kadeploy-duration=1"))


def user_ssh(lab: LabTestbed, key: Path, node: str, command: str) -> subprocess.CompletedProcess[str]:
    """A client with its own key and the routing-only config: in only if the node accepts that key."""
    argv = ["ssh", "-F", lab.routing_ssh_config, "-i", str(key), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", f"root@{node}", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def job_state(lab: LabTestbed, uid: int) -> str:
    return str(requests.get(f"{lab.api}/sites/nancy/jobs/{uid}", timeout=30).json()["state"])


def deployed_job(lab: LabTestbed, key: Path) -> tuple[Any, str]:
    """A running deploy job whose node runs debian12-min with the test's key, a VM and a stray process."""
    site = lab.grid5000().sites["nancy"]
    job = site.jobs.create(DEPLOY_JOB)
    wait_for(lambda: job.refresh() or job.state == "running", 60, interval=0.2)
    (node,) = job.assigned_nodes
    dep = site.deployments.create({"nodes": [node], "environment": "debian12-min",
                                   "key": Path(f"{key}.pub").read_text()})
    wait_for(lambda: dep.refresh() or dep.status != "processing", 120, interval=0.2)
    assert dep.status == "terminated" and dep.result[node]["state"] == "OK"
    assert user_ssh(lab, key, node, "cat /etc/grid5000/release").stdout.startswith("debian12-x64-min-")
    assert user_ssh(lab, key, node, "mkdir -p /var/lib/vm5k; echo x > /var/lib/vm5k/deployed; "
                                    "nohup sleep 7777 </dev/null >/dev/null 2>&1 &").returncode == 0
    prepare_bridge(lab, node)
    create_vm(lab, node, "jobend-vm", "00:16:3e:90:00:01", "10.144.0.1", memory_mib=128)
    assert "jobend-vm" in lab.ssh(node, "virsh -q -c qemu:///system list --name").stdout
    lab.vms.clear()  # the job's end removes it, not the fixture
    return job, node


def assert_standard(lab: LabTestbed, key: Path, node: str) -> None:
    assert user_ssh(lab, key, node, "true").returncode == 255  # the user's key is gone
    seen = lab.ssh(node, "cat /etc/grid5000/release; virsh -q -c qemu:///system list --all --name; "
                         "pgrep -x sleep || true; pgrep qemu-system || true; "
                         "ls /var/lib/vm5k/deployed /root/.ssh/authorized_keys 2>&1 || true").stdout
    lines = [line for line in seen.splitlines() if line.strip()]
    assert lines[0].startswith("debian12-x64-std-"), seen
    assert all("No such file" in line for line in lines[1:]), seen  # no VM, no process, no file, no key


@pytest.mark.parametrize("end", ["walltime", "user kill", "admin kill"])
def test_the_end_of_a_job_reboots_its_node_into_the_standard_environment(node_lab: LabTestbed,
                                                                         tmp_path: Path, end: str) -> None:
    lab = node_lab
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    job, node = deployed_job(lab, key)
    uid = job.uid
    following = lab.grid5000().sites["nancy"].jobs.create(DEPLOY_JOB)  # waits for the node
    admin = lab.api.rsplit("/", 1)[0] + "/_testbed"
    if end == "walltime":
        requests.post(f"{admin}/clock", json={"advance": 3600}, timeout=30).raise_for_status()
    elif end == "user kill":
        job.delete()
    else:
        requests.delete(f"{admin}/sites/nancy/jobs/{uid}", timeout=30).raise_for_status()
    assert job_state(lab, uid) == "finishing"  # while its node reboots
    wait_for(lambda: job_state(lab, uid) == "error", 60, interval=0.1)
    assert_standard(lab, key, node)
    # the next job gets the node fresh: nothing of the previous one is left
    wait_for(lambda: following.refresh() or following.state == "running", 60, interval=0.2)
    assert following.assigned_nodes == [node]
    assert_standard(lab, key, node)
    following.delete()
    wait_for(lambda: job_state(lab, following.uid) == "error", 60, interval=0.2)


def test_a_standard_environment_job_lets_its_user_in_and_sudo_g5k_means_a_redeployment(
        node_lab: LabTestbed, tmp_path: Path) -> None:
    """Outside deploy jobs: the testbed user logs in with the key of its shared home, only while it has
    the node; `sudo-g5k` makes it root; at the end its processes are gone, and a node where it became
    root is redeployed (root's keys it added are gone)."""
    lab = node_lab
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (user,) = lab.status["users"]
    keys = Path(user["home"]) / ".ssh" / "authorized_keys"
    keys.write_text(Path(f"{key}.pub").read_text())
    os.chown(keys, user["uid"], user["uid"])
    node = lab.nodes[0]

    def as_user(command: str) -> subprocess.CompletedProcess[str]:
        argv = ["ssh", "-F", lab.routing_ssh_config, "-i", str(key), "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", f"{user['login']}@{node}", command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    assert as_user("true").returncode == 255  # no job: no access
    site = Grid5000(uri=lab.api, username=user["login"], password="any").sites["nancy"]
    job = site.jobs.create({"resources": "nodes=1,walltime=1:00:00", "command": "sleep 1d"})
    wait_for(lambda: job.refresh() or job.state == "running", 60, interval=0.2)
    assert as_user("id -un; cat /etc/grid5000/release").stdout.split() == [user["login"],
                                                                           "debian12-x64-std-2025010712"]
    assert user_ssh(lab, key, node, "true").returncode == 255  # never root by itself
    assert as_user("sudo-g5k id -u; nohup sleep 4242 </dev/null >/dev/null 2>&1 &").stdout.strip() == "0"
    (Path(user["home"]) / Path(f"{key}.pub").name).write_text(Path(f"{key}.pub").read_text())
    assert as_user(f"cat {Path(f'{key}.pub').name} | sudo-g5k tee -a /root/.ssh/authorized_keys"
                   ).returncode == 0
    assert user_ssh(lab, key, node, "true").returncode == 0  # root through the key it added
    job.delete()
    wait_for(lambda: job_state(lab, job.uid) == "error", 60, interval=0.1)
    assert as_user("true").returncode == 255
    assert_standard(lab, key, node)
