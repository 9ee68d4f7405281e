"""--resume and --destroy reach the platform where it is now, not only where it was."""

from __future__ import annotations

import json

import pytest

from vm5k import workflow
from vm5k.errors import UsageError
from vm5k.platforms import testbed
from vm5k.platforms.testbed import TestbedInfo as Info
from vm5k.platforms.testbed import parse_status
from vm5k.runstate import RunRecord


def record(platform: str = "testbed") -> RunRecord:
    return RunRecord(run_id="20261125000000-abcdef", platform=platform, start_dir="/",
                     api="http://127.0.0.1:40000/stable", ssh_config="/old/ssh_config",
                     testbed_state="/var/lib/vm5k-testbed/x")


def test_a_restarted_testbed_is_found_again(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []

    def status(state_dir: str | None) -> Info:
        asked.append(state_dir)
        return Info("http://127.0.0.1:41234/stable", "/new/ssh_config", None, state_dir)

    monkeypatch.setattr(testbed, "status", status)
    run = record()
    workflow._reach_again(run, None, None)
    assert asked == ["/var/lib/vm5k-testbed/x"]
    assert (run.api, run.ssh_config) == ("http://127.0.0.1:41234/stable", "/new/ssh_config")


def test_a_testbed_that_is_down_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testbed, "status", lambda state_dir: None)
    with pytest.raises(UsageError, match="vm5k-testbed up --state /var/lib/vm5k-testbed/x"):
        workflow._reach_again(record(), None, None)


def test_api_and_ssh_config_given_again_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testbed, "status", lambda state_dir: pytest.fail("not asked"))
    run = record("grid5000")
    workflow._reach_again(run, "https://api.grid5000.fr/stable", "/home/alice/g5k_config")
    assert (run.api, run.ssh_config) == ("https://api.grid5000.fr/stable", "/home/alice/g5k_config")
    kept = record("grid5000")
    workflow._reach_again(kept, None, None)
    assert (kept.api, kept.ssh_config) == ("http://127.0.0.1:40000/stable", "/old/ssh_config")


def status_json(state: str, api_alive: bool = True, dead: tuple[str, ...] = ()) -> str:
    """What `vm5k-testbed status --json` prints (the keys vm5k reads)."""
    nodes = [{"name": f"paradoxe-{i}.rennes.grid5000.fr", "site": "rennes",
              "state": "dead" if f"paradoxe-{i}.rennes.grid5000.fr" in dead else "up"} for i in (1, 2)]
    return json.dumps({"state": state, "api": "http://127.0.0.1:41234/stable", "ssh_config": "/tb/ssh_config",
                       "pids": {"api": {"pid": 12, "alive": api_alive}}, "nodes": nodes})


def test_a_testbed_with_a_dead_node_is_still_reached_while_its_api_answers() -> None:
    assert parse_status(status_json("up")).state == "up"
    dead = "paradoxe-2.rennes.grid5000.fr"
    degraded = parse_status(status_json("degraded", dead=(dead,)))
    assert degraded is not None and degraded.state == "degraded" and degraded.not_up == [dead]
    assert parse_status(status_json("degraded", api_alive=False)) is None  # nothing to talk to
    assert parse_status('{"state": "down", "nodes": []}') is None


def test_a_node_being_redeployed_is_not_a_degraded_testbed() -> None:
    """The end of a job reboots its nodes (`deploying` for a second): a run starting then must not restart
    the testbed under that work."""
    data = json.loads(status_json("degraded"))
    data["nodes"][1]["state"] = "deploying"
    info = parse_status(json.dumps(data))
    assert info is not None and info.not_up == []


def test_vm5k_is_handed_the_routing_only_ssh_config() -> None:
    """vm5k proves its own access (its run key): the testbed's admin config, which carries the testbed's
    key, is never what a run connects through."""
    data = json.loads(status_json("up"))
    assert parse_status(json.dumps(data)).ssh_config == "/tb/ssh_config"  # an older testbed: the only one
    data["routing_ssh_config"] = "/tb/ssh_config.routing"
    assert parse_status(json.dumps(data)).ssh_config == "/tb/ssh_config.routing"


def test_destroy_reaches_a_degraded_testbed_and_says_so(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    dead = "paradoxe-2.rennes.grid5000.fr"
    monkeypatch.setattr(testbed, "status", lambda state_dir: parse_status(status_json(
        "degraded", dead=(dead,))))
    run = record()
    workflow._reach_again(run, None, None)
    assert run.api == "http://127.0.0.1:41234/stable"
    assert f"the testbed of this run is degraded: {dead} not up" in caplog.text
