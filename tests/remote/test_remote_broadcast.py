"""Chain broadcast of a file over SSH between real hosts: dead hosts, broken hops, skip-if-present."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from nshosts import NET, NsLab, run, runner_for

from vm5k.remote import BroadcastReport, Results, broadcast_file, start_broadcast

HOSTS = ["h1", "h2", "h3", "h4"]
DEST = "/tmp/run-1/images/base.qcow2"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "base.qcow2"
    path.write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    return path


def digest_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def leftovers(ssh, hosts: list[str], dest: str = DEST) -> Results:  # type: ignore[no-untyped-def]
    """What a broadcast may leave behind: its authorized_keys line, its directory, partial files."""
    return await ssh.run(hosts, ["sh", "-c", 'grep -c vm5k-chain /root/.ssh/authorized_keys; '
                                 'ls -d /tmp/run-1/chain-* "$1".vm5k-* 2>/dev/null; true', "sh", dest])


def test_chain_skips_a_dead_host_and_every_copy_is_verified(private_lab: NsLab, tmp_path: Path,
                                                            image: Path) -> None:
    lab = private_lab
    lab.stop_sshd("h2")
    authorized_before = lab.run_in("h3", "cat", "/root/.ssh/authorized_keys").stdout

    async def scenario() -> tuple[BroadcastReport, dict[str, str | None], Results]:
        async with runner_for(lab, tmp_path) as ssh:
            report = await broadcast_file(ssh, HOSTS, image, DEST, work_dir="/tmp/run-1")
            sums = await ssh.sha256(HOSTS, DEST)
            return report, sums, await leftovers(ssh, ["h1", "h3", "h4"])

    report, sums, left = run(scenario())
    assert report.chain == ["h1", "h3", "h4"]
    assert report.via_chain == ["h1", "h3", "h4"] and report.direct == []
    assert list(report.failed) == ["h2"] and report.failed["h2"].startswith("unreachable")
    assert sums == {"h1": digest_of(image), "h3": digest_of(image), "h4": digest_of(image)}
    # The data really went host to host, with the broadcast's own key: h3 from h1, h4 from h3.
    def sshd_log(name: str) -> str:
        return (lab.hosts[name].state_dir / "sshd.log").read_text()

    assert f"Accepted publickey for root from {NET}.11" in sshd_log("h3")
    assert f"Accepted publickey for root from {NET}.13" in sshd_log("h4")
    # Nothing of the broadcast is left: no key authorized, no directory, no partial file.
    for result in left:
        assert result.stdout == "0\n", result.describe()
    assert lab.run_in("h3", "cat", "/root/.ssh/authorized_keys").stdout == authorized_before
    with pytest.raises(Exception, match=r"copy of .* failed on 1 hosts: h2: unreachable"):
        report.raise_on_failure()


def test_hosts_the_chain_misses_get_a_direct_copy(private_lab: NsLab, tmp_path: Path, image: Path) -> None:
    # h2 is told to pass the stream to an address where nobody answers: h3 and h4 miss it.
    async def scenario() -> tuple[BroadcastReport, dict[str, str | None]]:
        async with runner_for(private_lab, tmp_path) as ssh:
            report = await broadcast_file(ssh, HOSTS, image, DEST, work_dir="/tmp/run-1",
                                          hop_addresses={"h3": f"{NET}.250"})
            return report, await ssh.sha256(HOSTS, DEST)

    report, sums = run(scenario())
    assert report.via_chain == ["h1", "h2"]
    assert sorted(report.direct) == ["h3", "h4"]
    assert report.failed == {}
    assert set(sums.values()) == {digest_of(image)}


def test_hosts_that_hold_the_file_are_skipped(private_lab: NsLab, tmp_path: Path, image: Path) -> None:
    async def scenario() -> tuple[BroadcastReport, BroadcastReport, BroadcastReport]:
        async with runner_for(private_lab, tmp_path) as ssh:
            first = await broadcast_file(ssh, HOSTS, image, DEST, work_dir="/tmp/run-1")
            again = await broadcast_file(ssh, HOSTS, image, DEST, work_dir="/tmp/run-1")
            await ssh.write_text(["h3"], DEST, "corrupted")
            repaired = await broadcast_file(ssh, HOSTS, image, DEST, work_dir="/tmp/run-1")
            return first, again, repaired

    first, again, repaired = run(scenario())
    assert first.via_chain == HOSTS
    assert again.already == HOSTS and again.chain == [] and again.direct == []
    assert repaired.already == ["h1", "h2", "h4"] and repaired.direct == ["h3"]


def test_broadcast_runs_in_the_background_alongside_other_commands(lab: NsLab, tmp_path: Path,
                                                                   image: Path) -> None:
    async def scenario() -> tuple[BroadcastReport, Results, bool]:
        async with runner_for(lab, tmp_path) as ssh:
            task = start_broadcast(ssh, HOSTS, image, "/tmp/bg/base.qcow2", work_dir="/tmp/bg")
            others = await ssh.run(HOSTS, ["sh", "-c", "echo provisioning"])
            done_before = task.done()
            return await task, others, done_before

    report, others, done_before = run(scenario())
    assert others.all_ok and not done_before
    assert report.via_chain == HOSTS


def test_hostile_destination_and_work_dir_are_never_executed(lab: NsLab, tmp_path: Path, image: Path) -> None:
    dest = "/tmp/evil $(touch /tmp/pwned)/`touch /tmp/pwned`;'\"x.img"
    work_dir = "/tmp/evil $(touch /tmp/pwned)/w'\"d"

    async def scenario() -> tuple[BroadcastReport, dict[str, str | None], Results]:
        async with runner_for(lab, tmp_path) as ssh:
            report = await broadcast_file(ssh, ["h1", "h2", "h3"], image, dest, work_dir=work_dir)
            sums = await ssh.sha256(["h1", "h2", "h3"], dest)
            pwned = await ssh.run(["h1", "h2", "h3"], ["ls", "/tmp/pwned"])
            return report, sums, pwned

    report, sums, pwned = run(scenario())
    assert report.via_chain == ["h1", "h2", "h3"]
    assert set(sums.values()) == {digest_of(image)}
    assert pwned.ko_hosts == ["h1", "h2", "h3"]


def test_a_broadcast_cancelled_midway_still_cleans_up(private_lab: NsLab, tmp_path: Path) -> None:
    big = tmp_path / "big.img"
    big.write_bytes(os.urandom(1024 * 1024) * 64)
    private_lab.rate = "40mbit"  # slow links so that the cancellation lands mid-stream
    for host in private_lab.hosts.values():
        private_lab._limit(host.netns, f"v{host.name}")

    async def scenario() -> Results:
        async with runner_for(private_lab, tmp_path) as ssh:
            task = start_broadcast(ssh, HOSTS, big, DEST, work_dir="/tmp/run-1")
            await asyncio.sleep(2.0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.5)
            return await leftovers(ssh, HOSTS)

    for result in run(scenario()):
        assert result.stdout == "0\n", result.describe()
