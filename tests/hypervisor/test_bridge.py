"""The bridge script in a pair of throw-away namespaces: the "host" keeps its address, routes and
connectivity (an open TCP connection survives), a rerun changes nothing, an existing bridge is reused."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest
from tests.hypervisor.shell import run_like_ssh

from vm5k.hypervisor.bridge import bridge_command, parse_bridge
from vm5k.hypervisor.layout import HostLayout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def pair(tmp_path) -> Iterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    tag = f"{os.getpid() % 100000}"
    host, peer = f"v5kt-brh-{tag}", f"v5kt-brp-{tag}"
    for ns in (host, peer):
        ip("netns", "add", ns)
    try:
        ip("link", "add", f"v5kh{tag}", "type", "veth", "peer", "name", f"v5kp{tag}")
        ip("link", "set", f"v5kh{tag}", "netns", host, "name", "eth0")
        ip("link", "set", f"v5kp{tag}", "netns", peer, "name", "eth0")
        for ns, address in ((host, "10.252.0.2/24"), (peer, "10.252.0.1/24")):
            ip("-n", ns, "addr", "add", address, "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", peer, "addr", "add", "10.99.0.1/32", "dev", "lo")
        ip("-n", host, "route", "add", "default", "via", "10.252.0.1")
        ip("-n", host, "route", "add", "10.99.0.0/16", "via", "10.252.0.1")
        yield host, peer
    finally:
        for ns in (host, peer):
            subprocess.run(["ip", "netns", "delete", ns], check=False)


def command(tmp_path) -> list[str]:  # type: ignore[no-untyped-def]
    layout = HostLayout("r1", str(tmp_path / "vm5k"))
    os.makedirs(layout.host_changes_dir)
    return bridge_command("br0", layout)


def test_bridge_keeps_address_routes_and_an_open_connection(pair, tmp_path):  # type: ignore[no-untyped-def]
    host, peer = pair
    mac = ip("-n", host, "-br", "link", "show", "eth0").split()[2]
    # a TCP connection from the peer to the host, open across the change (like the SSH session)
    server = subprocess.Popen(["ip", "netns", "exec", host, "python3", "-c",
                               "import socket;s=socket.socket();"
                               "s.bind(('10.252.0.2',7777));s.listen();c,_=s.accept();"
                               "[c.sendall(c.recv(100)) for _ in range(2)]"])
    try:
        time.sleep(0.3)
        client = subprocess.Popen(["ip", "netns", "exec", peer, "python3", "-c",
                                   "import socket,sys,time;c=socket.create_connection(('10.252.0.2',7777),5);"
                                   "c.sendall(b'a');assert c.recv(10)==b'a';time.sleep(2);c.settimeout(5);"
                                   "c.sendall(b'b');assert c.recv(10)==b'b';print('alive')"],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        result = run_like_ssh(command(tmp_path), netns=host)
        assert result.returncode == 0, result.stdout + result.stderr
        assert parse_bridge(result.stdout) == ("br0", True)
        out, _ = client.communicate(timeout=20)
        assert out.strip() == "alive"
    finally:
        server.kill()
        server.wait()
    assert "10.252.0.2/24" in ip("-n", host, "-4", "-o", "addr", "show", "dev", "br0")
    assert "inet " not in ip("-n", host, "-4", "-o", "addr", "show", "dev", "eth0")
    routes = ip("-n", host, "-4", "route")
    assert "default via 10.252.0.1 dev br0" in routes and "10.99.0.0/16 via 10.252.0.1 dev br0" in routes
    assert ip("-n", host, "-br", "link", "show", "br0").split()[2] == mac
    assert "master br0" in ip("-n", host, "link", "show", "eth0")
    ping = subprocess.run(["ip", "netns", "exec", host, "ping", "-c1", "-W2", "10.99.0.1"],
                          capture_output=True)
    assert ping.returncode == 0

    again = run_like_ssh(command(tmp_path / "again"), netns=host)
    assert again.returncode == 0 and parse_bridge(again.stdout) == ("br0", False)


def test_an_existing_bridge_carrying_the_default_route_is_reused(pair, tmp_path):  # type: ignore[no-untyped-def]
    host, _ = pair
    ip("-n", host, "link", "add", "virbr9", "type", "bridge")
    ip("-n", host, "link", "set", "virbr9", "up")
    ip("-n", host, "link", "set", "eth0", "master", "virbr9")
    ip("-n", host, "addr", "flush", "dev", "eth0")
    ip("-n", host, "addr", "add", "10.252.0.2/24", "dev", "virbr9")
    ip("-n", host, "route", "add", "default", "via", "10.252.0.1")
    result = run_like_ssh(command(tmp_path), netns=host)
    assert result.returncode == 0 and parse_bridge(result.stdout) == ("virbr9", False)
    assert "br0" not in ip("-n", host, "-br", "link")


def test_a_non_bridge_br0_is_refused_and_nothing_moves(pair, tmp_path) -> None:  # type: ignore[no-untyped-def]
    host, _ = pair
    ip("-n", host, "link", "add", "br0", "type", "veth", "peer", "name", "br0peer")
    result = run_like_ssh(command(tmp_path), netns=host)
    assert result.returncode != 0 and "not a bridge" in result.stdout
    assert "10.252.0.2/24" in ip("-n", host, "-4", "addr", "show", "eth0")
