"""The examples that use the API, run as a user runs them, on the testbed: a CPU micro-benchmark on a
fresh fleet (CSV, plot, destroyed), a sweep over fleet sizes that reuses one reservation, and a migration
experiment (half the fleet moved, time and downtime per migration)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from vm5k_driver import environment, leftovers, live_jobs, record, run_id

from lab_fixtures import LabTestbed

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(testbed: LabTestbed, name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=environment(testbed),
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL, check=False)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


def test_cpu_benchmark_measures_every_vm_then_destroys(testbed: LabTestbed, tmp_path: Path) -> None:
    out = tmp_path / "cpu"
    done = example(testbed, "cpu_benchmark.py", "--n-vm", "2", "--resources", "rennes:1", "--megabytes", "4",
                   "--outdir", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    table = rows(out / "cpu_benchmark.csv")
    assert [row["vm"] for row in table] == ["vm-1", "vm-2"]
    assert all(float(row["mb_per_s"]) > 0 and row["error"] == "" for row in table)
    assert (out / "cpu_benchmark.png").stat().st_size > 0
    assert record(out)["status"] == "destroyed"
    assert live_jobs(testbed, "rennes", run_id(out)) == [] and leftovers(testbed, run_id(out)) == {}


def test_a_sweep_reuses_one_reservation(testbed: LabTestbed, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    done = example(testbed, "sweep.py", "--counts", "1,2", "--resources", "rennes:1", "--walltime", "0:30:00",
                   "--megabytes", "4", "--outdir", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    table = rows(out / "sweep.csv")
    assert [(row["n_vm"], row["vm"]) for row in table] == [("1", "vm-1"), ("2", "vm-1"), ("2", "vm-2")]
    assert all(float(row["mb_per_s"]) > 0 for row in table)
    first, second = (state_of(out / name) for name in ("n1", "n2"))
    assert second["grid5000"]["jobs"][0]["id"] == first["grid5000"]["jobs"][0]["id"]  # one reservation
    assert second["grid5000"]["jobs"][0]["given"]  # taken with job_id, not reserved again
    for name in ("n1", "n2"):
        assert record(out / name)["status"] == "destroyed"
        assert leftovers(testbed, run_id(out / name)) == {}
    assert live_jobs(testbed, "rennes", run_id(out / "n1")) == []  # the last destroy ended it


def state_of(out: Path) -> dict:
    import json

    return json.loads((out / "topology.json").read_text())["meta"]


def test_migration_experiment_moves_half_the_fleet(testbed: LabTestbed, tmp_path: Path) -> None:
    out = tmp_path / "mig"
    done = example(testbed, "migration.py", "--n-vm", "2", "--resources", "rennes:2", "--outdir", str(out),
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    table = rows(out / "migration.csv")
    assert [row["vm"] for row in table] == ["vm-1"] and table[0]["from"] != table[0]["to"]
    assert float(table[0]["seconds"]) > 0 and table[0]["downtime_ms"] != "" and table[0]["error"] == ""
    assert (out / "migration.png").stat().st_size > 0
    assert record(out)["status"] == "destroyed"
    assert live_jobs(testbed, "rennes", run_id(out)) == [] and leftovers(testbed, run_id(out)) == {}
