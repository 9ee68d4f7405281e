"""``vm5k --dry-run`` against the testbed's API, typed as a user would (the workflow joins the platform)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from g5k_helpers import jobs_on
from grid5000 import Grid5000

from g5k_testbed.http_server import ServerHandle
from vm5k.cli import main, max_vms_main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vm5k.workflow") is None,
                                reason="the workflow (vm5k.workflow) is not there yet")


def dry_run(server: ServerHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str
            ) -> tuple[int, list[str], str]:
    code = main(["--dry-run", *args, "--api", server.url, "-o", str(tmp_path / "out")])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_vm_sized_rennes(server: ServerHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = dry_run(server, tmp_path, capsys, "-n", "100", "-r", "rennes", "-w", "1:00:00")
    assert code == 0
    assert "{cluster='paradoxe'}/nodes=1+slash_22=1,walltime=1:00:00" in lines  # alone on its line
    assert any(line.startswith("Start: 2023-11-14 23:13:20 Europe/Paris (now)") for line in lines)
    assert "Would place 100 VMs:" in lines
    assert (tmp_path / "out" / "topology.json").exists() and jobs_on(server) == []


def test_grid5000_count_kavlan_and_multi_site(server: ServerHandle, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = dry_run(server, tmp_path, capsys, "-n", "10", "-r", "grid5000:3", "-w", "1:00:00")
    assert code == 0 and any(line.endswith("/nodes=3+slash_22=1,walltime=1:00:00") for line in lines)
    code, lines, _ = dry_run(server, tmp_path / "k", capsys, "-n", "10", "-r", "rennes:2,nancy:1", "-k",
                             "-w", "1:00:00")
    assert code == 0
    assert "{cluster='paradoxe'}/nodes=2+{type='kavlan-global'}/vlan=1,walltime=1:00:00" in lines
    assert "{cluster='gros'}/nodes=1,walltime=1:00:00" in lines
    assert jobs_on(server) == []


def test_job_ids(server: ServerHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = Grid5000(uri=server.url).sites["nancy"].jobs.create(
        {"resources": "nodes=2+slash_22=1,walltime=2:00:00", "command": "sleep 7200", "name": "mine"})
    server.advance(5)
    for form in (str(job.uid), f"nancy:{job.uid}"):
        code, lines, _ = dry_run(server, tmp_path / form.replace(":", "-"), capsys, "-n", "4", "-j", form)
        assert code == 0 and "Using existing jobs:" in lines
        assert any(line.strip().startswith(f"nancy:{job.uid} (running") for line in lines)


def test_unusable_cluster_is_exit_2(server: ServerHandle, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = dry_run(server, tmp_path, capsys, "-n", "4", "-r", "sagittaire:2", "-w", "1:00:00")
    assert code == 2
    assert "vm5k: error: cluster sagittaire cannot run VMs" in err



def test_max_vms_of_counted_elements_is_the_range_oar_can_give(server: ServerHandle,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = max_vms_main(["-r", "lyon:2,taurus:2,nova:99", "-b", "taurus-3", "-t",
                         '<vm mem="2048" n_cpu="1"/>', "--api", server.url])
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert code == 0, captured.err
    per_host = {line.split()[0]: int(line.split()[-1]) for line in out[1:] if ".lyon." in line}

    def held(hosts: list[int], count: int) -> str:
        hosts = sorted(hosts)
        fewest, most = sum(hosts[:count]), sum(hosts[-count:])
        return str(most) if fewest == most else f"{fewest} to {most}"

    taurus = [n for host, n in per_host.items() if host.startswith("taurus-")]
    nova = [n for host, n in per_host.items() if host.startswith("nova-")]
    assert "taurus-3.lyon.grid5000.fr" not in per_host and len(taurus) > 2 and 2 < len(nova) < 99
    expected = [f"lyon:2: 2 of its {len(per_host)} usable hosts hold {held(list(per_host.values()), 2)} VMs "
                "(OAR chooses which)",
                f"taurus:2: 2 of its {len(taurus)} usable hosts hold {held(taurus, 2)} VMs "
                "(OAR chooses which)",
                f"nova:99: only {len(nova)} usable hosts, holding {sum(nova)} VMs"]
    assert out[-3:] == expected
    assert max_vms_main(["-r", "lyon", "-b", "taurus-3,tauros", "-t", "<vm/>", "--api", server.url]) == 2
    assert capsys.readouterr().err.startswith("vm5k_max_vms: error: -b: unknown Grid'5000 element 'tauros'")
    assert max_vms_main(["-j", "1", "-b", "taurus-3", "-t", "<vm/>", "--api", server.url]) == 2
    assert capsys.readouterr().err == "vm5k_max_vms: error: -b goes with -r (it leaves hosts out of the " \
                                      "reference hardware)\n"
