"""The service node's dnsmasq and the hosts' resolvers: pure config checks, then the real scripts.

The script tests run the exact command lines the SSH layer sends, in a network namespace of the test's own
(a bridge and nothing else: no route anywhere) and, for /etc/resolv.conf, in a private mount namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.hypervisor.shell import run_like_ssh

from vm5k.errors import UsageError
from vm5k.hypervisor import dnsmasq
from vm5k.hypervisor.layout import HostLayout
from vm5k.hypervisor.settings import VmNetwork
from vm5k.remote import command_line
from waiting import wait_for

KAVLAN = VmNetwork(mode="kavlan", cidr="10.253.0.0/24", gateway="10.253.0.1", domain="r1.test")
SUBNET = VmNetwork(mode="subnet", cidr="10.158.0.0/22")


def lines(text: str) -> list[str]:
    return text.splitlines()


def test_kavlan_config_serves_static_dhcp_and_hands_itself_out_as_dns() -> None:
    files = dnsmasq.DnsmasqFiles.of(HostLayout("r1"))
    conf = lines(dnsmasq.config(files, KAVLAN, "10.253.0.10", "r1"))
    assert "listen-address=10.253.0.10" in conf and "bind-interfaces" in conf
    assert "dhcp-range=set:vm5k,10.253.0.0,static,255.255.255.0,12h" in conf
    assert "dhcp-ignore=tag:!known" in conf
    assert "dhcp-option=tag:vm5k,option:dns-server,10.253.0.10" in conf
    assert "dhcp-option=tag:vm5k,option:router,10.253.0.1" in conf
    assert f"dhcp-hostsfile={files.dhcp_hosts}" in conf
    assert "dhcp-authoritative" not in conf  # another run's server may share the segment
    file_options = ("pid-file", "addn-hosts", "resolv-file", "log-facility", "dhcp-hostsfile",
                    "dhcp-leasefile")
    paths = [line.split("=", 1)[1] for line in conf if line.split("=", 1)[0] in file_options]
    assert len(paths) == len(file_options)
    assert all(path.startswith("/tmp/vm5k/runs/r1/dnsmasq/") for path in paths)


def test_kavlan_without_gateway_offers_no_router() -> None:
    net = VmNetwork(mode="kavlan", cidr="10.253.0.0/24")
    conf = lines(dnsmasq.config(dnsmasq.DnsmasqFiles.of(HostLayout("r1")), net, "10.253.0.10", "r1"))
    assert "dhcp-option=tag:vm5k,option:router" in conf  # empty: dnsmasq would offer itself otherwise


def test_subnet_config_is_dns_only() -> None:
    conf = dnsmasq.config(dnsmasq.DnsmasqFiles.of(HostLayout("r1")), SUBNET, "10.158.3.254", "r1")
    assert "dhcp" not in conf
    assert "listen-address=10.158.3.254" in lines(conf)


def test_hosts_files() -> None:
    assert dnsmasq.hosts_file([("vm-1", "10.0.0.5")]) == "10.0.0.5 vm-1\n"
    assert dnsmasq.dhcp_hosts_file([("vm-1", "10.0.0.5", "02:56:0A:00:00:05")]) == \
        "02:56:0a:00:00:05,10.0.0.5,vm-1\n"


@pytest.mark.parametrize("entry", [("vm-1\n10.0.0.9 evil", "10.0.0.5"), ("vm-1", "10.0.0.5\nevil"),
                                   ("vm 1", "10.0.0.5")])
def test_hostile_names_and_addresses_never_reach_the_files(entry: tuple[str, str]) -> None:
    with pytest.raises(UsageError):
        dnsmasq.hosts_file([entry])
    with pytest.raises(UsageError):
        dnsmasq.dhcp_hosts_file([(*entry, "00:16:3e:00:00:05")])


def test_service_interface() -> None:
    assert dnsmasq.service_interface("10.253.0.10", KAVLAN, "10.253.0.2", 24) == "10.253.0.10/24"
    assert dnsmasq.service_interface("10.253.0.2", KAVLAN, "10.253.0.2", 24) == ""


# ------------------------------------------------------------------ the real scripts

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("dnsmasq") is None,
                                reason="needs root and dnsmasq")


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"v5kt-dns-{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for argv in (["link", "add", "br0", "type", "bridge"], ["addr", "add", "10.253.0.1/24", "dev", "br0"],
                     ["link", "set", "br0", "up"], ["link", "set", "lo", "up"]):
            subprocess.run(["ip", "-n", name, *argv], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "pids", name], capture_output=True)
        for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                  text=True).stdout.split():
            if Path(f"/proc/{pid}/comm").read_text().strip() == "dnsmasq":
                os.kill(int(pid), 15)
        subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def base() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="vm5k-test-dns-", dir="/tmp")
    os.chmod(folder, 0o755)  # dnsmasq re-reads its files as nobody
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def lookup(netns: str, name: str, server: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", netns, "busybox", "nslookup", "-type=a", name, server],
                         capture_output=True, text=True, timeout=20).stdout
    return out.split("Name:", 1)[1] if "Name:" in out else ""


def dnsmasq_pid(layout: HostLayout) -> int | None:
    path = Path(dnsmasq.DnsmasqFiles.of(layout).pid)
    return int(path.read_text()) if path.exists() else None


@needs_root
def test_start_reload_restart_stop(netns: str, base: str) -> None:
    layout = HostLayout("r1", base)
    files = dnsmasq.DnsmasqFiles.of(layout)
    for folder in (layout.runs_dir, layout.run_dir, layout.dnsmasq_dir, layout.host_changes_dir):
        os.makedirs(folder, exist_ok=True)
        os.chmod(folder, 0o755)
    Path(files.upstream).write_text("")  # nothing is forwarded anywhere
    Path(files.hosts).write_text(dnsmasq.hosts_file([("vm-1", "10.253.0.5")]))
    Path(files.dhcp_hosts).write_text(dnsmasq.dhcp_hosts_file([("vm-1", "10.253.0.5", "02:56:0a:fd:00:05")]))
    Path(files.conf + ".new").write_text(dnsmasq.config(files, KAVLAN, "10.253.0.10", "r1"))
    start = dnsmasq.start_command(layout, "br0", "10.253.0.10", "10.253.0.10/24")

    first = run_like_ssh(start, netns=netns)
    assert first.returncode == 0 and "started" in first.stdout, first.stderr
    pid = dnsmasq_pid(layout)
    assert "10.253.0.5" in lookup(netns, "vm-1", "10.253.0.10")
    assert "10.253.0.5" in lookup(netns, "vm-1.r1.test", "10.253.0.10")
    listening = subprocess.run(["ip", "netns", "exec", netns, "ss", "-lnu"], capture_output=True,
                               text=True).stdout
    assert "10.253.0.10:53" in listening
    assert "0.0.0.0:53" not in listening and "10.253.0.1:53" not in listening

    Path(files.hosts).write_text(dnsmasq.hosts_file([("vm-1", "10.253.0.5"), ("vm-2", "10.253.0.6")]))
    Path(files.conf + ".new").write_text(dnsmasq.config(files, KAVLAN, "10.253.0.10", "r1"))
    again = run_like_ssh(start, netns=netns)
    assert "reloaded" in again.stdout and dnsmasq_pid(layout) == pid  # SIGHUP, not a restart
    wait_for(lambda: "10.253.0.6" in lookup(netns, "vm-2", "10.253.0.10"), 10, 0.1)  # files reread

    changed = VmNetwork(mode="kavlan", cidr="10.253.0.0/24", gateway="10.253.0.254")
    Path(files.conf + ".new").write_text(dnsmasq.config(files, changed, "10.253.0.10", "r1"))
    restarted = run_like_ssh(start, netns=netns)
    assert "restarted" in restarted.stdout and dnsmasq_pid(layout) != pid

    stopped = run_like_ssh(dnsmasq.stop_command(layout), netns=netns)
    assert "stopped" in stopped.stdout and "removed 10.253.0.10/24" in stopped.stdout
    addresses = subprocess.run(["ip", "-n", netns, "-4", "addr", "show", "br0"], capture_output=True,
                               text=True).stdout
    assert "10.253.0.10" not in addresses and "10.253.0.1/24" in addresses
    assert lookup(netns, "vm-1", "10.253.0.10") == ""


RESOLV = "search rennes.grid5000.fr\nnameserver 172.16.111.254\n"


def with_resolv(tmp: Path, argvs: list[list[str]]) -> str:
    """Run command lines with a private /etc/resolv.conf (a bind mount in a private mount namespace)."""
    fake = tmp / "resolv.conf"
    fake.write_text(RESOLV)
    script = f"mount --bind {fake} /etc/resolv.conf\n" + "\n".join(command_line(argv) for argv in argvs)
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return fake.read_text()


@needs_root
def test_resolver_lines_of_two_runs(tmp_path: Path) -> None:
    r1, r2 = HostLayout("r1", str(tmp_path)), HostLayout("r2", str(tmp_path))
    os.makedirs(r1.host_facts_dir)
    add1, add2 = dnsmasq.resolver_add_command(r1, "10.0.0.1"), dnsmasq.resolver_add_command(r2, "10.0.0.2")
    both = with_resolv(tmp_path, [add1, add1, add2])  # adding twice is a no-op
    assert both.splitlines() == ["# vm5k run r2", "nameserver 10.0.0.2",
                                 "# vm5k run r1", "nameserver 10.0.0.1", *RESOLV.splitlines()]
    after = with_resolv(tmp_path, [add1, add2, dnsmasq.resolver_remove_command(r1)])
    assert after.splitlines() == ["# vm5k run r2", "nameserver 10.0.0.2", *RESOLV.splitlines()]
    clean = with_resolv(tmp_path, [add1, add2, dnsmasq.resolver_remove_command(r2),
                                   dnsmasq.resolver_remove_command(r1), dnsmasq.resolver_remove_command(r1)])
    assert clean == RESOLV


@needs_root
def test_resolver_line_is_removed_after_the_host_rebooted(tmp_path: Path) -> None:
    """/tmp (and vm5k's lock folder in it) is gone after a reboot, the resolver line in /etc is not: the
    destroy of a run whose host died and came back must still remove it."""
    layout = HostLayout("r1", str(tmp_path / "base"))
    fake = tmp_path / "resolv.conf"
    fake.write_text("# vm5k run r1\nnameserver 10.0.0.1\n" + RESOLV)
    script = (f"mount --bind {fake} /etc/resolv.conf\n"
              + command_line(dnsmasq.resolver_remove_command(layout)))
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert fake.read_text() == RESOLV


@needs_root
def test_stopping_a_run_keeps_the_service_address_of_another_run_in_the_same_network(netns: str,
                                                                                      base: str) -> None:
    """Two runs on one service node add their addresses to its bridge, in the same VM network: the one
    added second is a secondary address of the first, which the kernel deletes with it unless told to
    promote it. Destroying the first run must leave the second one's DNS server reachable."""
    runs = [HostLayout("r1", base), HostLayout("r2", base)]
    for layout, address in zip(runs, ("10.254.1.254/16", "10.254.2.254/16"), strict=True):
        os.makedirs(layout.host_changes_dir, exist_ok=True)
        Path(dnsmasq.service_record(layout)).write_text(f"br0 {address}\n")
        subprocess.run(["ip", "-n", netns, "addr", "add", address, "dev", "br0"], check=True)
    stopped = run_like_ssh(dnsmasq.stop_command(runs[0]), netns=netns)
    assert "removed 10.254.1.254/16" in stopped.stdout, stopped.stderr
    addresses = subprocess.run(["ip", "-n", netns, "-4", "addr", "show", "br0"], capture_output=True,
                               text=True).stdout
    assert "10.254.1.254" not in addresses and "10.254.2.254/16" in addresses
