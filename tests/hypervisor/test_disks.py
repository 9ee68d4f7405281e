"""The per-host disk/seed script, run here exactly as a host runs it (shlex-joined, through a shell)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.hypervisor.shell import run_like_ssh

from vm5k.hypervisor.disks import VmFiles, clean_command, pack, parse_prepare, prepare_command
from vm5k.hypervisor.layout import HostLayout
from vm5k.hypervisor.seed import meta_data, user_data

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None or shutil.which("genisoimage") is None,
                                reason="qemu-img and genisoimage are needed")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOx test"
GIB = 1 << 30


def info(path: Path) -> dict:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


@pytest.fixture
def run(tmp_path: Path) -> tuple[HostLayout, Path]:
    layout = HostLayout("r1", str(tmp_path / "vm5k"))
    for folder in layout.run_folders():
        Path(folder).mkdir(parents=True, exist_ok=True)
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "2G"], check=True)
    return layout, base


def send(layout: HostLayout, vms: list[str]) -> str:
    files: dict[str, str] = {}
    for vm in vms:
        files[f"seeds/{vm}/meta-data"] = meta_data("r1", vm)
        files[f"seeds/{vm}/user-data"] = user_data(vm, KEY)
    archive = f"{layout.run_dir}/prepare.tar"
    Path(archive).write_bytes(pack(files))
    return archive


def test_overlay_has_backing_format_and_is_never_smaller_than_base(run: tuple[HostLayout, Path]) -> None:
    layout, base = run
    archive = send(layout, ["vm-1", "vm-2"])
    result = run_like_ssh(prepare_command(layout, archive, [
        VmFiles("vm-1", str(base), "qcow2", 10, False), VmFiles("vm-2", str(base), "qcow2", 1, False)]))
    assert parse_prepare(result.stdout) == {"vm-1": None, "vm-2": None}, result.stdout + result.stderr
    big, small = info(Path(layout.disk("vm-1"))), info(Path(layout.disk("vm-2")))
    assert big["backing-filename"] == str(base) and big["backing-filename-format"] == "qcow2"
    assert big["virtual-size"] == 10 * GIB
    assert small["virtual-size"] == 2 * GIB  # 1G asked, the base is 2G: never truncated
    assert not Path(archive).exists()
    assert Path(layout.seed_iso("vm-1")).stat().st_size > 0


def test_full_copy_has_no_backing_file(run: tuple[HostLayout, Path]) -> None:
    layout, base = run
    archive = send(layout, ["vm-1"])
    result = run_like_ssh(prepare_command(layout, archive, [VmFiles("vm-1", str(base), "qcow2", 4, True)]))
    assert parse_prepare(result.stdout) == {"vm-1": None}, result.stderr
    disk = info(Path(layout.disk("vm-1")))
    assert "backing-filename" not in disk and disk["virtual-size"] == 4 * GIB


def test_missing_base_is_reported_per_vm(run: tuple[HostLayout, Path]) -> None:
    layout, base = run
    archive = send(layout, ["vm-1", "vm-2"])
    result = run_like_ssh(prepare_command(layout, archive, [
        VmFiles("vm-1", str(base) + ".nope", "qcow2", 10, False),
        VmFiles("vm-2", str(base), "qcow2", 10, False)]))
    outcome = parse_prepare(result.stdout)
    assert outcome["vm-2"] is None and "missing" in (outcome["vm-1"] or "")


HOSTILE = ["$(touch {canary})", "`touch {canary}`", "x; touch {canary}", "x' ; touch {canary} ; '",
           "x\" ; touch {canary} ; \"", "x\ntouch {canary}", "--output={canary}"]


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_paths_stay_single_arguments(run: tuple[HostLayout, Path], tmp_path: Path,
                                             template: str) -> None:
    layout, _ = run
    canary = tmp_path / "pwned"
    hostile_base = template.format(canary=canary)
    archive = send(layout, ["vm-1"])
    entry = VmFiles("vm-1", hostile_base, "qcow2", 10, False)
    result = run_like_ssh(prepare_command(layout, archive, [entry]))
    assert not canary.exists()
    assert parse_prepare(result.stdout).get("vm-1") is not None  # reported failed, nothing run


def test_clean_removes_orphaned_runs_and_stale_disks_but_never_the_cache(tmp_path: Path) -> None:
    if shutil.which("virsh") is None:
        pytest.skip("virsh is needed")
    layout = HostLayout("r1", str(tmp_path / "vm5k"))
    old = HostLayout("r0", str(tmp_path / "vm5k"))
    for lay in (layout, old):
        Path(lay.disks_dir).mkdir(parents=True)
    cached = Path(layout.cached("a" * 64, "base.qcow2"))
    cached.parent.mkdir(parents=True)
    for path in (Path(layout.disk("vm-1")), Path(layout.disk("vm-2")), Path(old.disk("vm-1")), cached):
        path.write_text("x")
    result = run_like_ssh(clean_command(layout, keep=["vm-2"]))
    assert result.returncode == 0, result.stderr
    assert not Path(layout.disk("vm-1")).exists() and Path(layout.disk("vm-2")).exists()
    assert not Path(old.disk("vm-1")).exists()  # no domain of run r0 exists here
    assert cached.exists()
