"""Commands on many real SSH hosts (namespaces with their own sshd): results, timeouts, failures."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from pathlib import Path

import pytest
from nshosts import NsLab, run, runner_for

from vm5k.errors import RemoteError, UsageError
from vm5k.remote import LocalRunner, Results
from waiting import wait_for


def test_run_on_many_hosts_gives_one_result_per_host(lab: NsLab, tmp_path: Path) -> None:
    async def scenario() -> Results:
        async with runner_for(lab, tmp_path) as ssh:
            return await ssh.run(["h1", "h2", "h3", "h4"], ["sh", "-c", "cat /root/hostname; echo err >&2"])

    results = run(scenario())
    assert [r.host for r in results] == ["h1", "h2", "h3", "h4"]
    assert results.all_ok
    for result in results:
        # Each host answers from its own namespace and its own private /root.
        assert result.stdout == f"{result.host}\n"
        assert result.stderr == "err\n"
        assert result.exit_status == 0
        assert result.duration > 0


def test_exit_statuses_split_ok_and_ko(lab: NsLab, tmp_path: Path) -> None:
    async def scenario() -> Results:
        async with runner_for(lab, tmp_path) as ssh:
            return await ssh.run_each({
                "h1": ["true"],
                "h2": ["sh", "-c", "echo broken >&2; exit 3"],
                "h3": ["cat", "/nonexistent"],
            })

    results = run(scenario())
    assert results.ok_hosts == ["h1"]
    assert results.ko_hosts == ["h2", "h3"]
    assert results["h2"].exit_status == 3
    assert results["h2"].describe() == "h2: exit status 3: broken"
    assert results["h3"].exit_status == 1 and "No such file" in results["h3"].stderr
    with pytest.raises(RemoteError, match=r"probe failed on 2 of 3 hosts: h2: exit status 3: broken; h3: "):
        results.raise_on_failure("probe")


def test_per_host_commands_and_input(lab: NsLab, tmp_path: Path) -> None:
    async def scenario() -> Results:
        async with runner_for(lab, tmp_path) as ssh:
            return await ssh.run_each({host: ["sh", "-c", f"read line; echo $line-{host}"]
                                       for host in ("h1", "h2")}, input="hello\n")

    results = run(scenario())
    assert results["h1"].stdout == "hello-h1\n"
    assert results["h2"].stdout == "hello-h2\n"


def test_one_connection_per_host_is_reused(lab: NsLab, tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        async with runner_for(lab, tmp_path) as ssh:
            ports = []
            for _ in range(5):
                result = (await ssh.run(["h1"], ["sh", "-c", "echo $SSH_CONNECTION"]))[0]
                ports.append(result.stdout.split()[1])
            return ports

    ports = run(scenario())
    assert len(set(ports)) == 1, "every command should use the same TCP connection"


def test_timeout_stops_waiting_and_keeps_partial_output(lab: NsLab, tmp_path: Path) -> None:
    async def scenario() -> tuple[Results, Results]:
        async with runner_for(lab, tmp_path) as ssh:
            slow = await ssh.run(["h1", "h2"], ["sh", "-c", "echo started; sleep 31.5"], timeout=1)
            # The connection is still usable, and the command was killed on the host.
            after = await ssh.run(["h1"], ["sh", "-c", "sleep 0.5; ! pgrep -f 'sleep 31[.]5'"])
            return slow, after

    started = time.monotonic()
    slow, after = run(scenario())
    assert time.monotonic() - started < 25  # not the 31.5 s the command would have taken
    for result in slow:
        assert not result.ok
        assert result.exit_status is None
        assert result.error == "timed out after 1 s"
        assert result.stdout == "started\n"
    assert after.all_ok


def test_unreachable_and_refusing_hosts_are_reported_by_name(private_lab: NsLab, tmp_path: Path) -> None:
    # h4's sshd is stopped (connection refused); "ghost" is an address of the lab where nothing lives.
    private_lab.stop_sshd("h4")
    private_lab.extra_config = ["Host ghost", "  HostName 10.251.0.99",
                                f"  ProxyCommand {private_lab.proxy_command().replace('nc ', 'nc -w 2 ')}"]
    private_lab.write_config()

    async def scenario() -> Results:
        async with runner_for(private_lab, tmp_path) as ssh:
            return await ssh.run(["h1", "h4", "ghost"], ["true"])

    started = time.monotonic()
    results = run(scenario())
    assert time.monotonic() - started < 20
    assert results.ok_hosts == ["h1"]
    assert results["h4"].error is not None and results["h4"].error.startswith("cannot connect")
    assert results["ghost"].error is not None and results["ghost"].error.startswith("cannot connect")
    message = results["ghost"].describe()
    assert message.startswith("ghost: cannot connect")


@pytest.mark.parametrize("name", ["h1; touch /tmp/pwned", "$(touch /tmp/pwned)", "-oProxyCommand=x",
                                  "h1`id`", "", "h1 h2", "h1\n"])
def test_hostile_host_names_are_refused_before_anything_runs(lab: NsLab, tmp_path: Path, name: str) -> None:
    async def scenario() -> None:
        async with runner_for(lab, tmp_path) as ssh:
            await ssh.run(["h1", name], ["true"])

    with pytest.raises(UsageError, match="invalid host name"):
        run(scenario())
    assert not Path("/tmp/pwned").exists()


def test_arguments_with_shell_metacharacters_arrive_as_single_words(lab: NsLab, tmp_path: Path) -> None:
    hostile = ["$(touch /tmp/pwned)", "`touch /tmp/pwned`", "a; touch /tmp/pwned", "'\"", "a\nb", "*", "-rf"]

    async def scenario() -> tuple[Results, Results]:
        async with runner_for(lab, tmp_path) as ssh:
            echoed = await ssh.run(["h1", "h2"], ["printf", "%s\\0", *hostile])
            pwned = await ssh.run(["h1", "h2"], ["ls", "/tmp/pwned"])
            return echoed, pwned

    echoed, pwned = run(scenario())
    for result in echoed:
        assert result.stdout.split("\0")[:-1] == hostile
    assert pwned.ko_hosts == ["h1", "h2"]  # nothing was created


def test_commands_must_be_argument_lists(lab: NsLab, tmp_path: Path) -> None:
    async def scenario(command: object) -> None:
        async with runner_for(lab, tmp_path) as ssh:
            await ssh.run(["h1"], command)  # type: ignore[arg-type]

    for bad in ("uname -r", [], ["echo", 3]):
        with pytest.raises(TypeError):
            run(scenario(bad))


def test_local_runner_has_the_same_interface(tmp_path: Path) -> None:
    async def scenario() -> tuple[Results, Results, Results, Results, str]:
        async with LocalRunner() as local:
            ran = await local.run(["frontend"], ["sh", "-c", "echo out; echo err >&2; exit 4"])
            each = await local.run_each({"a": ["echo", "$(x)"], "b": ["false"]})
            slow = await local.run(["frontend"], ["sleep", "30"], timeout=0.5)
            put = await local.put(["frontend"], b"data\n", str(tmp_path / "sub" / "file"), mode=0o600)
            digest = (await local.sha256(["frontend"], str(tmp_path / "sub" / "file")))["frontend"]
            return ran, each, slow, put, str(digest)

    ran, each, slow, put, digest = run(scenario())
    assert ran["frontend"].exit_status == 4
    assert (ran["frontend"].stdout, ran["frontend"].stderr) == ("out\n", "err\n")
    assert each["a"].stdout == "$(x)\n" and each.ko_hosts == ["b"]
    assert slow["frontend"].error == "timed out after 0.5 s"
    assert put.all_ok and (tmp_path / "sub" / "file").read_text() == "data\n"
    assert (tmp_path / "sub" / "file").stat().st_mode & 0o777 == 0o600
    assert digest == hashlib.sha256(b"data\n").hexdigest()


def test_a_cancelled_local_command_is_killed_with_what_it_started(tmp_path: Path) -> None:
    marker = tmp_path / "pids"

    async def scenario() -> None:
        async with LocalRunner() as local:
            task = asyncio.create_task(local.run(["frontend"], [
                "sh", "-c", f"sleep 300 & echo $$ $! > {marker}; wait"]))
            while not marker.exists() or not marker.read_text().strip():
                await asyncio.sleep(0.05)
            task.cancel()  # as Ctrl-C cancels a step
            with contextlib.suppress(asyncio.CancelledError):
                await task

    run(scenario())
    shell, sleeper = marker.read_text().split()
    assert not Path(f"/proc/{shell}").exists()  # killed and reaped before the runner closed
    wait_for(lambda: not Path(f"/proc/{sleeper}").exists(), 5, 0.05)  # what it started: killed too
