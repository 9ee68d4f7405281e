"""The Python API's contract, without a platform: its keywords are the command's options, bad values are
the command's one-line errors as `vm5k.UsageError`, `import vm5k` stays light, every public name is
documented (a docstring with an example, a line in docs/api.md)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import vm5k
from vm5k import api, cli, ownership
from vm5k.options import PLACE_OPTIONS
from vm5k.request import DEPLOY_OPTIONS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

#: The command's options that are not keywords: methods of Run, plan(), logging, help and version.
NOT_KEYWORDS = {"resume", "destroy", "keep_job", "dry_run", "verbose", "quiet", "help", "version",
                "stop", "start", "reboot", "reset", "remove", "migrate", "grace", "parallel"}


def test_the_keywords_are_the_commands_long_options() -> None:
    dests = {action.dest for action in cli.build_parser()._actions}
    keywords = set(inspect.signature(vm5k.deploy).parameters) - {"progress"}
    assert keywords == dests - NOT_KEYWORDS
    assert keywords == set(DEPLOY_OPTIONS) | set(PLACE_OPTIONS)
    # same defaults: None (or False for a switch) means "not given", as on the command line
    for name, parameter in inspect.signature(vm5k.deploy).parameters.items():
        assert parameter.default in (None, False), name


def test_max_vms_keywords_are_vm5k_max_vms_options() -> None:
    dests = {action.dest for action in cli.build_max_vms_parser()._actions}
    assert set(inspect.signature(vm5k.max_vms).parameters) == dests - {"help", "version", "verbose", "quiet"}


@pytest.mark.parametrize(("keywords", "message"), [
    ({"n_vm": "many"}, "-n (number of VMs) must be an integer, not 'many'"),
    ({"n_vm": [3]}, "n_vm: expected text or a number, not list"),
    ({"walltime": "1h"}, "-w"),
    ({"resources": ["rennes:2", "rennes"]}, "-r: rennes is given twice"),
    ({"kavlan": "yes"}, "kavlan: expected True or False, not str"),
    ({"vm_template": "<vm mem='x'/>"}, "mem"),
    ({"vm_distribution": "sideways"}, "sideways"),
    ({"infile": "/nonexistent/topo.xml"}, "-i: cannot read /nonexistent/topo.xml"),
    ({"hosts": ["h1"], "vm_network": {"cidr": "10.0.0.0/24"}, "resources": "rennes"},
     "-r is for Grid'5000: it cannot be used with --hosts"),
    ({"n_vm": 2, "infile": str(EXAMPLES / "two_sites.xml")}, "-i describes the VMs: -n cannot be given"),
])
def test_bad_keyword_values_are_the_commands_one_line_errors(keywords: dict, message: str,
                                                             tmp_path: Path) -> None:
    for call in (vm5k.deploy, vm5k.plan):
        with pytest.raises(vm5k.UsageError) as error:
            call(outdir=tmp_path / "out", **{"walltime": "1:00", **keywords})
        assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing touched


def test_the_same_input_fails_the_same_way_in_the_shell(tmp_path: Path) -> None:
    with pytest.raises(vm5k.UsageError) as error:
        vm5k.deploy(n_vm="many", walltime="1:00", outdir=tmp_path / "o")
    done = subprocess.run([str(Path(sys.executable).parent / "vm5k"), "-n", "many", "-w", "1:00", "-o",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == f"vm5k: error: {error.value}\n"


def test_natural_python_values(tmp_path: Path) -> None:
    plan = vm5k.plan(infile=EXAMPLES / "two_sites.xml", walltime=7200, outdir=tmp_path / "plan")
    assert plan.platform is None and plan.outdir == tmp_path / "plan"
    assert "for 2:00:00" in plan.text
    assert len(plan.vms) == 12 and sum(len(vms) for vms in plan.placement.values()) == 12
    assert {path.name for path in plan.files} == {"initial_topo.xml", "topology.json"}
    scratch = vm5k.plan(infile=str(EXAMPLES / "two_sites.xml"), walltime="2:00:00")
    assert scratch.outdir is None and scratch.text == plan.text  # no outdir: nothing kept


def test_max_vms_from_a_file() -> None:
    result = vm5k.max_vms(infile=EXAMPLES / "one_site.xml", vm_template='<vm mem="2048" hdd="10" cpu="4"/>')
    assert result.per_host["parasilo-1.rennes.grid5000.fr"] == 16 and result.total == 32
    with pytest.raises(vm5k.UsageError, match="give one of"):
        vm5k.max_vms(vm_template="<vm/>")


def test_load_refuses_a_folder_without_a_run(tmp_path: Path) -> None:
    with pytest.raises(vm5k.UsageError, match="holds no vm5k run"):
        vm5k.Run.load(tmp_path)


def test_a_held_run_is_refused_at_once_naming_its_holder(tmp_path: Path) -> None:
    with ownership.hold(tmp_path, "deploy"):
        assert ownership.holder_of(tmp_path) is not None
        with pytest.raises(vm5k.RunBusy) as busy:
            ownership.hold(tmp_path, "resume")
    assert f"deploy by pid {ownership.os.getpid()}" in str(busy.value)
    assert ownership.holder_of(tmp_path) is None  # released with its block


def test_a_stop_request_of_a_dead_process_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = ownership.Holder(ownership.socket.gethostname(), dead.pid, "destroy", 0.0)
    (tmp_path / ownership.STOP_FILE).write_text(ownership.json.dumps(stale.__dict__))
    with ownership.hold(tmp_path, "deploy") as lock:
        lock.check_stop()  # no exception: the asker is gone
        alive = ownership.Holder(ownership.socket.gethostname(), 1, "destroy", 0.0)
        (tmp_path / ownership.STOP_FILE).write_text(ownership.json.dumps(alive.__dict__))
        with pytest.raises(vm5k.StopRequested, match="being destroyed by pid 1"):
            lock.check_stop()


def test_import_vm5k_is_light_and_lists_the_api() -> None:
    code = ("import sys, vm5k; heavy = [m for m in ('asyncssh', 'grid5000', 'requests', 'rich') if m in "
            "sys.modules]; print(heavy); print(sorted(set(vm5k.__all__) - set(dir(vm5k))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["[]", "[]"], done.stderr
    # the command line too: --help and bad input need neither the SSH layer nor the HTTP clients
    code = ("import sys, vm5k.cli; "
            "print([m for m in ('asyncssh', 'grid5000', 'requests') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["[]"], done.stderr
    assert "deploy" in dir(vm5k) and vm5k.Run is api.Run


PUBLIC = [name for name in vm5k.__all__ if name != "__version__"]


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_has_an_example_and_a_line_in_the_docs(name: str) -> None:
    value = getattr(vm5k, name)
    doc = inspect.getdoc(value) or ""
    assert doc, f"vm5k.{name} has no docstring"
    docs = (ROOT / "docs" / "api.md").read_text()
    assert f"`vm5k.{name}" in docs, f"docs/api.md does not describe vm5k.{name}"
    if inspect.isfunction(value) or (inspect.isclass(value) and not issubclass(value, Exception)):
        assert ">>>" in doc or "```" in doc, f"vm5k.{name}'s docstring has no example"


def test_every_platform_the_request_accepts_has_a_kind() -> None:
    from vm5k.platforms import KINDS, platform_kind
    from vm5k.request import PLATFORMS

    assert set(KINDS) == set(PLATFORMS)
    assert all(platform_kind(name).name == name for name in KINDS)
