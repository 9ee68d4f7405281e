"""The vm5k and vm5k_max_vms commands, in-process: help, dry runs, errors (one line, exit 2, never a
traceback, whatever the input: checked with hypothesis)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import threading
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vm5k import cli
from vm5k.hypervisor.provision import PACKAGE_NAME
from vm5k.request import Request
from vm5k.topology import GIB, Capacity, Host, Topology

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WORKDIR = tempfile.mkdtemp(prefix="vm5k-cli-test-")


@contextlib.contextmanager
def in_workdir() -> Iterator[str]:
    """Run in a scratch folder, so default outdirs land there."""
    previous = os.getcwd()
    os.chdir(WORKDIR)
    try:
        yield WORKDIR
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def fake_workflow(result: int = 0) -> Iterator[list]:
    """A stand-in for what runs a checked request (`vm5k.api._execute_request`) and for the workflow's
    hardware reading, recording their calls, so no test ever starts a real deployment; its platform has one
    host of 8 GiB and 8 threads. Everything before (parsing, the API's keywords, the checks) is real."""
    from vm5k import api

    calls: list = []

    def execute(request: Request, progress: bool) -> types.SimpleNamespace:
        calls.append(("run", request))
        return types.SimpleNamespace(ok=result == 0, platform="testbed", text="", files=[])

    module = types.ModuleType("vm5k.workflow")
    host = Host("h-1.rennes.grid5000.fr", Capacity(ram=8 * GIB, cores=4, threads=8))
    module.max_vms_hosts = lambda request: calls.append(("max_vms_hosts", request)) or [host]  # type: ignore[attr-defined]
    saved = sys.modules.get("vm5k.workflow")
    saved_execute = api._execute_request
    sys.modules["vm5k.workflow"] = module
    api._execute_request = execute  # type: ignore[assignment]
    try:
        yield calls
    finally:
        api._execute_request = saved_execute  # type: ignore[assignment]
        if saved is None:
            sys.modules.pop("vm5k.workflow", None)
        else:
            sys.modules["vm5k.workflow"] = saved


def run(argv: list[str], entry=cli.main) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = entry(argv)
    return status, out.getvalue(), err.getvalue()


def assert_one_error_line(status: int, err: str, prog: str = "vm5k") -> None:
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err


# -- the command surface ---------------------------------------------------------------------------

SEED_OPTIONS = [
    "-h", "--help", "-v", "--verbose", "-q", "--quiet", "-o OUTDIR", "--outdir OUTDIR", "-p PROGRAM",
    "--program PROGRAM", "--plot", "-n N_VM", "--n_vm N_VM", "-i INFILE", "--infile INFILE", "-j JOB_ID",
    "--job_id JOB_ID", "-w WALLTIME", "--walltime WALLTIME", "-k", "--kavlan", "-r RESOURCES",
    "--resources RESOURCES", "-b BLACKLISTED", "--blacklisted BLACKLISTED", "-e ENV_NAME",
    "--env_name ENV_NAME", "-a ENV_FILE", "--env_file ENV_FILE", "--forcedeploy", "--nodeploy",
    "--host-packages HOST_PACKAGES", "-t VM_TEMPLATE", "--vm_template VM_TEMPLATE", "-f VM_BACKING_FILE",
    "--vm_backing_file VM_BACKING_FILE", "-l VM_DISK_LOCATION", "--vm_disk_location VM_DISK_LOCATION",
    "-d VM_DISTRIBUTION", "--vm_distribution VM_DISTRIBUTION", "--vm-clean-disks",
]
LATER_OPTIONS = [
    "--dry-run", "--api URL", "--ssh-config FILE", "--platform {testbed,grid5000,hosts}", "--hosts LIST|FILE",
    "--queue QUEUE", "--resume OUTDIR", "--destroy OUTDIR", "--keep-job", "--packages-upgrade", "--seed N",
    "--cpu-overcommit RATIO", "--host-reserve MIB", "--version", "--n-vm N_VM", "--vm-template VM_TEMPLATE",
    "--job-id JOB_ID", "--env-name ENV_NAME",
]


def test_help_shows_every_option_in_the_seeds_groups() -> None:
    status, out, err = run(["--help"])
    assert status == 0 and err == ""
    for option in SEED_OPTIONS + LATER_OPTIONS:
        assert option in out, option
    groups = ("Execution", "Mode", "Physical hosts", "Virtual machines")
    positions = [out.index(f"\n{group}:") for group in groups]
    assert positions == sorted(positions)
    assert re.search(r"default=vm5k_\d{8}_\d{6}_[+-]\d{4}", out)


def test_version() -> None:
    status, out, _ = run(["--version"])
    assert status == 0 and re.fullmatch(r"vm5k \S+\n", out)


@pytest.mark.parametrize("argv", [
    ["-n", "3", "-i", "x"], ["-j", "1", "-w", "1:00"], ["-e", "a", "-a", "b"],
    ["--forcedeploy", "--nodeploy"], ["-v", "-q"], ["--resume", "a", "--destroy", "b"],
])
def test_mutual_exclusions(argv: list[str]) -> None:
    status, _, err = run(argv)
    assert_one_error_line(status, err)
    assert "not allowed with" in err


@pytest.mark.parametrize("argv, message", [
    (["-n", "-5"], "-n (number of VMs) must be at least 1"),
    (["-n", "0"], "at least 1"),
    (["-r", "taurus:x"], "-r: node count of taurus"),
    (["-j", "grenoble:abc"], "-j: job id"),
    (["-j", "grenoble:99999999999999999999"], "-j: job id must be at most 9223372036854775807"),
    (["-n", "-99999999999999999999"], "-n (number of VMs) must be at least 1"),
    (["-w", "2:99"], "-w"),
    (["-d", "spread"], "unknown distribution 'spread'"),
    (["-t", "<vm mem='lots'/>"], "-t: mem (MiB) must be an integer"),
    (["-t", "<vm"], "-t VM template is not valid XML"),
    (["-i", "/does/not/exist.xml"], "-i: cannot read /does/not/exist.xml"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["-r"], "expected one argument"),
    (["--api", "not a url"], "--api: invalid URL"),
    (["-a", "/no/env/file"], "-a: no such file"),
    (["--ssh-config", "/no/ssh/config"], "--ssh-config: no such file"),
    (["--hosts", "/no/hosts/file"], "--hosts: no such file"),
    (["-n", "2", "-r", "taurus\nrm -rf /"], "-r element"),
])
def test_malformed_inputs_give_one_line_and_status_2(argv: list[str], message: str) -> None:
    status, out, err = run(argv)
    assert_one_error_line(status, err)
    assert message in err and out == ""


def test_control_characters_are_escaped_in_errors() -> None:
    status, _, err = run(["--bogus\nsecond line"])
    assert_one_error_line(status, err)
    assert "\\n" in err


@pytest.mark.parametrize("name", ["my xp", "xp$(touch pwned)", "it's", "100%", "a\"b"])
def test_an_outdir_path_unsafe_in_an_ssh_config_is_refused_before_it_is_made(tmp_path: Path, name: str
                                                                              ) -> None:
    # ssh -F OUTDIR/ssh_config puts that path, unquoted, into the shell command of its ProxyJump
    folder = tmp_path / name
    status, out, err = run(["--dry-run", "-i", str(EXAMPLES / "two_sites.xml"), "-o", str(folder)])
    assert_one_error_line(status, err)
    assert "-o: the outdir's path" in err and out == ""
    assert not folder.exists() and list(tmp_path.iterdir()) == []


# -- dry run of a topology file --------------------------------------------------------------------

def test_dry_run_of_the_two_site_example(tmp_path: Path) -> None:
    out_dir = tmp_path / "run"
    status, out, err = run(["--dry-run", "-i", str(EXAMPLES / "two_sites.xml"), "-o", str(out_dir),
                            "-w", "2:00:00"])
    assert status == 0, err
    assert "nothing reserved, nothing started, no platform contacted" in out
    assert "Would reserve 5 hosts on 2 sites for 2:00:00" in out
    assert re.search(r"orion-1 +4 VMs +4096 MiB +4 vCPU +vm-9 vm-10 vm-11 vm-12", out)
    assert "Skipped checks:" in out and "capacity (RAM, vCPUs) of 5 of 5 hosts" in out
    assert sorted(p.name for p in out_dir.iterdir()) == [".vm5k.lock", "initial_topo.xml", "topology.json",
                                                         "vm5k.log"]
    assert "dry run of" in (out_dir / "vm5k.log").read_text()
    written = Topology.from_xml((out_dir / "initial_topo.xml").read_bytes())
    given = Topology.from_xml((EXAMPLES / "two_sites.xml").read_bytes())
    assert written == given  # the file's hosts and placement, as written
    state = Topology.from_json((out_dir / "topology.json").read_bytes())
    assert state.meta["dry_run"] is True and state.meta["walltime"] == 7200 and state.hosts() == given.hosts()


def test_dry_run_checks_capacity_when_the_file_carries_it(tmp_path: Path) -> None:
    status, out, err = run(["--dry-run", "-i", str(EXAMPLES / "one_site.xml"), "-o", str(tmp_path / "ok"),
                            "-w", "1:00"])
    assert status == 0, err and "capacity (RAM" not in out
    overloaded = tmp_path / "big.xml"
    overloaded.write_text((EXAMPLES / "one_site.xml").read_text().replace('mem="16384"', 'mem="160000"', 1))
    status, out, err = run(["--dry-run", "-i", str(overloaded), "-o", str(tmp_path / "ko"), "-w", "1:00"])
    assert status == 2 and out == ""
    assert "needed" in err and "available" in err
    assert err.splitlines()[-1].startswith("vm5k: error: host parasilo-1.rennes.grid5000.fr cannot hold")
    assert not (tmp_path / "ko").exists()  # refused before anything was written


def test_dry_run_places_the_files_unplaced_vms(tmp_path: Path) -> None:
    infile = tmp_path / "free.xml"
    infile.write_text("""<vm5k><site id="rennes"><cluster id="paradoxe">
        <host id="paradoxe-1" ram="412316860416" cores="52" threads="104"/>
        <host id="paradoxe-2" ram="412316860416" cores="52" threads="104"/>
      </cluster></site><vm id="a"/><vm id="b"/><vm id="c"/></vm5k>""")
    status, out, err = run(["--dry-run", "-i", str(infile), "-o", str(tmp_path / "o"), "-d", "concentrated"])
    assert status == 0, err
    assert re.search(r"paradoxe-1 +3 VMs .* a b c", out)


# -- runs that need a platform ---------------------------------------------------------------------

def test_runs_go_to_the_workflow() -> None:
    with in_workdir(), fake_workflow(result=0) as calls:
        status, _, err = run(["-n", "4", "-r", "rennes:2", "-w", "0:20:00", "-d", "random", "--seed", "7"])
    assert status == 0, err
    (kind, request), = calls
    assert kind == "run" and isinstance(request, Request)
    assert request.n_vm == 4 and request.walltime == 1200 and request.placement.seed == 7
    assert [vm.id for vm in request.topology.unplaced] == ["vm-1", "vm-2", "vm-3", "vm-4"]


def test_a_random_distribution_records_its_seed() -> None:
    with in_workdir(), fake_workflow() as calls:
        status, _, err = run(["-n", "4", "-w", "1:00", "-d", "random"])
    assert status == 0 and calls[0][1].placement.seed is not None
    assert f"--seed {calls[0][1].placement.seed}" in err


def test_an_internal_error_is_one_line_too() -> None:
    def broken(request: Request, progress: bool) -> int:
        raise RuntimeError("boom")

    from vm5k import api

    with in_workdir(), fake_workflow() as _:
        api._execute_request = broken  # type: ignore[assignment]
        status, _, err = run(["-n", "2", "-w", "1:00"])
    assert status == 1 and "Traceback" not in err
    assert err.splitlines()[-1] == "vm5k: error: internal error: RuntimeError: boom (run with -v for details)"


# -- vm5k_max_vms ----------------------------------------------------------------------------------

def test_max_vms_from_a_file_with_capacity() -> None:
    status, out, err = run(["-i", str(EXAMPLES / "one_site.xml"), "-t", '<vm mem="2048" hdd="10" cpu="4"/>'],
                           cli.max_vms_main)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[1].split() == ["parasilo-1.rennes.grid5000.fr", "130048", "64", "16"]  # 64 vCPUs / 4
    assert lines[3].split() == ["total", "32"]


def test_max_vms_needs_capacity_or_a_platform() -> None:
    status, _, err = run(["-i", str(EXAMPLES / "two_sites.xml"), "-t", "<vm/>"], cli.max_vms_main)
    assert_one_error_line(status, err, "vm5k_max_vms")
    assert "carry no capacity" in err
    with fake_workflow() as calls:
        status, out, err = run(["-j", "42895", "-t", '<vm mem="2048"/>'], cli.max_vms_main)
    assert status == 0 and calls[0][0] == "max_vms_hosts" and calls[0][1].jobs[0].id == 42895
    # 8 GiB minus the 1 GiB reserve holds 3 VMs of 2 GiB; 8 threads x 2.0 allow 16 vCPUs
    assert out.splitlines()[1].split() == ["h-1.rennes.grid5000.fr", "7168", "16", "3"]


@pytest.mark.parametrize("argv", [[], ["-t", "<vm/>"], ["-i", "x", "-j", "1", "-t", "<vm/>"],
                                  ["-j", "1", "-t", "<bad"]])
def test_max_vms_usage_errors(argv: list[str]) -> None:
    status, _, err = run(argv, cli.max_vms_main)
    assert_one_error_line(status, err, "vm5k_max_vms")


# -- hypothesis: arbitrary input never gives a traceback -------------------------------------------

OPTIONS_WITH_VALUES = ["-n", "-r", "-b", "-j", "-w", "-t", "-d", "-e", "-l", "-f", "-p", "--queue", "--seed",
                       "--api", "--cpu-overcommit", "--host-reserve", "--host-packages", "--hosts",
                       "--platform"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.sampled_from(OPTIONS_WITH_VALUES), st.text(max_size=30))
def test_any_option_value_is_accepted_or_refused_in_one_line(option: str, value: str) -> None:
    with in_workdir(), fake_workflow():
        status, _, err = run(["--dry-run", option, value])
    assert "Traceback" not in err
    assert status in (0, 2), err
    if status == 2:
        assert len(err.splitlines()) == 1 and err.startswith("vm5k: error: ")


@FUZZ
@given(st.lists(st.one_of(st.sampled_from([*OPTIONS_WITH_VALUES, "-k", "--plot", "-v", "-q", "--nodeploy"]),
                          st.text(max_size=15)), max_size=6))
def test_any_command_line_gives_an_exit_status_and_no_traceback(argv: list[str]) -> None:
    with in_workdir(), fake_workflow():
        status, _, err = run(["--dry-run", *argv])
    assert "Traceback" not in err and status in (0, 2), err
    if status == 2:
        assert err.splitlines()[-1].startswith("vm5k: error: ")
        assert sum(line.startswith("vm5k: error: ") for line in err.splitlines()) == 1


not_a_count = st.text(max_size=20).filter(lambda s: not re.fullmatch(r"\s*[+]?\d+\s*", s))
not_a_walltime = st.text(max_size=20).filter(lambda s: re.search(r"[^\d:\s]", s) or not s.strip())
bad_resources = st.text(min_size=1, max_size=20).filter(lambda s: re.search(r"[^A-Za-z0-9.,:\s-]", s))
not_xml_vm = st.text(max_size=30).filter(lambda s: not s.lstrip().startswith("<vm"))
not_a_job = st.text(max_size=20).filter(lambda s: re.search(r"[^\d:,\sA-Za-z.-]", s)
                                        or not re.search(r"\d", s))


@FUZZ
@given(st.one_of(
    st.tuples(st.just("-n"), not_a_count),
    st.tuples(st.just("-w"), not_a_walltime),
    st.tuples(st.just("-r"), bad_resources),
    st.tuples(st.just("-j"), not_a_job),
    st.tuples(st.just("-t"), not_xml_vm),
    st.tuples(st.just("-d"), st.text(max_size=20).filter(
        lambda s: s not in ("round-robin", "n_by_hosts", "concentrated", "random", "distributed",
                            "round_robin", "roundrobin", "n-by-hosts"))),
))
def test_malformed_values_always_give_status_2_and_one_line(case: tuple[str, str]) -> None:
    option, value = case
    with in_workdir(), fake_workflow() as calls:
        status, out, err = run(["-n" if option != "-n" else "-w", "2" if option != "-n" else "1:00",
                                option, value])
    assert_one_error_line(status, err)
    assert calls == [] and out == ""


@FUZZ
@given(st.binary(max_size=200).filter(lambda data: b"<vm" not in data and b"<site" not in data))
def test_malformed_topology_files_give_status_2_and_one_line(data: bytes) -> None:
    with in_workdir() as folder:
        path = Path(folder) / "fuzz.xml"
        path.write_bytes(data)
        status, _, err = run(["--dry-run", "-i", str(path)])
    assert_one_error_line(status, err)


# -- hostile input against the real workflow: refused before anything is asked of anyone --------------------
#
# The tests above stand in for the workflow; these run the real one, pointed at a Grid'5000 API that only
# counts what it is asked (and answers 404), and at SSH hosts whose connections would leave a mark. Bad
# input must be refused in one line with status 2 before any API request, any SSH connection, or any
# outdir.

class CountingApi(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that records every request and answers 404."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

        class Handler(BaseHTTPRequestHandler):
            def _count(handler) -> None:  # `self` is the server: the handler is its inner class
                self.requests.append((handler.command, handler.path))
                body = b'{"message": "counted"}'
                handler.send_response(404)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _count

            def log_message(handler, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/stable"


@pytest.fixture(scope="module")
def counting_api() -> Iterator[CountingApi]:
    server = CountingApi()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def ssh_trap() -> Iterator[tuple[str, Path]]:
    """An SSH config under which any connection attempt leaves a file behind (and fails)."""
    folder = Path(tempfile.mkdtemp(prefix="vm5k-ssh-trap-"))
    mark = folder / "an-ssh-connection-was-attempted"
    (folder / "ssh_config").write_text(f"Host *\n    ProxyCommand /bin/sh -c 'touch {mark}; exit 1'\n")
    yield str(folder / "ssh_config"), mark
    shutil.rmtree(folder, ignore_errors=True)


def run_for_real(argv: list[str], api: CountingApi, trap: tuple[str, Path], *, hosts: bool = False
                 ) -> tuple[int, str, Path]:
    """The real `vm5k` (no stand-in workflow), against the counting API or the trapped SSH hosts."""
    outdir = Path(tempfile.mkdtemp(prefix="vm5k-hostile-", dir=WORKDIR)) / "out"
    where = (["--hosts", "node-1,node-2", "--ssh-config", trap[0], "--vm-network", "10.253.0.0/24"] if hosts
             else ["--api", api.url])
    before = len(api.requests)
    with in_workdir():
        status, _, err = run([*argv, *where, "-o", str(outdir)])
    assert len(api.requests) == before, f"bad input reached the API: {api.requests[before:]}"
    assert not trap[1].exists(), "bad input opened an SSH connection"
    return status, err, outdir


def assert_refused_untouched(status: int, err: str, outdir: Path) -> None:
    assert_one_error_line(status, err)
    assert not outdir.exists(), "bad input created the outdir"


SHELL_META = ";|&$`()<>'\"\\ \n\t*?!#~{}[]="
#: a name with shell metacharacters inside it (never only around it: surrounding blanks are trimmed)
hostile_ids = st.builds(lambda head, meta, tail: head + meta + tail, st.sampled_from(["vm", "web-1", "a."]),
                        st.text(alphabet=SHELL_META, min_size=1, max_size=4),
                        st.text(alphabet="abc123", min_size=1, max_size=4))
huge = st.integers(min_value=10**8, max_value=10**40).map(str)  # above every limit: VMs, nodes, MiB, GiB


def quoted(value: str) -> str:
    return xml_escape(value, {'"': "&quot;"})


def topology_file(vm_id: str = "vm-1", host_id: str = "paradoxe-1") -> str:
    return (f'<vm5k><site id="rennes"><cluster id="paradoxe"><host id="{quoted(host_id)}">'
            f'<vm id="{quoted(vm_id)}"/></host></cluster></site></vm5k>')


negative_sizes = st.sampled_from(["mem", "hdd", "n_cpu", "cpu"]).map(lambda name: f'<vm {name}="-1"/>')


@FUZZ
@given(st.one_of(
    st.tuples(st.just("-n"), not_a_count),
    st.tuples(st.just("-n"), huge),
    st.tuples(st.just("-w"), not_a_walltime),
    st.tuples(st.just("-w"), huge.map(lambda n: f"{n}:00:00")),
    st.tuples(st.just("-r"), bad_resources),
    st.tuples(st.just("-r"), huge.map(lambda n: f"rennes:{n}")),
    st.tuples(st.just("-r"), hostile_ids),
    st.tuples(st.just("-b"), hostile_ids),
    st.tuples(st.just("-t"), not_xml_vm),
    st.tuples(st.just("-t"), huge.map(lambda n: f'<vm mem="{n}"/>')),
    st.tuples(st.just("-t"), negative_sizes),
    st.tuples(st.just("-e"), hostile_ids),
    st.tuples(st.just("--queue"), hostile_ids),
    st.tuples(st.just("--host-packages"), hostile_ids.filter(lambda name: not PACKAGE_NAME.fullmatch(name))),
    st.tuples(st.just("-j"), not_a_job),
    st.tuples(st.just("-j"), hostile_ids.map(lambda bad: f"rennes:{bad}")),
    st.tuples(st.just("-j"), huge.map(lambda n: f"rennes:{n}0000000000")),  # beyond any OAR job id
))
def test_hostile_values_are_refused_before_any_request(counting_api: CountingApi, ssh_trap: tuple[str, Path],
                                                       case: tuple[str, str]) -> None:
    option, value = case
    base = (["-w", "1:00"] if option == "-n" else ["-n", "2"] if option in ("-w", "-j")
            else ["-n", "2", "-w", "1:00"])
    assert_refused_untouched(*run_for_real([*base, option, value], counting_api, ssh_trap))


@FUZZ
@given(st.one_of(hostile_ids.map(lambda bad: {"vm_id": bad}), hostile_ids.map(lambda bad: {"host_id": bad})))
def test_topology_files_naming_hostile_vms_or_hosts_are_refused(counting_api: CountingApi,
                                                                 ssh_trap: tuple[str, Path],
                                                                 names: dict[str, str]) -> None:
    with in_workdir() as folder:
        path = Path(folder) / "hostile.xml"
        path.write_text(topology_file(**names))
    status, err, outdir = run_for_real(["-i", str(path), "-w", "1:00"], counting_api, ssh_trap)
    assert_refused_untouched(status, err, outdir)
    assert any(why in err for why in ("invalid VM id", "invalid host", "not valid XML")), err  # \x1f: not XML


@FUZZ
@given(st.lists(hostile_ids.filter(lambda name: not re.search(r"[\s#]", name)),  # separators and comments
                min_size=1, max_size=3))
def test_hostile_host_lists_are_refused_before_any_connection(counting_api: CountingApi,
                                                              ssh_trap: tuple[str, Path],
                                                              names: list[str]) -> None:
    outdir = Path(tempfile.mkdtemp(prefix="vm5k-hostile-", dir=WORKDIR)) / "out"
    with in_workdir():
        status, _, err = run(["--hosts", ",".join(["node-1", *names]), "--ssh-config", ssh_trap[0],
                              "--vm-network", "10.253.0.0/24", "-n", "1", "-o", str(outdir)])
    assert_refused_untouched(status, err, outdir)
    assert not ssh_trap[1].exists(), "bad input opened an SSH connection"


@pytest.mark.parametrize(("network", "why"), [
    ("10.253.0.0/33", "not a valid netmask"),
    ("10.253.0.0/24,gateway=10.9.0.1", "the gateway 10.9.0.1 is outside 10.253.0.0/24"),
    ("10.253.0.0/24,block=10.9.0.0/26", "the block 10.9.0.0/26 is not inside 10.253.0.0/24"),
    ("10.253.0.0/24,block=10.253.0.0/31", "is too small"),
    ("10.253.0.0/24,mac=vendor", "the MAC rule is one of"),
])
def test_vm_network_addresses_are_refused_before_the_outdir_is_made(ssh_trap: tuple[str, Path], network: str,
                                                                    why: str) -> None:
    outdir = Path(tempfile.mkdtemp(prefix="vm5k-network-", dir=WORKDIR)) / "out"
    with in_workdir():
        status, _, err = run(["--hosts", "node-1", "--ssh-config", ssh_trap[0], "--vm-network", network,
                              "-n", "1", "-o", str(outdir)])
    assert_refused_untouched(status, err, outdir)
    assert why in err and not ssh_trap[1].exists()


def test_a_missing_program_is_refused_before_anything_starts() -> None:
    outdir = Path(tempfile.mkdtemp(prefix="vm5k-program-", dir=WORKDIR)) / "out"
    with in_workdir(), fake_workflow() as calls:
        status, _, err = run(["-n", "2", "-p", "./experiment-typo.sh", "-o", str(outdir)])
        assert_refused_untouched(status, err, outdir)
        assert "-p: no such program ./experiment-typo.sh" in err and calls == []
        status, _, err = run(["-n", "2", "-p", "echo 'unterminated", "-o", str(outdir)])
        assert_refused_untouched(status, err, outdir)
        assert "-p: cannot parse the program" in err and calls == []


BODY = ('<vm5k><site id="rennes"><cluster id="paradoxe"><host id="paradoxe-1"><vm id="{vm}"/></host>'
        '</cluster></site></vm5k>')
LAUGHS = ('<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
          '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">')
XML_ATTACKS = {
    "billion laughs": f'<?xml version="1.0"?><!DOCTYPE vm5k [{LAUGHS}]>' + BODY.format(vm="&d;"),
    "external entity (file)": '<?xml version="1.0"?><!DOCTYPE vm5k [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                              + BODY.format(vm="&x;"),
    "external entity (http)": '<?xml version="1.0"?><!DOCTYPE vm5k [<!ENTITY x SYSTEM "API/xxe">]>'
                              + BODY.format(vm="&x;"),
    "external DTD": '<?xml version="1.0"?><!DOCTYPE vm5k SYSTEM "API/dtd">' + BODY.format(vm="vm-1"),
    "parameter entity": '<?xml version="1.0"?><!DOCTYPE vm5k [<!ENTITY % p SYSTEM "API/p"> %p;]>'
                        + BODY.format(vm="vm-1"),
    "too many VMs": "<vm5k>" + "".join(f'<vm id="v{index}"/>' for index in range(100_001)) + "</vm5k>",
}


@pytest.mark.parametrize("attack", sorted(XML_ATTACKS))
def test_xml_attacks_in_topology_files_and_templates_are_refused_without_fetching_anything(
        counting_api: CountingApi, ssh_trap: tuple[str, Path], attack: str) -> None:
    text = XML_ATTACKS[attack].replace("API/", counting_api.url + "/")
    with in_workdir() as folder:
        path = Path(folder) / "attack.xml"
        path.write_text(text)
    status, err, outdir = run_for_real(["-i", str(path), "-w", "1:00"], counting_api, ssh_trap)
    assert_refused_untouched(status, err, outdir)
    if attack != "too many VMs":  # the same document as a -t template (the template's own root is <vm>)
        template = text.replace("<vm5k>", "").replace("</vm5k>", "")
        status, err, outdir = run_for_real(["-n", "1", "-w", "1:00", "-t", template], counting_api, ssh_trap)
        assert_refused_untouched(status, err, outdir)


def test_an_endless_input_file_is_refused_without_reading_it_all(counting_api: CountingApi,
                                                                 ssh_trap: tuple[str, Path]) -> None:
    status, err, outdir = run_for_real(["-i", "/dev/zero", "-w", "1:00"], counting_api, ssh_trap)
    assert_refused_untouched(status, err, outdir)
    assert "larger than 64 MiB" in err
