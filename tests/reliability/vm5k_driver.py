"""Driving the `vm5k` command through faults, and reading what it left behind.

The reliability tests type `vm5k` as a user (or a batch system) would: a process started with its
arguments, watched through the outdir's ``vm5k.log`` (the only thing a user sees besides the console),
stopped with a signal at a chosen moment, then judged by its exit status, its outdir, the jobs on the API
and what is left on the testbed's nodes. Nothing here imports vm5k: like a user, the tests only read files
and ask the testbed.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from lab_fixtures import LabTestbed, run_testbed
from waiting import wait_for

VM5K = str(Path(sys.executable).parent / "vm5k")
TINY = '<vm mem="256" hdd="2" n_cpu="1"/>'
RUN_TIMEOUT = 900


@dataclass
class Finished:
    """How a vm5k command ended."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("vm5k: error: ")]


def vm5k(*args: str, cwd: Path, timeout: float = RUN_TIMEOUT, env: dict[str, str] | None = None) -> Finished:
    """Run a vm5k command to its end."""
    done = subprocess.run([VM5K, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False, env=env)
    return Finished(done.returncode, done.stdout, done.stderr)


class Vm5kProcess:
    """A vm5k command running in the background, followed through its outdir's log."""

    def __init__(self, *args: str, cwd: Path, outdir: Path, env: dict[str, str] | None = None,
                 preexec: Callable[[], None] | None = None) -> None:
        self.log = outdir / "vm5k.log"
        self._offset = self.log.stat().st_size if self.log.exists() else 0  # a resumed run appends
        self.process = subprocess.Popen([VM5K, *args], cwd=cwd, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                        preexec_fn=preexec)

    def new_log(self) -> str:
        """What this command added to vm5k.log so far."""
        try:
            with self.log.open(errors="replace") as stream:
                stream.seek(self._offset)
                return stream.read()
        except FileNotFoundError:
            return ""

    def wait_for(self, text: str, timeout: float = 600) -> None:
        """Block until `text` appears in what this command logged (AssertionError if it ends first)."""
        deadline = time.monotonic() + timeout
        while text not in self.new_log():
            if self.process.poll() is not None:
                _, err = self.process.communicate()
                raise AssertionError(f"vm5k ended ({self.process.returncode}) before logging {text!r}:\n"
                                     f"{err[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"vm5k did not log {text!r} within {timeout:.0f} s:\n"
                                     f"{self.new_log()[-3000:]}")
            time.sleep(0.02)

    def send(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def finish(self, timeout: float = RUN_TIMEOUT) -> Finished:
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
            raise AssertionError(f"vm5k did not end within {timeout:.0f} s:\n{err[-3000:]}") from None
        return Finished(self.process.returncode, out, err)

    def kill(self) -> None:
        """For a failing test's clean-up: the process this test started, by its PID."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


# -- the outdir --------------------------------------------------------------------------------------------

def state(out: Path) -> dict[str, Any]:
    return json.loads((out / "topology.json").read_text())


def record(out: Path) -> dict[str, Any]:
    return state(out)["meta"]["run"]


def run_id(out: Path) -> str:
    return str(state(out)["meta"]["run_id"])


def vms_of(out: Path) -> dict[str, dict[str, str]]:
    with (out / "vms.csv").open() as handle:
        return {row["id"]: row for row in csv.DictReader(handle)}


def hosts_of(out: Path) -> dict[str, dict[str, Any]]:
    """Host id → its entry in topology.json (state, reason, VMs)."""
    return {host["id"]: host for site in state(out)["sites"] for cluster in site["clusters"]
            for host in cluster["hosts"]}


def ssh_vm(out: Path, vm: str, command: str = "hostname", timeout: float = 120
           ) -> subprocess.CompletedProcess[str]:
    """What the README tells users: ``ssh -F OUTDIR/ssh_config <vm id>``."""
    return subprocess.run(["ssh", "-F", str(out / "ssh_config"), "-o", "BatchMode=yes",
                           "-o", "ConnectTimeout=30", vm, command],
                          capture_output=True, text=True, timeout=timeout, check=False)


# -- the testbed -------------------------------------------------------------------------------------------

def api_base(testbed: LabTestbed) -> str:
    return str(testbed.status["api_base"])


def admin(testbed: LabTestbed, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """The testbed's own control endpoints (``--admin``): faults, clock, state. Never subject to faults."""
    reply = requests.request(method, f"{api_base(testbed)}/_testbed/{path}", json=body, timeout=30)
    reply.raise_for_status()
    return reply.json()


def jobs_named(testbed: LabTestbed, site: str, name: str, states: str | None = None) -> list[dict[str, Any]]:
    """The jobs of `site` called `name` (every state unless `states` is given), asked until the API answers
    (a testbed with injected faults fails some of our calls too)."""
    params: dict[str, Any] = {"name": name, "limit": 500}
    if states:
        params["state"] = states
    for _ in range(50):
        reply = requests.get(f"{testbed.api}/sites/{site}/jobs", params=params, timeout=30)
        if reply.status_code == 200:
            return [job for job in reply.json()["items"] if job.get("name") == name]
        time.sleep(0.2)
    raise AssertionError(f"the testbed's API kept failing on GET /sites/{site}/jobs")


def live_jobs(testbed: LabTestbed, site: str, run: str) -> list[dict[str, Any]]:
    return jobs_named(testbed, site, f"vm5k-{run}", "waiting,launching,running")


def node_script(testbed: LabTestbed, node: str, script: str, timeout: float = 120
                ) -> subprocess.CompletedProcess[str]:
    """A shell script on a node, through the testbed's SSH config."""
    return testbed.ssh(node, "sh -s", input=script, timeout=timeout, check=False)


def leftovers(testbed: LabTestbed, run: str, nodes: list[str] | None = None) -> dict[str, str]:
    """What a run left on each node: domains, QEMU processes, its folder, its dnsmasq, resolver lines."""
    script = (f"virsh -q -c qemu:///system list --all --name | grep -F -- {run} ; "
              f"pgrep -af '[q]emu.*vm5k_{run}_' ; "
              f"ls -d /tmp/vm5k/runs/{run} 2>/dev/null ; "
              f"pgrep -af '[d]nsmasq.*{run}' ; grep -F 'vm5k run {run}' /etc/resolv.conf ; true")
    found = {}
    for node in nodes or testbed.nodes:
        answer = node_script(testbed, node, script)
        text = answer.stdout.strip() if answer.returncode == 0 else f"unreachable: {answer.stderr.strip()}"
        if text:
            found[node] = text
    return found


def domains(testbed: LabTestbed, node: str, run: str) -> list[str]:
    """The libvirt domains of a run on a node, running or not."""
    answer = node_script(testbed, node, "virsh -q -c qemu:///system list --all --name")
    return sorted(name for name in answer.stdout.split() if name.startswith(f"vm5k_{run}_"))


def node_pid(testbed: LabTestbed, node: str) -> int:
    """The PID the testbed records for a node's init (PID 1 of its namespaces): killing it is the node
    dying, its VMs with it."""
    status = testbed.refresh()
    entry = status["pids"][f"node:{node.split('.')[0]}"]
    assert entry["alive"], f"{node} is not running"
    return int(entry["pid"])


def restart_dead_nodes(testbed: LabTestbed, sites: str, extra: tuple[str, ...] = ()) -> None:
    """``vm5k-testbed up`` again: it starts only what is missing (a dead node)."""
    done = run_testbed("up", "--site", sites, "--state", str(testbed.state_dir), *extra, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    testbed.refresh()
    assert all(node["state"] == "up" for node in testbed.status["nodes"]), testbed.status["nodes"]


#: Run on a node: kill every sshd connection handler (children of the listening sshd) except the one that
#: serves this very script, so the connections vm5k holds to the node drop at once.
DROP_SSH_CONNECTIONS = r"""
mine=" "; p=$$
while [ "$p" -gt 1 ]; do mine="$mine$p "; p=$(cut -d' ' -f4 /proc/$p/stat); done
listener=$(cat /run/sshd.pid)
dropped=0
for pid in $(pgrep -P "$listener"); do
    case "$mine" in *" $pid "*) ;; *) kill -9 "$pid" && dropped=$((dropped + 1)) ;; esac
done
echo "$dropped"
"""


def drop_ssh_connections(testbed: LabTestbed, node: str, timeout: float = 60) -> int:
    """Drop the SSH connections others (vm5k) hold to `node`; waits until there is one to drop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = node_script(testbed, node, DROP_SSH_CONNECTIONS)
        dropped = int(answer.stdout.strip() or 0)
        if dropped:
            return dropped
        time.sleep(0.2)
    raise AssertionError(f"nobody held an SSH connection to {node} within {timeout:.0f} s")


def environment(testbed: LabTestbed, **extra: str) -> dict[str, str]:
    """The environment of a vm5k command on this testbed (the embedded platform, found by its state)."""
    env = dict(os.environ)
    env["VM5K_TESTBED_STATE"] = str(testbed.state_dir)
    env.update(extra)
    return env


def ignore_sigint() -> None:
    """What a shell does to the background jobs of a script: SIGINT ignored (preexec_fn)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class Runs:
    """The outdirs and processes of a test: at its end, processes are killed (by PID) if still running,
    every run is destroyed, and nothing of it may be left on the nodes or in OAR."""

    testbed: LabTestbed
    workdir: Path
    outdirs: list[Path] = field(default_factory=list)
    processes: list[Vm5kProcess] = field(default_factory=list)

    def outdir(self, name: str = "out") -> Path:
        path = self.workdir / name
        self.outdirs.append(path)
        return path

    def start(self, *args: str, outdir: Path, **options: object) -> Vm5kProcess:
        process = Vm5kProcess(*args, cwd=self.workdir, outdir=outdir, env=environment(self.testbed),
                              **options)  # type: ignore[arg-type]
        self.processes.append(process)
        return process

    def run(self, *args: str, timeout: float = 900) -> Finished:
        return vm5k(*args, cwd=self.workdir, env=environment(self.testbed), timeout=timeout)

    def clean_up(self) -> None:
        for process in self.processes:
            process.kill()
        problems = []
        for out in self.outdirs:
            if not (out / "topology.json").exists() or record(out).get("status") == "destroyed":
                continue
            run = run_id(out)
            reserved = record(out).get("platform") in ("testbed", "grid5000")  # --hosts reserves nothing
            sites = {site["id"] for site in state(out)["sites"]} or {"rennes"} if reserved else set()
            ended = reserved and not [job for site in sites for job in live_jobs(self.testbed, site, run)]
            if ended:  # its nodes may still be rebooting
                name = f"vm5k-{run}"
                wait_for(lambda sites=sites, name=name: not [
                    job for site in sites for job in jobs_named(self.testbed, site, name, "finishing")], 120)
            if not ended:  # a run whose jobs ended had its nodes rebooted: the checks below say so
                done = self.run("--destroy", str(out))
                if done.returncode != 0:
                    problems.append(f"destroy {out}: {done.stderr[-1500:]}")
            left = leftovers(self.testbed, run)
            jobs = [job for site in sites for job in live_jobs(self.testbed, site, run)]
            if left or jobs:
                problems.append(f"run {run} left {left} and jobs {jobs}")
        assert not problems, "\n".join(problems)
