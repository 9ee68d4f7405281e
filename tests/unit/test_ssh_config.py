"""The run's SSH config, parsed once: each host's options as OpenSSH (and asyncssh) would give them."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh

from vm5k.remote.ssh_config import ClientConfig

TESTBED_LIKE = """
# a testbed's config: one block per node, then one per KaVLAN name
Host node-1.rennes.grid5000.fr node-1.rennes node-1
  HostName node-1.rennes.grid5000.fr
  ProxyCommand /usr/bin/nsenter --net=/run/netns/vtb-rennes /usr/bin/nc 172.16.101.1 %p
  User root
  IdentityFile /state/keys/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile /state/known_hosts
  StrictHostKeyChecking yes
Host node-1-kavlan-1 node-1-kavlan-1.rennes.grid5000.fr
  HostName node-1-kavlan-1.rennes.grid5000.fr
  ProxyCommand /usr/bin/nc 192.168.201.1 %p
Host gw
  HostName=gateway.example.org
  Port 2222
  User alice
Host *.internal !secret.internal
  ProxyJump gw
  User bob
Host *
  IdentityFile ~/.ssh/default_key
  User nobody
"""


def test_lookup_gives_what_asyncssh_reads_from_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "ssh_config"
    path.write_text(TESTBED_LIKE)
    config = ClientConfig.read([path])
    assert config.exact
    hosts = ("node-1", "node-1.rennes", "node-1-kavlan-1", "gw", "db.internal", "secret.internal", "other")
    for host in hosts:
        ours = config.options(host)
        theirs = asyncssh.SSHClientConnectionOptions(config=[str(path)], host=host, known_hosts=None,
                                                     client_keys=None)
        assert ours.hostname == theirs.host, host
        assert ours.port == theirs.port, host
        assert ours.user == theirs.config.get("User"), host
        assert (ours.proxy_command.split() if ours.proxy_command else None) == theirs.proxy_command, host
        jump = theirs.tunnel if isinstance(theirs.tunnel, str) else None
        assert ours.proxy_jump == jump, host
        wanted = [os.path.expanduser(str(p)) for p in theirs.config.get("IdentityFile", [])]
        assert list(ours.identity_files) == wanted, host


def test_first_value_wins_and_identity_files_add_up() -> None:
    config = ClientConfig.parse(TESTBED_LIKE, home="/home/me")
    node = config.options("node-1")
    assert node.user == "root" and node.identities_only
    assert node.identity_files == ("/state/keys/id_ed25519", "/home/me/.ssh/default_key")
    assert node.proxy_command is not None and node.proxy_command.endswith("172.16.101.1 22")
    assert config.options("node-1", port=2200).proxy_command.endswith(" 2200")  # type: ignore[union-attr]
    assert config.options("secret.internal").proxy_jump is None  # negated pattern
    assert config.options("db.internal").user == "bob"


def test_lines_not_understood_leave_the_file_to_asyncssh() -> None:
    assert not ClientConfig.parse("Match host foo\n  User x\n").exact
    assert not ClientConfig.parse("Include other.conf\n").exact
    assert not ClientConfig.parse("Host a\n  Ciphers aes128-ctr\n").exact
    assert not ClientConfig.parse("Host a\n  ProxyCommand nc %C\n").exact
    assert ClientConfig.parse("Host a\n  ServerAliveInterval 5\n  LogLevel ERROR\n").exact


def test_missing_file_is_empty(tmp_path: Path) -> None:
    config = ClientConfig.read([tmp_path / "absent"])
    assert config.exact and config.options("h").hostname == "h" and config.options("h").port == 22


def test_the_pool_reads_the_file_again_only_when_it_changed(tmp_path: Path) -> None:
    from vm5k.remote import SshSettings
    from vm5k.remote.connections import ConnectionPool

    path = tmp_path / "ssh_config"
    path.write_text("Host vm-1\n  HostName 10.0.0.1\n")
    pool = ConnectionPool(SshSettings(config_files=(path,)))
    first = pool.client_config()
    assert pool.client_config() is first and pool.resolve("vm-1").hostname == "10.0.0.1"
    path.write_text("Host vm-1\n  HostName 10.0.0.1\nHost vm-2\n  HostName 10.0.0.2\n")  # a VM added
    assert pool.resolve("vm-2").hostname == "10.0.0.2"
