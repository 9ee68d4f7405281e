"""The run's known_hosts store: keys recorded on first use, checked afterwards, parsed once per change."""

from __future__ import annotations

from pathlib import Path

import asyncssh

from vm5k.remote.known_hosts import KnownHostsStore, known_hosts_line


def new_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519").convert_to_public()


def test_recorded_keys_join_the_parsed_file_without_parsing_it_again(tmp_path: Path) -> None:
    store = KnownHostsStore(tmp_path / "known_hosts", record_new=True)
    parsed = store.load()
    keys = {f"node-{i}": new_key() for i in range(5)}
    for host, key in keys.items():
        assert store.accept(host, 22, key)
        assert store.load() is parsed  # the same object, the new line added to it
    for host, key in keys.items():
        assert store.recorded_keys(host, "", 22) == [key]
    assert store.accept("node-0", 22, new_key()) is False  # a changed key is still refused
    # what the file says is what the parsed object says: a fresh store reads the same keys
    fresh = KnownHostsStore(tmp_path / "known_hosts", record_new=False)
    assert all(fresh.recorded_keys(host, "", 22) == [key] for host, key in keys.items())


def test_a_line_written_by_someone_else_is_read_before_the_next_check(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    store = KnownHostsStore(path, record_new=True)
    store.load()
    theirs = new_key()
    with open(path, "a") as stream:  # another vm5k process of the same run, or the user
        stream.write(known_hosts_line("vm-1", 22, theirs) + "\n")
    assert store.accept("node-1", 22, new_key())
    assert store.recorded_keys("vm-1", "", 22) == [theirs]
    assert store.accept("vm-1", 22, new_key()) is False
