"""The grammars of -r, -b, -j, -w, -t, --hosts, and how options become a Request."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vm5k.errors import UsageError
from vm5k.request import (
    DEFAULT_N_VM,
    Element,
    JobRef,
    build_request,
    format_walltime,
    parse_api_url,
    parse_blacklist,
    parse_env_name,
    parse_hosts,
    parse_jobs,
    parse_packages,
    parse_resources,
    parse_vm_network,
    parse_vm_template,
    parse_walltime,
)
from vm5k.topology import VMTemplate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


# -- -r ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("grid5000", (Element("grid5000"),)),
    ("grid5000:20", (Element("grid5000", 20),)),
    ("taurus:4,nancy:10", (Element("taurus", 4), Element("nancy", 10))),
    ("hercule,griffon,graphene", (Element("hercule"), Element("griffon"), Element("graphene"))),
    ("taurus:4, nancy", (Element("taurus", 4), Element("nancy"))),
    ("taurus-3.lyon.grid5000.fr", (Element("taurus-3.lyon.grid5000.fr"),)),
])
def test_resources(text: str, expected: tuple[Element, ...]) -> None:
    assert parse_resources(text) == expected


@pytest.mark.parametrize("text, message", [
    ("", "empty list"), ("taurus,", "empty item"), (",taurus", "empty item"), ("taurus:", "integer"),
    ("taurus:0", "at least 1"), ("taurus:-2", "at least 1"), ("taurus:x", "integer"), ("tau rus", "invalid"),
    ("taurus:4,taurus:2", "taurus is given twice"), ("a:1:2", "integer"), ("taurus;rm", "invalid"),
    ("grid5000:1000000", "at most"),
])
def test_bad_resources(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_resources(text)


def test_blacklist() -> None:
    assert parse_blacklist("reims,sagittaire,taurus-3") == ("reims", "sagittaire", "taurus-3")
    for bad in ("", "reims,", "reims:2", "grid5000", "a,a"):
        with pytest.raises(UsageError):
            parse_blacklist(bad)


# -- -j ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("42895", (JobRef(None, 42895),)),
    ("grenoble:1657430", (JobRef("grenoble", 1657430),)),
    ("grenoble:1657430,toulouse:415866,rennes:673350",
     (JobRef("grenoble", 1657430), JobRef("toulouse", 415866), JobRef("rennes", 673350))),
    ("grenoble:1,grenoble:2", (JobRef("grenoble", 1), JobRef("grenoble", 2))),
])
def test_jobs(text: str, expected: tuple[JobRef, ...]) -> None:
    assert parse_jobs(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "grenoble:", ":12", "grenoble:x", "grenoble:0", "gre noble:1",
                                  "grenoble:1,grenoble:1", "-5", "1.5"])
def test_bad_jobs(text: str) -> None:
    with pytest.raises(UsageError, match="-j"):
        parse_jobs(text)


# -- -w ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("2:00:00", 7200), ("1:0:0", 3600), ("0:30", 1800), ("2:00", 7200),
                                           ("3600", 3600), ("120:00:00", 432000), (" 1:00:05 ", 3605)])
def test_walltime(text: str, seconds: int) -> None:
    assert parse_walltime(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0:00:00", "1:60", "1:00:60", "2h", "1:2:3:4", "-5", "1:-1",
                                  "abc"])
def test_bad_walltime(text: str) -> None:
    with pytest.raises(UsageError, match="-w"):
        parse_walltime(text)


@given(st.integers(1, 10**6))
def test_walltime_round_trip(seconds: int) -> None:
    assert parse_walltime(format_walltime(seconds)) == seconds


# -- -t ------------------------------------------------------------------------------------------------

def test_template_defaults_are_the_originals() -> None:
    assert parse_vm_template("<vm/>") == VMTemplate(mem=1024, n_cpu=1, hdd=10, cpuset="auto")


def test_template_of_the_seed() -> None:
    template = parse_vm_template('<vm mem="4096" hdd="10" n_cpu="4" cpuset="auto"/>')
    assert (template.mem, template.hdd, template.n_cpu, template.cpuset) == (4096, 10, 4, "auto")
    assert parse_vm_template('<vm mem="2048" hdd="10" cpu="4" cpuset="auto"/>').n_cpu == 4  # cpu alias
    template = parse_vm_template('<vm backing_file="/home/me/img.qcow2" real_file="False"/>')
    assert template.backing_file == "/home/me/img.qcow2" and template.real_file is False


@pytest.mark.parametrize("text, message", [
    ("<vm", "not valid XML"), ("vm", "not valid XML"), ("<host/>", "must be a <vm"),
    ('<vm memory="4"/>', "unknown attribute 'memory'"), ('<vm id="x"/>', "unknown attribute 'id'"),
    ('<vm mem="0"/>', "at least 1"), ('<vm mem="4G"/>', "integer"), ('<vm n_cpu="99999"/>', "at most"),
    ('<vm cpuset="all"/>', "cpuset"), ("<vm>text</vm>", "attributes only"),
    ("<vm><vm/></vm>", "attributes only"),
    ('<!DOCTYPE vm [<!ENTITY a "b">]><vm mem="&a;"/>', "refused"),
])
def test_bad_templates(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_vm_template(text)


# -- other grammars ------------------------------------------------------------------------------------------

def test_hosts_list() -> None:
    assert parse_hosts("a,b c\n# comment\nd.example.org  # trailing\n") == ("a", "b", "c", "d.example.org")
    for bad in ("", "# nothing", "a,a", "a;b", "root@a"):
        with pytest.raises(UsageError, match="--hosts"):
            parse_hosts(bad)


def test_packages_env_api() -> None:
    packages = ("htop", "sysstat", "libc6:amd64", "vim=2:9.0")
    assert parse_packages("htop,sysstat,htop,libc6:amd64,vim=2:9.0") == packages
    with pytest.raises(UsageError):
        parse_packages("htop;rm -rf /")
    assert parse_env_name("debian12-min") == "debian12-min" and parse_env_name("me:my_env") == "me:my_env"
    with pytest.raises(UsageError):
        parse_env_name("deb ian")
    assert parse_api_url("https://api.grid5000.fr/stable/") == "https://api.grid5000.fr/stable"
    for bad in ("api.grid5000.fr", "ftp://x", "http://a b"):
        with pytest.raises(UsageError):
            parse_api_url(bad)


# -- build_request ------------------------------------------------------------------------------------------

def build(**options):
    return build_request({"outdir": "out", **options})


def test_defaults_and_their_warnings() -> None:
    request, warnings = build()
    assert request.n_vm == DEFAULT_N_VM and len(request.topology.unplaced) == DEFAULT_N_VM
    assert request.walltime == 3600 and request.resources == (Element("grid5000"),)
    assert request.placement.distribution == "round-robin" and request.needs_platform
    assert any("-n" in w for w in warnings) and any("-w" in w for w in warnings)


def test_n_vm_with_a_template_and_backing_file() -> None:
    request, warnings = build(n_vm="3", walltime="2:00", vm_template='<vm mem="2048"/>',
                              vm_backing_file="/img.qcow2", vm_distribution="distributed")
    assert warnings == []
    assert [vm.id for vm in request.topology.unplaced] == ["vm-1", "vm-2", "vm-3"]
    assert {(vm.mem, vm.backing_file) for vm in request.topology.unplaced} == {(2048, "/img.qcow2")}
    assert request.placement.distribution == "round-robin" and request.walltime == 7200


def test_infile_request_keeps_hosts_and_placement_and_forgets_run_state() -> None:
    data = (EXAMPLES / "two_sites.xml").read_bytes().replace(b'<vm id="vm-1"', b'<vm id="vm-1" ip="10.0.0.1"')
    options = {"outdir": "o", "infile": "two_sites.xml", "vm_template": '<vm mem="512"/>'}
    request, _ = build_request(options, infile_data=data)
    topo = request.topology
    assert request.n_vm == 12 and topo.vm("vm-9").mem == 512 and topo.vm("vm-9").host == "orion-1"
    assert topo.vm("vm-1").ip is None and topo.vm("vm-1").state == "planned"
    assert request.needs_platform  # a real run needs a platform...
    request, _ = build_request({**options, "dry_run": True}, infile_data=data)
    assert not request.needs_platform  # ...a dry run of a file does not
    request, _ = build_request({**options, "dry_run": True, "api": "https://x.org"}, infile_data=data)
    assert request.needs_platform  # unless it names an API to check against
    with pytest.raises(UsageError, match="could not be read"):
        build_request(options)


@pytest.mark.parametrize("options, message", [
    ({"infile": "f", "n_vm": "3"}, "-n cannot be given"),
    ({"infile": "f", "resources": "taurus"}, "-r cannot be given"),
    ({"job_id": "1", "walltime": "1:00"}, "-w cannot be given"),
    ({"job_id": "1", "resources": "taurus"}, "-r cannot be given"),
    ({"forcedeploy": True, "nodeploy": True}, "contradict"),
    ({"env_name": "a", "env_file": "b"}, "give one"),
    ({"platform": "hosts"}, "needs --hosts"),
    ({"api": "https://x", "platform": "testbed"}, "cannot be used with --platform testbed"),
    ({"resume": "out", "n_vm": "3"}, "--n-vm cannot be given"),
    ({"destroy": "out", "kavlan": True}, "--kavlan cannot be given"),
    ({"resume": "out", "keep_job": True}, "--keep-job goes with --destroy"),
    ({"keep_job": True}, "--keep-job goes with --destroy"),
    ({"n_vm": "100001"}, "at most 100000"),
    ({"vm_disk_location": "some"}, "-l"),
    ({"queue": "bad queue"}, "invalid --queue"),
    ({"host_reserve": "-1"}, "at least 0"),
    ({"cpu_overcommit": "lots"}, "not a number"),
    ({"program": "a\nb"}, "-p"),
    ({"outdir": ""}, "-o"),
])
def test_inconsistent_options(options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_request({"outdir": "out", **options}, infile_data=b"<vm5k/>" if "infile" in options else None)


def test_infile_without_vms() -> None:
    with pytest.raises(UsageError, match="describes no VM"):
        build_request({"outdir": "o", "infile": "f"}, infile_data=b"<vm5k><site id='s'/></vm5k>")


def test_hosts_platform() -> None:
    net = "10.156.0.0/14,gateway=10.159.255.254,block=10.156.8.0/22,mac=local"
    request, warnings = build_request({"outdir": "o", "n_vm": "2", "vm_network": net},
                                      hosts_text="node-1\nnode-2\n")
    assert request.platform == "hosts" and request.hosts == ("node-1", "node-2")
    assert request.vm_network == {"cidr": "10.156.0.0/14", "gateway": "10.159.255.254",
                                  "block": "10.156.8.0/22", "mac": "local"}
    assert not any("-w" in w for w in warnings)  # nothing is reserved
    with pytest.raises(UsageError, match="-k is for Grid'5000"):
        build_request({"outdir": "o", "kavlan": True, "vm_network": net}, hosts_text="node-1")
    with pytest.raises(UsageError, match="--platform testbed"):
        build_request({"outdir": "o", "platform": "testbed"}, hosts_text="node-1")
    with pytest.raises(UsageError, match="needs --vm-network"):
        build_request({"outdir": "o"}, hosts_text="node-1")
    with pytest.raises(UsageError, match="Grid'5000 gives its own"):
        build_request({"outdir": "o", "vm_network": net})


@pytest.mark.parametrize("text", ["", "gateway=1.2.3.4", "10.0.0.0/8,gw=1", "10.0.0.0/8,mac=",
                                  "10.0.0.0/8,mac=a,mac=b"])
def test_vm_network_grammar_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--vm-network"):
        parse_vm_network(text)


def test_api_implies_grid5000_and_resume_destroy() -> None:
    request, _ = build(api="https://api.grid5000.fr/stable", n_vm="2")
    assert request.platform == "grid5000" and request.needs_platform
    request, _ = build_request({"outdir": "ignored", "destroy": "run1", "keep_job": True,
                                "api": "https://api.grid5000.fr/stable"})
    assert (request.action, request.outdir) == ("destroy", "run1")  # keep_job: a keyword of Run.destroy
    request, _ = build_request({"outdir": "ignored", "resume": "run1", "verbose": True})
    assert (request.action, request.outdir) == ("resume", "run1")  # -v/-q: the logging of the command


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_grammars_never_fail_otherwise_than_usage_error(text: str) -> None:
    for parse in (parse_resources, parse_blacklist, parse_jobs, parse_walltime, parse_vm_template,
                  parse_hosts, parse_packages, parse_env_name, parse_api_url):
        try:
            parse(text)
        except UsageError as error:
            assert "\n" not in str(error)
