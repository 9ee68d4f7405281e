"""The frontend-side pieces of a run: the user's program, the plot and the run's key pair."""

import logging
import os
import stat
from pathlib import Path

import asyncssh
import pytest

from vm5k import keys, plot, program
from vm5k.errors import UsageError
from vm5k.topology import VM, VM_KO, VM_OK, Host, Topology


def small_topology() -> Topology:
    topo = Topology()
    for site, cluster, count in (("rennes", "paravance", 2), ("nancy", "gros", 1)):
        for index in range(1, count + 1):
            topo.add_host(site, cluster, Host(f"{cluster}-{index}.{site}.grid5000.fr"))
    for index in range(1, 7):
        vm = VM(f"vm-{index}", state=VM_OK if index % 3 else VM_KO)
        topo.place(vm, topo.hosts()[index % 3].id)
    return topo


def test_program_file_in_start_dir_runs_directly(tmp_path: Path) -> None:
    start = tmp_path / "start"
    start.mkdir()
    (start / "xp.sh").write_text("echo hi\n")  # not executable: run through sh
    assert program.program_command("xp.sh --fast", start) == ["/bin/sh", str((start / "xp.sh").resolve()),
                                                              "--fast"]
    (start / "xp.py").write_text("print(1)\n")
    assert program.program_command("xp.py", start)[1:] == [str((start / "xp.py").resolve())]
    (start / "run").write_text("#!/bin/sh\n")
    (start / "run").chmod(0o755)
    assert program.program_command("run a 'b c'", start) == [str((start / "run").resolve()), "a", "b c"]


def test_program_command_line_goes_to_the_shell(tmp_path: Path) -> None:
    assert program.program_command("wc -l vms.list | cut -d' ' -f1", tmp_path) == [
        "/bin/sh", "-c", "wc -l vms.list | cut -d' ' -f1"]
    with pytest.raises(UsageError, match="cannot parse"):
        program.program_command("echo 'unterminated", tmp_path)
    with pytest.raises(UsageError, match="empty"):
        program.program_command("   ", tmp_path)


@pytest.mark.parametrize(("command", "missing"), [
    ("./xp-typo.sh --fast", "./xp-typo.sh"), ("xp-typo.py", "xp-typo.py"), ("scripts/xp run", "scripts/xp"),
])
def test_a_program_naming_a_missing_script_is_refused(tmp_path: Path, command: str, missing: str) -> None:
    with pytest.raises(UsageError, match=f"-p: no such program {missing} "):
        program.check_program(command, tmp_path)


@pytest.mark.parametrize("command", [
    "xp.sh", "./xp.sh a b", "echo hi | wc -c", "for i in 1 2; do echo $i; done", "cd /tmp && ls",
    "X=1 env", "$HOME/xp.sh", "~/xp.sh", "python3 -c 'print(1)'", "/bin/true",
])
def test_files_commands_and_shell_lines_are_accepted(tmp_path: Path, command: str) -> None:
    (tmp_path / "xp.sh").write_text("echo hi\n")
    program.check_program(command, tmp_path)  # no error: left to the file, PATH or the shell


def test_run_program_sees_the_run_files_streams_and_returns_status(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "vms.list").write_text("10.0.0.1\tvm-1\n10.0.0.2\tvm-2\n")
    start = tmp_path / "start"
    start.mkdir()
    (start / "xp.sh").write_text('pwd\nwc -l < "$VM5K_VMS_LIST"\necho "$VM5K_RUN_ID"\nexit 3\n')
    with caplog.at_level(logging.INFO, logger="vm5k"):
        status = program.run_program("xp.sh", outdir=outdir, run_id="r42", key_path=tmp_path / "key",
                                     start_dir=start)
    assert status == 3
    lines = [record.getMessage() for record in caplog.records if record.name == "vm5k.program.output"]
    assert lines == [str(outdir.resolve()), "2", "r42"]
    assert any("exited with status 3" in record.getMessage() for record in caplog.records)


def test_plot_writes_png_and_svg(tmp_path: Path) -> None:
    written = plot.plot_topology(small_topology(), tmp_path)
    assert [path.name for path in written] == ["topology.png", "topology.svg"]
    assert (tmp_path / "topology.png").read_bytes().startswith(b"\x89PNG")
    svg = (tmp_path / "topology.svg").read_text()
    assert "<svg" in svg and "vm-5" in svg


def test_run_key_is_private_reused_and_valid(tmp_path: Path) -> None:
    private, public = keys.ensure_run_key(tmp_path, "vm5k-r1")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert public.startswith("ssh-ed25519 ") and public.endswith("vm5k-r1")
    again, public_again = keys.ensure_run_key(tmp_path, "vm5k-r1")
    assert (again, public_again) == (private, public)
    loaded = asyncssh.read_private_key(private)
    assert loaded.export_public_key().decode().strip() == public
