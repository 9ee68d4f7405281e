"""The Grid'5000 platform on the testbed's real nodes: SSH through the testbed's ssh_config, real Kadeploy.

A testbed of its own (two nancy nodes, brought up by the session's lab fixtures), so that deploying its
nodes never disturbs other tests. Checks what only real nodes can show: only materialised nodes are planned
(the others are Absent), Kadeploy installs the run's key, the deployment marker is written and read over
SSH (vm5k.remote), a deployed host is not deployed again, --forcedeploy deploys it anyway.
"""

from __future__ import annotations

from pathlib import Path

import asyncssh
import pytest

from lab_fixtures import LabTestbed
from vm5k.cli import parse_request
from vm5k.platforms.grid5000 import Grid5000Platform
from vm5k.platforms.grid5000.api import ApiClient
from vm5k.platforms.grid5000.credentials import ApiConfig
from vm5k.platforms.grid5000.deployed import MARKER, parse_marker
from vm5k.platforms.grid5000.record import Grid5000Record
from vm5k.remote import SshSettings
from vm5k.topology import HOST_OK

pytestmark = pytest.mark.integration


def deployments(api: ApiClient) -> int:
    return int(api.get("/sites/nancy/deployments", limit=500)["total"])


def test_platform_deploys_real_nodes_once(lab_testbed_factory, tmp_path: Path) -> None:
    lab: LabTestbed = lab_testbed_factory("nancy:2")
    key = asyncssh.generate_private_key("ssh-ed25519", comment="vm5k-g5k-lab-test")
    private = tmp_path / "id_ed25519"
    private.write_bytes(key.export_private_key())
    private.chmod(0o600)
    # the routing-only config: the platform gets in with the run's key that Kadeploy installed, or not at all
    ssh = SshSettings(config_files=(Path(lab.routing_ssh_config),), identity_files=(private,),
                      known_hosts=tmp_path / "known_hosts", record_new_host_keys=True, connect_timeout=20)
    api = ApiClient(ApiConfig(lab.api))
    platform = Grid5000Platform(api, name="testbed", ssh=ssh, poll=1.0,
                                public_key=key.export_public_key().decode().strip())
    request, _ = parse_request(["-n", "4", "-r", "nancy:2", "-w", "0:30:00", "-o", str(tmp_path / "out"),
                                "--api", lab.api, "--ssh-config", lab.routing_ssh_config])
    topo = platform.plan(request.topology, request)
    assert {h.id for h in topo.hosts()} == set(lab.nodes)  # only the materialised nodes are Alive
    topo = platform.resources(platform.wait_running(platform.reserve(topo)))
    try:
        before = deployments(api)
        topo = platform.deploy_hosts(topo)
        assert deployments(api) == before + 1
        assert all(h.state == HOST_OK for h in topo.hosts())
        for node in lab.nodes:
            marker = parse_marker(lab.ssh(node, ["cat", MARKER]).stdout)
            assert marker["environment"] == "debian12-min" and marker["deployment"].startswith("D-")
        # a new run on these hosts finds them deployed: no Kadeploy
        record = Grid5000Record.load(topo)
        record.deployed, record.deployments = [], []
        record.save(topo)
        again = platform.deploy_hosts(topo)
        assert deployments(api) == before + 1 and all(h.state == HOST_OK for h in again.hosts())
        # --forcedeploy deploys anyway (and Kadeploy's reset wipes the old marker, vm5k writes a new one)
        record.options = record.options.with_(forcedeploy=True)
        record.save(topo)
        forced = platform.deploy_hosts(topo)
        assert deployments(api) == before + 2 and all(h.state == HOST_OK for h in forced.hosts())
        new = parse_marker(lab.ssh(lab.nodes[0], ["cat", MARKER]).stdout)["deployment"]
        assert new == Grid5000Record.load(forced).deployments[-1].uid
        release = lab.ssh(lab.nodes[0], "cat /etc/grid5000/release").stdout
        assert release.startswith("debian12-x64-min-")
    finally:
        platform.destroy(topo)
    # the job ended: its nodes were rebooted into the standard environment (seen with the admin config)
    for node in lab.nodes:
        left = lab.ssh(node, f"cat /etc/grid5000/release; ls {MARKER} /root/.ssh/authorized_keys",
                       check=False)
        assert left.stdout.startswith("debian12-x64-std-") and "No such file" in left.stderr
    # a second run on the same nodes deploys them again
    request, _ = parse_request(["-n", "4", "-r", "nancy:2", "-w", "0:30:00", "-o", str(tmp_path / "out2"),
                                "--api", lab.api, "--ssh-config", lab.routing_ssh_config])
    second = platform.reserve(platform.plan(request.topology, request))
    second = platform.resources(platform.wait_running(second))
    try:
        before = deployments(api)
        second = platform.deploy_hosts(second)
        assert deployments(api) == before + 1 and all(h.state == HOST_OK for h in second.hosts())
    finally:
        platform.destroy(second)


def test_kavlan_hosts_are_reached_by_their_vlan_names(lab_testbed_factory, tmp_path: Path) -> None:
    lab: LabTestbed = lab_testbed_factory("nancy:2")
    key = asyncssh.generate_private_key("ssh-ed25519", comment="vm5k-g5k-lab-kavlan")
    private = tmp_path / "id_ed25519"
    private.write_bytes(key.export_private_key())
    private.chmod(0o600)
    ssh = SshSettings(config_files=(Path(lab.routing_ssh_config),), identity_files=(private,),
                      known_hosts=tmp_path / "known_hosts", record_new_host_keys=True, connect_timeout=20)
    api = ApiClient(ApiConfig(lab.api))
    platform = Grid5000Platform(api, name="testbed", ssh=ssh, poll=1.0,
                                public_key=key.export_public_key().decode().strip())
    request, _ = parse_request(["-n", "2", "-r", "nancy:2", "-k", "-w", "0:30:00", "-o",
                                str(tmp_path / "out"), "--api", lab.api, "--ssh-config",
                                lab.routing_ssh_config])
    topo = platform.reserve(platform.plan(request.topology, request))
    topo = platform.resources(platform.wait_running(topo))
    try:
        vlan = Grid5000Record.load(topo).vlan
        assert vlan is not None
        names = {n.replace(".nancy.", f"-kavlan-{vlan}.nancy.") for n in lab.nodes}
        assert {h.id for h in topo.hosts()} == names
        topo = platform.deploy_hosts(topo)
        assert all(h.state == HOST_OK for h in topo.hosts())
        for host in topo.hosts():  # written over SSH to the vlan name, read back the same way
            assert parse_marker(lab.ssh(host.id, ["cat", MARKER]).stdout)["environment"] == "debian12-min"
    finally:
        platform.destroy(topo)
