"""Provisioning scripts, run here through a shell as hosts run them: the daemon liveness check against a
real zombie, and the package logic against stand-in dpkg-query/apt-get that record how they are called."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from tests.hypervisor.shell import run_like_ssh

from vm5k.hypervisor.daemons import alive_command
from vm5k.hypervisor.layout import HostLayout
from vm5k.hypervisor.provision import folders_command, packages_command, packages_for
from vm5k.remote import command_line


def test_a_zombie_is_not_alive(tmp_path: Path) -> None:
    pid_file = tmp_path / "daemon.pid"
    zombie = subprocess.Popen(["sleep", "0"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pid_file.write_text(f"{zombie.pid}\n")
        assert os.kill(zombie.pid, 0) is None  # kill -0 believes it lives
        assert run_like_ssh(alive_command(str(pid_file), "sleep")).returncode != 0
    finally:
        zombie.wait()


def test_live_process_wrong_name_and_bad_pid_files(tmp_path: Path) -> None:
    pid_file = tmp_path / "daemon.pid"
    live = subprocess.Popen(["sleep", "30"])
    try:
        pid_file.write_text(str(live.pid))
        assert run_like_ssh(alive_command(str(pid_file), "sleep")).returncode == 0
        assert run_like_ssh(alive_command(str(pid_file), "libvirtd")).returncode != 0  # a recycled PID
    finally:
        live.kill()
        live.wait()
    for content in ("", "12a", "$(touch /tmp/x)", "999999999"):
        pid_file.write_text(content)
        assert run_like_ssh(alive_command(str(pid_file), "sleep")).returncode != 0
    assert run_like_ssh(alive_command(str(tmp_path / "absent.pid"), "sleep")).returncode != 0


FAKE_DPKG = """#!/bin/sh
# dpkg-query -W -f=... PACKAGE: installed when PACKAGE is listed in $FAKE_INSTALLED
for p in $FAKE_INSTALLED; do [ "$p" = "$3" ] && { printf 'ii '; exit 0; }; done
exit 1
"""
FAKE_APT = """#!/bin/sh
echo "$*" >> "$FAKE_LOG"
"""


def run_packages(tmp_path: Path, installed: list[str], wanted: list[str],
                 upgrade: bool) -> tuple[str, list[list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("dpkg-query", FAKE_DPKG), ("apt-get", FAKE_APT)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "apt-calls"
    log.write_text("")
    layout = HostLayout("r1", str(tmp_path / "vm5k"))
    run_like_ssh(folders_command(layout)).check_returncode()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_INSTALLED": " ".join(installed),
           "FAKE_LOG": str(log)}
    result = subprocess.run(["sh", "-c", command_line(packages_command(wanted, upgrade, layout))], env=env,
                            capture_output=True, text=True, check=True)
    return result.stdout, [line.split() for line in log.read_text().splitlines()]


def test_nothing_missing_means_no_apt_at_all(tmp_path: Path) -> None:
    wanted = packages_for((), service=True)
    out, calls = run_packages(tmp_path, wanted, wanted, upgrade=False)
    assert out == "" and calls == []  # works offline: no index refresh


def test_only_missing_packages_are_installed_after_one_refresh(tmp_path: Path) -> None:
    wanted = packages_for(("htop",), service=False)
    out, calls = run_packages(tmp_path, [p for p in wanted if p != "htop"], wanted, upgrade=False)
    assert "installed: htop" in out
    verbs = [next(word for word in call if not word.startswith("-") and "::" not in word and "=" not in word
                  and word not in ("-y", "-q")) for call in calls]
    assert verbs == ["update", "install"] and calls[1][-1] == "htop"


def test_upgrade_on_request(tmp_path: Path) -> None:
    wanted = packages_for((), service=False)
    _, calls = run_packages(tmp_path, wanted, wanted, upgrade=True)
    assert [call for call in calls if "dist-upgrade" in call] and [call for call in calls if "update" in call]


def test_folders_are_traversable_by_qemu(tmp_path: Path) -> None:
    layout = HostLayout("r1", str(tmp_path / "vm5k"))
    os.umask(0o077)
    try:
        run_like_ssh(folders_command(layout)).check_returncode()
    finally:
        os.umask(0o022)
    for folder in (layout.base, layout.runs_dir, layout.run_dir, layout.disks_dir, layout.images_dir):
        assert Path(folder).stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("name", ["--allow-unauthenticated", "a b", "pkg;reboot", "Pkg"])
def test_package_names_are_checked(name: str) -> None:
    from vm5k.errors import UsageError
    from vm5k.hypervisor.provision import check_package
    with pytest.raises(UsageError):
        check_package(name)
