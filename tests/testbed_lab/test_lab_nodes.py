"""A running testbed's nodes: SSH by every name, private filesystems, own libvirt, OAR's view, Kadeploy.

All tests share the session's testbed (`lab_testbed`: 3 nodes of rennes) and leave it as they found it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from g5k_testbed.lab.cgroups import memory_file
from g5k_testbed.lab.layout import Layout
from lab_fixtures import LabTestbed
from waiting import wait_for

pytestmark = pytest.mark.integration

IMAGE = "/grid5000/virt-images/debian12-x64-min.qcow2"



def test_status_names_api_config_image_and_nodes(lab_testbed: LabTestbed) -> None:
    status = lab_testbed.refresh()
    assert status["state"] == "up"
    assert status["api"].startswith("http://127.0.0.1:") and status["api"].endswith("/stable")
    assert Path(status["ssh_config"]).is_file()
    assert status["image"] == IMAGE and Path(IMAGE).is_file()
    assert status["accel"] in ("kvm", "tcg")
    assert len(status["nodes"]) == 3
    for node in status["nodes"]:
        assert set(node) >= {"name", "ip", "site", "cluster", "state"}
        assert node["state"] == "up" and node["site"] == "rennes"
        assert node["name"].startswith(f"{node['cluster']}-") and node["name"].endswith(".rennes.grid5000.fr")
    boot = json.loads(Path(f"{IMAGE}.boot.json").read_text())
    for part in ("kernel", "initrd"):
        assert (Path(IMAGE).parent / boot[part]).is_file()
    assert "root=" in boot["cmdline"]


def test_ssh_by_every_name_with_strict_host_keys(lab_testbed: LabTestbed) -> None:
    config = Path(lab_testbed.ssh_config).read_text()
    assert "StrictHostKeyChecking yes" in config
    for node in lab_testbed.nodes:
        short = node.split(".")[0]
        for name in (node, short, f"{short}.rennes"):
            assert lab_testbed.ssh(name, "hostname").stdout.strip() == node
    # Nothing of the testbed is routed from the machine itself.
    machine = Path("/etc/hosts").read_text()
    assert lab_testbed.nodes[0] not in machine
    ip = lab_testbed.node(lab_testbed.nodes[0])["ip"]
    import subprocess
    route = subprocess.run(["ip", "route", "get", ip], capture_output=True, text=True, check=False).stdout
    assert "vtb-" not in route and "br-prod" not in route


def test_root_and_tmp_are_private_to_each_node(lab_testbed: LabTestbed) -> None:
    first, *others = lab_testbed.nodes
    stamp = f"written-on-{first}-{time.time()}"
    lab_testbed.ssh(first, f"echo {stamp} > /root/lab-private && echo {stamp} > /tmp/lab-private "
                           f"&& mkdir -p /var/lib/lab-private && echo {stamp} > /etc/lab-private")
    try:
        assert lab_testbed.ssh(first, "cat /root/lab-private").stdout.strip() == stamp
        for other in others:
            for path in ("/root/lab-private", "/tmp/lab-private", "/var/lib/lab-private", "/etc/lab-private"):
                assert lab_testbed.ssh(other, f"test -e {path}", check=False).returncode == 1, (other, path)
        assert not Path("/root/lab-private").exists() and not Path("/etc/lab-private").exists()
    finally:
        lab_testbed.ssh(first, "rm -rf /root/lab-private /tmp/lab-private /var/lib/lab-private "
                               "/etc/lab-private")


def test_each_node_has_its_own_empty_libvirt(lab_testbed: LabTestbed) -> None:
    first, second = lab_testbed.nodes[:2]
    for node in lab_testbed.nodes:
        listing = lab_testbed.ssh(node, "virsh -c qemu:///system list --all --name").stdout
        assert listing.strip() == ""
    network = ("<network><name>lab-private</name><bridge name='virbr-lab'/>"
               "<ip address='192.0.2.1' netmask='255.255.255.0'/></network>")
    lab_testbed.ssh(first, f"echo \"{network}\" > /tmp/net.xml && "
                           "virsh -q -c qemu:///system net-define /tmp/net.xml")
    try:
        assert "lab-private" in lab_testbed.ssh(first, "virsh -c qemu:///system net-list --all --name").stdout
        listing = lab_testbed.ssh(second, "virsh -c qemu:///system net-list --all --name").stdout
        assert "lab-private" not in listing
    finally:
        lab_testbed.ssh(first, "virsh -q -c qemu:///system net-undefine lab-private")


def test_packages_of_the_machine_are_installed_on_nodes_offline(lab_testbed: LabTestbed) -> None:
    node = lab_testbed.nodes[0]
    proc = lab_testbed.ssh(node, "apt-get install -y --no-download qemu-utils", check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "already the newest version" in proc.stdout
    missing = lab_testbed.ssh(node, "apt-get install -y sl", check=False, timeout=300)
    assert missing.returncode != 0
    assert "no network access" in missing.stderr


def test_oar_shows_only_materialised_nodes_alive(lab_testbed: LabTestbed) -> None:
    site = lab_testbed.grid5000().sites["rennes"]
    status = site.status.list()
    alive = {name for name, entry in status.nodes.items() if entry["hard"] == "alive"}
    assert alive == set(lab_testbed.nodes)
    assert {entry["hard"] for name, entry in status.nodes.items() if name not in alive} == {"absent"}
    # The API still shows the nodes' real reference hardware.
    cluster = lab_testbed.node(lab_testbed.nodes[0])["cluster"]
    node = site.clusters[cluster].nodes[lab_testbed.nodes[0].split(".")[0]]
    assert node.main_memory["ram_size"] > 64 << 30


def test_node_memory_is_limited_by_its_cgroup(lab_testbed: LabTestbed) -> None:
    status = lab_testbed.refresh()
    node = status["nodes"][0]
    total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    assert 0 < node["memory_limit"] < total
    cgroup = Layout(lab_testbed.state_dir).node_cgroup(node["name"].split(".")[0])
    assert int(memory_file(cgroup, "limit").read_text()) == node["memory_limit"]
    assert int(memory_file(cgroup.parent, "limit").read_text()) < total
    names = set()
    for pid in (cgroup / "cgroup.procs").read_text().split():
        try:
            names.add(Path(f"/proc/{pid}/comm").read_text().strip())
        except FileNotFoundError:
            continue
    assert {"sshd", "libvirtd", "virtlogd"} <= names


def test_kadeploy_resets_the_node_and_keeps_the_testbed_key(lab_testbed: LabTestbed, tmp_path: Path) -> None:
    site = lab_testbed.grid5000().sites["rennes"]
    node = lab_testbed.nodes[2]
    job = site.jobs.create({"resources": f"{{network_address in ('{node}')}}/nodes=1,walltime=0:30:00",
                            "types": ["deploy"], "command": "sleep 3600", "name": "lab-deploy"})
    try:
        wait_for(lambda: (job.refresh(), job.state)[1] == "running", 60)
        before = lab_testbed.ssh(node, "cat /run/sshd.pid; cat /etc/machine-id").stdout
        lab_testbed.ssh(node, "echo data > /root/user-file && mkdir -p /var/lib/libvirt/images/x "
                              "&& echo 1 > /etc/vm5k-packages-marker")
        key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDeployTestKeyOnlyForTheTestbedLab0000000 user@frontend"
        dep = site.deployments.create({"nodes": [node], "environment": "debian12-min", "key": key})
        wait_for(lambda: (dep.refresh(), dep.status)[1] != "processing", 120)
        assert dep.status == "terminated"
        assert dep.result[node]["state"] == "OK"
        after = lab_testbed.ssh(node, "cat /run/sshd.pid; cat /etc/machine-id").stdout
        assert after.splitlines()[1] == before.splitlines()[1]  # same machine, fresh system
        for path in ("/root/user-file", "/var/lib/libvirt/images/x", "/etc/vm5k-packages-marker"):
            assert lab_testbed.ssh(node, f"test -e {path}", check=False).returncode == 1, path
        assert lab_testbed.ssh(node, "cat /root/.ssh/authorized_keys").stdout.strip() == key
        assert lab_testbed.ssh(node, "virsh -c qemu:///system list --all --name").stdout.strip() == ""
    finally:
        job.delete()
