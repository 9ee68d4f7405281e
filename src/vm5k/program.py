"""The original vm5k's ``-p PROGRAM``: the user's experiment, run on the frontend once the VMs answer.

The program runs with the outdir as its working directory and finds the run's files through environment
variables, so it needs no argument parsing of its own (the original passed nothing and scripts read the
outdir's lists by name; that still works, since the working directory is the outdir):

==================  =============================================================
VM5K_OUTDIR         the outdir (absolute)
VM5K_RUN_ID         the run id (names of jobs, domains and per-host directories)
VM5K_HOSTS_LIST     hosts.list: one host FQDN a line
VM5K_VMS_LIST       vms.list: ``<ip>\\t<id>`` a line
VM5K_VMS_CSV        vms.csv: id, host, cluster, site, ip, mac, mem, n_cpu, hdd, state
VM5K_TOPOLOGY       topology.json: everything vm5k knows about the run
VM5K_SSH_CONFIG     ssh_config: ``ssh -F $VM5K_SSH_CONFIG vm-1`` reaches a VM
VM5K_INVENTORY      inventory.yaml: an Ansible inventory of hosts and VMs
VM5K_SSH_KEY        the run's private SSH key (root on every VM and host)
==================  =============================================================

`PROGRAM` is a command line. When its first word names an existing file relative to the directory vm5k was
started in (``-p myscript.sh``, as in the original vm5k), that file is run directly (through ``sh`` or
Python when it is not executable); any other command line goes to ``/bin/sh -c``, as the original did. Its
output is streamed to the console and logged in vm5k.log, line by line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from vm5k.errors import UsageError

log = logging.getLogger(__name__)

STOP_GRACE = 10.0  # seconds the program has to end after SIGTERM when vm5k is interrupted
ENVIRONMENT_FILES = {
    "VM5K_HOSTS_LIST": "hosts.list",
    "VM5K_VMS_LIST": "vms.list",
    "VM5K_VMS_CSV": "vms.csv",
    "VM5K_TOPOLOGY": "topology.json",
    "VM5K_SSH_CONFIG": "ssh_config",
    "VM5K_INVENTORY": "inventory.yaml",
}


def program_command(program: str, start_dir: str | os.PathLike[str]) -> list[str]:
    """The argument list that runs `program`, its first word resolved from `start_dir` when it is a file.

    >>> program_command("echo hello | wc -c", "/")
    ['/bin/sh', '-c', 'echo hello | wc -c']
    """
    try:
        words = shlex.split(program)
    except ValueError as error:
        raise UsageError(f"-p: cannot parse the program {program!r}: {error}") from None
    if not words:
        raise UsageError("the program (-p) is empty")
    candidate = Path(start_dir, words[0])
    if candidate.is_file():
        path = str(candidate.resolve())
        if os.access(path, os.X_OK):
            return [path, *words[1:]]
        interpreter = [sys.executable] if path.endswith(".py") else ["/bin/sh"]
        return [*interpreter, path, *words[1:]]
    return ["/bin/sh", "-c", program]


def check_program(program: str, start_dir: str | os.PathLike[str]) -> None:
    """Refuse, before anything is reserved, a program that could only fail once the VMs are up: a command
    line that does not parse, or a script named by a path that does not exist.

    A first word that is no file here and no command on PATH is left to the shell when it may be a builtin
    or a keyword (``for``, ``cd``, ``X=1``); one with a ``/`` or a script's suffix is a missing file.

    >>> check_program("./no-such-experiment.sh --fast", "/")
    Traceback (most recent call last):
    ...
    vm5k.errors.UsageError: -p: no such program ./no-such-experiment.sh (looked for in /)
    >>> check_program("for i in 1 2; do echo $i; done", "/")
    """
    if program_command(program, start_dir)[:2] != ["/bin/sh", "-c"]:
        return  # an existing file
    word = shlex.split(program)[0]
    if any(char in word for char in "$`=*?[~{"):
        return  # the shell expands it: nothing to check here
    if shutil.which(word) is not None:
        return
    if "/" in word or word.endswith((".sh", ".py", ".bash")):
        raise UsageError(f"-p: no such program {word} (looked for in {start_dir})")


def program_environment(outdir: Path, run_id: str, key_path: Path) -> dict[str, str]:
    """The environment of the program: the caller's, plus the VM5K_* variables naming the run's files."""
    folder = outdir.resolve()
    env = dict(os.environ)
    env.update({name: str(folder / file) for name, file in ENVIRONMENT_FILES.items()})
    env.update({"VM5K_OUTDIR": str(folder), "VM5K_RUN_ID": run_id, "VM5K_SSH_KEY": str(key_path.resolve())})
    return env


def run_program(program: str, *, outdir: Path, run_id: str, key_path: Path,
                start_dir: str | os.PathLike[str]) -> int:
    """Run the user's program to its end, streaming and logging its output; return its exit status."""
    command = program_command(program, start_dir)
    log.info("running the program: %s (in %s)", shlex.join(command), outdir)
    output = logging.getLogger("vm5k.program.output")
    try:
        # its own process group: when vm5k is stopped, the program and whatever it started stop with it
        process = subprocess.Popen(command, cwd=outdir, env=program_environment(outdir, run_id, key_path),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, errors="replace", bufsize=1, process_group=0)
    except OSError as error:
        log.error("the program could not start: %s", error)
        return 127
    assert process.stdout is not None
    try:
        with process.stdout:
            for line in process.stdout:
                output.info("%s", line.rstrip("\n"))
        status = process.wait()
    except BaseException:  # Ctrl-C, SIGTERM (forwarded as Ctrl-C), a failing log: never leave it running
        stop_program(process)
        raise
    (log.info if status == 0 else log.warning)("the program exited with status %d", status)
    return status


def stop_program(process: subprocess.Popen[str], grace: float = STOP_GRACE) -> None:
    """End the program's process group: SIGTERM, then SIGKILL after `grace` seconds, and wait until every
    process of the group has ended (the program's own children too, not only the program)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (process.poll() is None or _group_running(process.pid)):
            time.sleep(0.02)
        if process.poll() is not None and not _group_running(process.pid):
            log.warning("the program was stopped (status %s)", process.returncode)
            return


def _group_running(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies waiting for their reaper do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while we looked
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False
