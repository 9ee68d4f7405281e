"""The lab's pure parts and command line, without root: plans, names, generated files, archives."""

from __future__ import annotations

import gzip
import ipaddress
import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from g5k_testbed.lab import plan as lab_plan
from g5k_testbed.lab import siteservices, sshconf
from g5k_testbed.lab.errors import UsageError
from g5k_testbed.lab.image import cpio
from g5k_testbed.lab.image.kernel import extract_vmlinux
from g5k_testbed.lab.layout import Layout, interface_name
from g5k_testbed.lab.procs import ProcRef
from g5k_testbed.reference import Reference


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference.load(["rennes", "nancy"])


def test_site_spec_forms() -> None:
    parse = lab_plan.parse_site_spec
    assert [(r.site, r.cluster, r.count) for r in parse(None, None)] == [("rennes", None, 3)]
    assert [(r.site, r.count) for r in parse("rennes:3,nancy:2", None)] == [("rennes", 3), ("nancy", 2)]
    assert [(r.site, r.count) for r in parse("rennes,nancy", 2)] == [("rennes", 2), ("nancy", 2)]
    assert [(r.cluster, r.count) for r in parse("rennes:parasilo:2", None)] == [("parasilo", 2)]
    bad_specs = ("", " ", "rennes:0", "rennes:2:3", "Rennes", "rennes,rennes", "rennes:a:b", "rennes:2,",
                 "rennes:65")
    for bad in bad_specs:
        with pytest.raises(UsageError):
            parse(bad, None)
    with pytest.raises(UsageError):
        parse("rennes:2", 3)


@settings(max_examples=300, deadline=None)
@given(spec=st.text(alphabet="rennscy:,0123456789-ab ", max_size=20), nodes=st.none() | st.integers(-2, 70))
def test_site_spec_never_fails_otherwise(spec: str, nodes: int | None) -> None:
    try:
        requests = lab_plan.parse_site_spec(spec, nodes)
    except UsageError:
        return
    assert requests and all(1 <= r.count <= lab_plan.MAX_NODES for r in requests)


def test_default_nodes_come_from_a_vm_capable_kavlan_cluster(reference: Reference) -> None:
    chosen = lab_plan.choose(reference, lab_plan.parse_site_spec("rennes:3,nancy:2", None))
    rennes = [n for n in chosen.nodes if n.site == "rennes"]
    assert [n.uid for n in rennes] == ["paradoxe-1", "paradoxe-2", "paradoxe-3"]
    for node in chosen.nodes:
        data = reference.sites[node.site]
        cluster = data.clusters[node.cluster]
        assert cluster["kavlan"] and not cluster["exotic"] and "default" in cluster["queues"]
        doc = next(d for d in data.nodes[node.cluster] if d["uid"] == node.uid)
        primary = lab_plan.primary_adapter(doc)
        assert node.ip == primary["ip"] and node.mac == primary["mac"].lower()
        assert ipaddress.IPv4Address(node.ip) in ipaddress.IPv4Network(chosen.sites[node.site].prod_network)
        assert node.kavlan["4"] == doc["kavlan"][node.device]["kavlan-4"]
        assert len(node.iface) <= 15 and node.fqdn == f"{node.uid}.{node.site}.grid5000.fr"
    assert chosen.sites["rennes"].vlans["16"].kind == "global"
    assert chosen.vlan("16", "nancy").owner == "rennes"  # rennes' global vlan, seen from nancy
    assert chosen.vlan("1", "nancy").owner == "nancy"  # local vlans are per site
    assert lab_plan.LabPlan.from_dict(chosen.to_dict()).to_dict() == chosen.to_dict()


def test_bad_clusters_and_counts_are_refused(reference: Reference) -> None:
    with pytest.raises(UsageError, match="only"):
        lab_plan.choose(reference, lab_plan.parse_site_spec("rennes:parasilo:26", None))
    with pytest.raises(UsageError, match="cannot host"):
        lab_plan.choose(reference, lab_plan.parse_site_spec("rennes:abacus1:1", None))  # production queue


def test_names_carry_the_testbed_id_and_fit_the_kernel() -> None:
    one, two = Layout("/var/lib/vm5k-testbed/a"), Layout("/var/lib/vm5k-testbed/b")
    assert one.id != two.id and len(one.id) == 6
    assert one.node_netns("paradoxe-1").startswith(f"vtb-{one.id}-")
    assert interface_name("paradoxe-12") == "paradoxe-12"
    long = interface_name("a-very-long-node-name-1")
    assert len(long) <= 15 and long != interface_name("a-very-long-node-name-2")
    with pytest.raises(UsageError):
        Layout("/tmp/bad,path")
    with pytest.raises(UsageError):
        Layout("/")


def test_ssh_config_reaches_each_name_through_its_namespace(reference: Reference, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "state")
    chosen = lab_plan.choose(reference, lab_plan.parse_site_spec("rennes:1,nancy:1", None))
    text = sshconf.render_ssh_config(layout, chosen)
    rennes, nancy = chosen.nodes
    assert f"Host {rennes.fqdn} {rennes.uid}.rennes {rennes.uid}\n" in text
    assert f"--net=/run/netns/{layout.site_netns('rennes')} " in text
    assert f" {rennes.ip} %p" in text and f" {rennes.kavlan['4']} %p" in text
    # nancy's node in rennes' global vlan 16 is reached through rennes' namespace, which holds that bridge
    block = text.split(f"Host {nancy.kavlan_fqdn('16')}")[1].split("\n\n")[0]
    assert f"/run/netns/{layout.site_netns('rennes')} " in block and nancy.kavlan["16"] in block
    assert "StrictHostKeyChecking yes" in text and str(layout.known_hosts) in text


