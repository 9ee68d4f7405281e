"""put / get / write_text on real SSH hosts: content, modes, atomicity, checksums, hostile paths."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from nshosts import NsLab, run, runner_for

from vm5k.remote import Results, SyncRunner


def test_put_a_file_to_many_hosts_and_get_it_back(lab: NsLab, tmp_path: Path) -> None:
    source = tmp_path / "blob"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()

    async def scenario() -> tuple[Results, Results, Results, dict[str, str | None]]:
        async with runner_for(lab, tmp_path) as ssh:
            put = await ssh.put(["h1", "h2", "h3"], source, "/tmp/run/sub dir/blob", mode=0o640,
                                sha256=digest)
            modes = await ssh.run(["h1", "h2", "h3"], ["stat", "-c", "%a", "/tmp/run/sub dir/blob"])
            got = await ssh.get(["h1", "h3"], "/tmp/run/sub dir/blob", tmp_path / "back" / "{host}.bin")
            sums = await ssh.sha256(["h1", "h2", "h3", "h4"], "/tmp/run/sub dir/blob")
            return put, modes, got, sums

    put, modes, got, sums = run(scenario())
    assert put.all_ok and got.all_ok
    assert {r.stdout.strip() for r in modes} == {"640"}
    for host in ("h1", "h3"):
        assert (tmp_path / "back" / f"{host}.bin").read_bytes() == source.read_bytes()
    assert sums == {"h1": digest, "h2": digest, "h3": digest, "h4": None}  # h4 was not given the file


def test_put_with_a_wrong_checksum_installs_nothing(lab: NsLab, tmp_path: Path) -> None:
    async def scenario() -> tuple[Results, Results]:
        async with runner_for(lab, tmp_path) as ssh:
            put = await ssh.put(["h2"], b"payload", "/tmp/checked/file", sha256="0" * 64)
            listing = await ssh.run(["h2"], ["ls", "-A", "/tmp/checked"])
            return put, listing

    put, listing = run(scenario())
    assert put["h2"].exit_status == 3 and "checksum mismatch" in put["h2"].stderr
    assert listing["h2"].stdout == ""  # neither the file nor a temporary one is left


def test_write_text_replaces_a_file_atomically(lab: NsLab, tmp_path: Path) -> None:
    async def scenario() -> Results:
        async with runner_for(lab, tmp_path) as ssh:
            await ssh.write_text(["h1", "h2"], "/tmp/conf/hosts", "old\n")
            await ssh.write_text(["h1", "h2"], "/tmp/conf/hosts", "new\nlines\n", mode=0o600)
            return await ssh.run(["h1", "h2"], ["sh", "-c", "stat -c %a /tmp/conf/hosts; "
                                                "cat /tmp/conf/hosts; ls -A /tmp/conf"])

    results = run(scenario())
    for result in results:
        assert result.stdout == "600\nnew\nlines\nhosts\n"


def test_hostile_remote_paths_are_just_names(lab: NsLab, tmp_path: Path) -> None:
    hostile = "/tmp/x/$(touch /tmp/pwned); `touch /tmp/pwned` 'q\" *"

    async def scenario() -> tuple[Results, Results, Results]:
        async with runner_for(lab, tmp_path) as ssh:
            put = await ssh.write_text(["h1"], hostile, "safe\n")
            read = await ssh.run(["h1"], ["cat", "--", hostile])
            pwned = await ssh.run(["h1"], ["ls", "/tmp/pwned"])
            return put, read, pwned

    put, read, pwned = run(scenario())
    assert put.all_ok and read["h1"].stdout == "safe\n"
    assert pwned.ko_hosts == ["h1"]


def test_get_of_a_missing_file_reports_it_and_leaves_nothing(lab: NsLab, tmp_path: Path) -> None:
    async def scenario() -> Results:
        async with runner_for(lab, tmp_path) as ssh:
            return await ssh.get(["h1"], "/nonexistent", tmp_path / "out")

    results = run(scenario())
    assert results["h1"].exit_status == 1 and "No such file" in results["h1"].stderr
    assert list(tmp_path.glob("*out*")) == []


def test_the_sync_wrapper_drives_the_same_runner(lab: NsLab, tmp_path: Path) -> None:
    with SyncRunner(lambda: runner_for(lab, tmp_path)) as ssh:
        assert ssh.write_text(["h1", "h2"], "/tmp/sync.txt", "sync\n").all_ok
        results = ssh.run(["h1", "h2"], ["cat", "/tmp/sync.txt"])
    assert [r.stdout for r in results] == ["sync\n", "sync\n"]


def test_a_copy_cut_by_a_dropped_connection_is_never_installed_and_is_redone(private_lab: NsLab,
                                                                             tmp_path: Path) -> None:
    lab = private_lab
    lab.rate = "20mbit"  # about 3 s for the file below, so that the drop lands mid-stream
    lab._limit(lab.hosts["h1"].netns, "vh1")
    source = tmp_path / "blob"
    source.write_bytes(os.urandom(8 * 1024 * 1024))

    async def scenario() -> tuple[Results, Results]:
        async with runner_for(lab, tmp_path) as ssh:
            await ssh.run(["h1"], ["true"])
            task = asyncio.create_task(ssh.put(["h1"], source, "/tmp/cut/blob"))  # no checksum asked
            await asyncio.sleep(1.0)
            assert lab.drop_connections("h1") == 1
            put = await task
            listing = await ssh.run(["h1"], ["sh", "-c", "sleep 0.5; ls -A /tmp/cut; "
                                             "sha256sum < /tmp/cut/blob"])
            return put, listing

    put, listing = run(scenario())
    assert put.all_ok  # reconnected and copied again
    names, digest = listing["h1"].stdout.split("\n", 1)
    assert names == "blob"  # the cut first copy left no temporary file and was not installed
    assert digest.split()[0] == hashlib.sha256(source.read_bytes()).hexdigest()
