"""Connections: reuse, drops and reconnection, ProxyCommand and ProxyJump from the config, host keys."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from nshosts import NET, NsLab, run, runner_for

from vm5k.remote import Results


def children() -> set[str]:
    """This process's child processes (zombies included), as ``pid command`` lines."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
            comm, fields = rest.rsplit(") ", 1)
        except (OSError, ValueError):
            continue  # ended meanwhile
        if int(fields.split()[1]) == os.getpid():
            found.add(f"{pid} {comm}")
    return found


def test_proxycommand_from_the_config_file_is_how_hosts_are_reached(lab: NsLab, tmp_path: Path) -> None:
    # The lab's network exists only inside its namespaces: the config's ProxyCommand is the way in.
    assert f"ProxyCommand ip netns exec {lab.frontend_ns} nc %h %p" in lab.config_path.read_text()

    async def scenario() -> tuple[Results, set[str]]:
        before = children()  # the lab's daemons
        async with runner_for(lab, tmp_path) as ssh:
            results = await ssh.run(["h1", "h3"], ["sh", "-c", "echo $SSH_CONNECTION"])
        # closed: the proxies are gone and reaped while the loop still runs (else asyncio warns, later)
        return results, children() - before

    for _ in range(5):  # the race it guards against is won by the proxies most of the time
        results, left = run(scenario())
        assert left == set()
    # The client side is the frontend namespace's address: the proxy ran there, with %h/%p expanded.
    assert results["h1"].stdout.split()[0::2] == [f"{NET}.1", f"{NET}.11"]
    assert results["h3"].stdout.split()[0::2] == [f"{NET}.1", f"{NET}.13"]


def test_proxyjump_goes_through_the_pooled_connection_of_the_jump_host(private_lab: NsLab,
                                                                        tmp_path: Path) -> None:
    lab = private_lab
    lab.extra_config = ["Host behind-h1", f"  HostName {NET}.12", "  User root",
                        f"  IdentityFile {lab.client_key}", "  ProxyJump h1"]
    lab.write_config()

    async def scenario() -> tuple[Results, Results, int]:
        async with runner_for(lab, tmp_path) as ssh:
            first = await ssh.run(["h1"], ["true"])
            jumped = await ssh.run(["behind-h1"], ["sh", "-c", "cat /root/hostname; echo $SSH_CONNECTION"])
            return first, jumped, len(lab.session_pids("h1"))

    first, jumped, h1_sessions = run(scenario())
    assert first.all_ok and jumped.all_ok
    hostname, client, _, server, _ = jumped["behind-h1"].stdout.split()
    assert hostname == "h2"
    assert (client, server) == (f"{NET}.11", f"{NET}.12")  # h2 saw the connection come from h1
    assert h1_sessions == 1, "the jump must reuse the one connection to h1"
    # Both hops were checked against (and recorded in) the run's known_hosts.
    recorded = (tmp_path / "known_hosts").read_text()
    assert f"{NET}.11 ssh-ed25519" in recorded and f"{NET}.12 ssh-ed25519" in recorded


def test_a_connection_dropped_between_commands_is_reopened(private_lab: NsLab, tmp_path: Path) -> None:
    async def scenario() -> tuple[Results, Results, str, str]:
        async with runner_for(private_lab, tmp_path) as ssh:
            before = await ssh.run(["h1", "h2"], ["sh", "-c", "echo $SSH_CONNECTION"])
            assert private_lab.drop_connections("h1") == 1
            await asyncio.sleep(0.2)
            after = await ssh.run(["h1", "h2"], ["sh", "-c", "echo $SSH_CONNECTION"])
            return before, after, before["h1"].stdout, after["h1"].stdout

    before, after, port_before, port_after = run(scenario())
    assert before.all_ok and after.all_ok
    assert port_before != port_after  # a new TCP connection
    assert before["h2"].stdout == after["h2"].stdout  # h2's connection was left alone


def test_a_connection_dropped_mid_command_reconnects_and_reruns(private_lab: NsLab, tmp_path: Path) -> None:
    async def scenario() -> tuple[Results, Results]:
        async with runner_for(private_lab, tmp_path) as ssh:
            task = asyncio.create_task(ssh.run(
                ["h1", "h2"], ["sh", "-c", "echo run >> /root/runs; sleep 1.5; echo done"]))
            await asyncio.sleep(0.7)
            assert private_lab.drop_connections("h1") == 1
            results = await task
            runs = await ssh.run(["h1", "h2"], ["cat", "/root/runs"])
            return results, runs

    results, runs = run(scenario())
    assert results.all_ok, [r.describe() for r in results]
    assert results["h1"].stdout == "done\n"
    assert runs["h1"].stdout.count("run") == 2  # started, dropped, reconnected, ran again
    assert runs["h2"].stdout.count("run") == 1


def test_host_keys_are_recorded_on_first_contact_then_enforced(private_lab: NsLab, tmp_path: Path) -> None:
    lab = private_lab
    known_hosts = tmp_path / "known_hosts"

    async def probe() -> Results:
        async with runner_for(lab, tmp_path) as ssh:
            return await ssh.run(["h1", "h2"], ["true"])

    assert run(probe()).all_ok
    lines = known_hosts.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == [f"{NET}.11", f"{NET}.12"]
    assert f"{NET}.11 {' '.join(lab.host_public_key('h1').split()[:2])}" in lines

    assert run(probe()).all_ok  # same keys: accepted, nothing new recorded
    assert known_hosts.read_text().splitlines() == lines

    lab.stop_sshd("h1")  # h1 comes back with another key (reinstalled, or an impostor)
    lab.new_host_key("h1")
    lab.start_sshd("h1")
    results = run(probe())
    assert results.ok_hosts == ["h2"]
    error = results["h1"].error or ""
    assert "host key changed" in error and str(known_hosts) in error and "SHA256:" in error
    assert known_hosts.read_text().splitlines() == lines  # the new key was not recorded


def test_strict_checking_refuses_unknown_hosts_and_accepts_listed_ones(private_lab: NsLab,
                                                                        tmp_path: Path) -> None:
    lab = private_lab
    known_hosts = tmp_path / "strict_known_hosts"
    known_hosts.write_text(f"{NET}.12 {' '.join(lab.host_public_key('h2').split()[:2])}\n")

    async def probe() -> Results:
        async with runner_for(lab, tmp_path, known_hosts=known_hosts, record_new_host_keys=False) as ssh:
            return await ssh.run(["h1", "h2"], ["true"])

    results = run(probe())
    assert results.ok_hosts == ["h2"]
    assert "host key not trusted" in (results["h1"].error or "")
    assert known_hosts.read_text().count("\n") == 1