def test_dhcp_hosts_follow_the_grid5000_mac_rule() -> None:
    lines = siteservices.render_dhcp_hosts(["10.156.4.0/22"]).splitlines()
    assert len(lines) == 1022
    assert lines[0] == "00:16:3e:9c:04:01,10.156.4.1"
    assert lines[-1] == "00:16:3e:9c:07:fe,10.156.7.254"
    assert siteservices.render_dhcp_hosts([]) == ""


def test_dnsmasq_serves_only_known_macs_on_the_vm_range(reference: Reference, tmp_path: Path) -> None:
    chosen = lab_plan.choose(reference, lab_plan.parse_site_spec("rennes:1", None))
    site = chosen.sites["rennes"]
    conf = siteservices.render_conf(siteservices.SiteFiles(Layout(tmp_path / "s"), "rennes"), site)
    assert "dhcp-range=set:vms,10.156.0.0,static,255.252.0.0," in conf
    assert "dhcp-ignore=tag:!known" in conf and "dhcp-ignore-names" in conf
    assert f"option:router,{site.subnet_gateway}" in conf and f"option:dns-server,{site.prod_gateway}" in conf


def test_cpio_archives_are_read_by_cpio(tmp_path: Path) -> None:
    if shutil.which("cpio") is None:
        pytest.skip("no cpio")
    entries = [cpio.directory("bin"), cpio.file("bin/hello", b"hi\n", 0o755), cpio.symlink("sh", "bin/hello"),
               cpio.char_device("console", 5, 1), cpio.file("odd", b"x" * 5)]
    path = tmp_path / "a.cpio.gz"
    cpio.write_gzip(entries, path)
    listing = subprocess.run(["cpio", "-itv"], input=gzip.decompress(path.read_bytes()), capture_output=True,
                             check=True).stdout.decode()
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in listing.splitlines()]
    assert names == ["bin", "bin/hello", "sh", "console", "odd"]
    assert "crw" in listing and "-rwxr-xr-x" in listing


def test_vmlinux_is_found_behind_the_setup_code() -> None:
    elf = b"\x7fELF" + os.urandom(5000)
    image = b"MZ setup code" + b"\0" * 100 + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"trailer"
    assert extract_vmlinux(image) == elf
    assert extract_vmlinux(b"junk" + gzip.compress(elf) + b"more") == elf


def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen(["sleep", "30"])
    ref = ProcRef.of(child.pid)
    assert ref.alive()
    child.kill()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert not ref.alive() and not ref.signal(15)
    child.wait()
    assert not ProcRef(ref.pid, ref.start + 1).alive()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "g5k_testbed.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("args", [
    ["up", "--site", ""],
    ["up", "--site", "rennes:0"],
    ["up", "--site", "atlantis:2"],
    ["up", "--site", "rennes:2", "--nodes", "3"],
    ["up", "--site", "rennes:nosuchcluster:1"],
    ["up", "--nodes", "many"],
    ["up", "--node-memory", "12"],
    ["up", "--site", "rennes:500"],
    ["image", "--flavour", "windows"],
])
def test_bad_input_is_one_line_and_status_2(args: list[str], tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = run_cli(*args, "--state", str(state)) if args[0] == "up" else run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vm5k-testbed: error: "), proc.stderr
    assert not state.exists()


def fake_hierarchy(root: Path, version: int) -> Path:
    """A folder shaped like the top of a cgroup hierarchy: v1's memory controller, or v2 (unified).

    The kernel makes a cgroup's files itself; here only the files the testbed reads or writes are there.
    cgroup v2 cannot be mounted with the memory controller on this machine (v1 holds it): this checks
    which files the testbed uses for each version, the kernel's own behaviour is checked by the
    integration tests (with v1, here).
    """
    if version == 1:
        (root / "memory").mkdir(parents=True)
        (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
        return root / "memory"
    root.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("cpu pids\n")
    return root


@pytest.mark.parametrize("version", [1, 2])
def test_node_memory_limits_with_cgroup_v1_or_v2(tmp_path: Path, version: int) -> None:
    from g5k_testbed.lab import cgroups
    from g5k_testbed.lab.layout import memory_cgroup_root
    from g5k_testbed.lab.runtime import Runtime

    fs = tmp_path / "cgroup"
    hierarchy = fake_hierarchy(fs, version)
    assert memory_cgroup_root(fs) == hierarchy
    node = hierarchy / "vm5k-testbed" / "abc123" / "paradoxe-1"
    runtime = Runtime(Layout(tmp_path / "state"))
    assert cgroups.is_v2(node) is (version == 2)
    assert cgroups.ensure(runtime, node, 4 << 30) == 4 << 30
    limit, usage = ("memory.max", "memory.current") if version == 2 else ("memory.limit_in_bytes",
                                                                            "memory.usage_in_bytes")
    assert (node / limit).read_text() == str(4 << 30)
    (node / usage).write_text("12345\n")
    assert cgroups.usage(node) == 12345
    if version == 2:  # every cgroup above the node hands the memory controller down to its children
        for folder in (hierarchy, node.parent.parent, node.parent):
            assert "memory" in (folder / "cgroup.subtree_control").read_text().replace("+", " ").split()
    assert f"cgroup:{node}" in runtime.read()["resources"]


def test_no_memory_controller_means_no_testbed(tmp_path: Path) -> None:
    from g5k_testbed.lab.layout import memory_cgroup_root

    (tmp_path / "cgroup.controllers").write_text("cpu io pids\n")  # v2 without memory
    assert memory_cgroup_root(tmp_path) is None
    assert memory_cgroup_root(tmp_path / "nothing") is None
