"""The outdir's files: lists, CSV, Ansible inventory, ssh_config, atomic writes, logging set-up."""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

import pytest
import yaml

from vm5k import outdir, render
from vm5k.log import add_file_handler, remove_file_handler, setup_logging
from vm5k.placement import Limits, max_vms
from vm5k.render import SshConfigSettings
from vm5k.topology import GIB, VM, Capacity, Host, Topology, VMTemplate

T1, T2, GROS1 = "taurus-1.lyon.grid5000.fr", "taurus-2.lyon.grid5000.fr", "gros-1.nancy.grid5000.fr"


def deployed() -> Topology:
    topo = Topology(meta={"run_id": "r1"})
    topo.add_host("lyon", "taurus", Host("taurus-1.lyon.grid5000.fr", Capacity(32 * GIB, 12, 24), state="OK"))
    topo.add_host("lyon", "taurus", Host("taurus-2.lyon.grid5000.fr", state="KO", reason="kadeploy failed"))
    topo.add_host("nancy", "gros", Host("gros-1.nancy.grid5000.fr", state="OK"))
    topo.add_vm(VM("vm-10", ip="10.144.0.10", mac="00:16:3e:90:00:0a", state="OK"), GROS1)
    topo.add_vm(VM("vm-2", ip="10.144.0.2", mac="00:16:3e:90:00:02", state="OK", mem=2048),
                "taurus-1.lyon.grid5000.fr")
    topo.add_vm(VM("vm-1", ip="10.144.0.1", mac="00:16:3e:90:00:01", state="KO", reason="no SSH after 300 s"),
                "taurus-1.lyon.grid5000.fr")
    topo.add_vm(VM("vm-3"))  # not placed, no IP
    return topo


def test_hosts_list_leaves_out_ko_hosts() -> None:
    assert render.hosts_list(deployed()) == "taurus-1.lyon.grid5000.fr\ngros-1.nancy.grid5000.fr\n"


def test_vms_list_is_the_originals_format() -> None:
    text = render.vms_list(deployed())
    assert text == "10.144.0.1\tvm-1\n10.144.0.2\tvm-2\n10.144.0.10\tvm-10\n"
    assert text.splitlines()[0].split() == ["10.144.0.1", "vm-1"]  # how scripts read it


def test_vms_csv() -> None:
    rows = list(csv.DictReader(io.StringIO(render.vms_csv(deployed()))))
    assert [row["id"] for row in rows] == ["vm-1", "vm-2", "vm-3", "vm-10"]
    assert rows[0] == {"id": "vm-1", "host": T1, "cluster": "taurus", "site": "lyon", "ip": "10.144.0.1",
                       "mac": "00:16:3e:90:00:01", "mem": "1024", "n_cpu": "1", "hdd": "10", "state": "KO",
                       "reason": "no SSH after 300 s"}
    assert rows[2]["host"] == "" and rows[2]["ip"] == ""


def test_ansible_inventory_groups() -> None:
    inventory = yaml.safe_load(render.ansible_inventory(deployed(), ssh_config_path="/run dir/ssh_config"))
    children = inventory["all"]["children"]
    assert set(children["hypervisors"]["hosts"]) == {"taurus-1.lyon.grid5000.fr", "taurus-2.lyon.grid5000.fr",
                                                     "gros-1.nancy.grid5000.fr"}
    assert set(children["vms"]["hosts"]) == {"vm-1", "vm-2", "vm-10"}
    assert children["vms"]["hosts"]["vm-2"]["vm5k_host"] == "taurus-1.lyon.grid5000.fr"
    assert "ansible_host" not in children["vms"]["hosts"]["vm-2"]  # through the ssh_config alias
    assert set(children["site_lyon"]["children"]) == {"cluster_taurus"}
    assert set(children["cluster_taurus"]["hosts"]) == {T1, T2}
    assert set(children["on_taurus_1_lyon_grid5000_fr"]["hosts"]) == {"vm-1", "vm-2"}
    assert inventory["all"]["vars"]["ansible_ssh_common_args"] == '-F "/run dir/ssh_config"'
    direct = yaml.safe_load(render.ansible_inventory(deployed()))
    assert direct["all"]["children"]["vms"]["hosts"]["vm-2"]["ansible_host"] == "10.144.0.2"


def test_ansible_names_stay_strings() -> None:
    topo = Topology()
    topo.add_host("s", "c", Host("123"))
    topo.add_vm(VM("true", ip="10.0.0.1"), "123")
    children = yaml.safe_load(render.ansible_inventory(topo))["all"]["children"]
    assert list(children["hypervisors"]["hosts"]) == ["123"] and list(children["vms"]["hosts"]) == ["true"]
    assert list(children["on_123"]["hosts"]) == ["true"]


def test_ansible_group_names_never_collide() -> None:
    topo = Topology()
    topo.add_host("s", "a-b", Host("h1"))
    topo.add_host("s", "a.b", Host("h2"))
    children = yaml.safe_load(render.ansible_inventory(topo))["all"]["children"]
    assert {"cluster_a_b", "cluster_a_b_2"} <= set(children)


def test_ssh_config() -> None:
    settings = SshConfigSettings(identity_file="/out/id key", known_hosts_file="/out/known_hosts",
                           host_options={"*": {"User": "root"},
                                         "gros-1.nancy.grid5000.fr": {"ProxyJump": "access.grid5000.fr"}},
                           include=("/tmp/testbed/ssh_config",))
    text = render.ssh_config(deployed(), settings)
    blocks = {block.splitlines()[0]: block.splitlines()[1:] for block in text.split("\n\n") if block.strip()}
    assert blocks["Host vm-2"][:3] == ["    HostName 10.144.0.2", "    User root",
                                       "    ProxyJump taurus-1.lyon.grid5000.fr"]
    assert '    IdentityFile "/out/id key"' in blocks["Host vm-2"]
    assert "    UserKnownHostsFile /out/known_hosts" in blocks["Host vm-2"]
    assert "Host vm-3" not in blocks  # no IP yet
    assert blocks["Host gros-1.nancy.grid5000.fr"] == ["    User root", "    ProxyJump access.grid5000.fr"]
    assert text.index("Include /tmp/testbed/ssh_config") < text.index("Host ")
    with pytest.raises(ValueError):
        render.ssh_config(deployed(), SshConfigSettings(identity_file="/a\nHost *"))


def test_plan_and_max_vms_texts() -> None:
    text = render.plan_text(deployed(), walltime="1:00:00", source="f.xml", skipped=["capacity"])
    assert text.startswith("Would reserve 3 hosts on 2 sites for 1:00:00 (hosts named in f.xml):")
    assert "  taurus-1.lyon.grid5000.fr  2 VMs  3072 MiB  2 vCPU  vm-2 vm-1" in text
    assert "not placed: vm-3" in text and "  - capacity" in text
    hosts = [Host("a", Capacity(8 * GIB, 4)), Host("b")]
    result = max_vms(hosts, VMTemplate(mem=2048))
    text = render.max_vms_text(result, Limits(), {"a": (7168, 8)})
    assert text.splitlines()[1].split() == ["a", "7168", "8", "3"]
    assert text.splitlines()[2].split() == ["b", "?", "?", "?"]
    assert text.splitlines()[3].split() == ["total", "3"]


# -- writing -------------------------------------------------------------------------------------------------

def test_write_outputs_and_read_state(tmp_path: Path) -> None:
    topo = deployed()
    written = outdir.write_outputs(tmp_path, topo, ssh=SshConfigSettings(identity_file="/k"))
    assert {path.name for path in written} == set(outdir.OUTPUTS)
    assert (tmp_path / "vms.list").read_text() == render.vms_list(topo)
    assert outdir.read_state(tmp_path) == topo
    assert Topology.from_xml((tmp_path / "final_topo.xml").read_text()).hosts() == topo.hosts()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(outdir.OUTPUTS)  # no temporary left


def test_write_initial(tmp_path: Path) -> None:
    topo = deployed()
    outdir.write_initial(tmp_path, topo)
    assert Topology.from_xml((tmp_path / "initial_topo.xml").read_bytes()).vms() == topo.vms()
    assert outdir.read_state(tmp_path) == topo


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "topology.json"
    outdir.write_atomic(target, "old")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        outdir.write_atomic(target, "new")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["topology.json"]


def test_atomic_write_mode(tmp_path: Path) -> None:
    key = outdir.write_atomic(tmp_path / "id_ed25519", "secret", mode=0o600)
    assert key.stat().st_mode & 0o777 == 0o600


def test_read_state_errors(tmp_path: Path) -> None:
    from vm5k.errors import UsageError

    with pytest.raises(UsageError, match="cannot read"):
        outdir.read_state(tmp_path)
    (tmp_path / "topology.json").write_text("{half")
    with pytest.raises(UsageError, match="not valid JSON"):
        outdir.read_state(tmp_path)


def test_an_outdir_that_cannot_be_made(tmp_path: Path) -> None:
    from vm5k.errors import UsageError

    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot create the outdir"):
        outdir.make_outdir(tmp_path / "file" / "run")


def test_default_outdir_name() -> None:
    from datetime import datetime, timedelta, timezone

    now = datetime(2014, 3, 7, 1, 30, 45, tzinfo=timezone(timedelta(hours=1)))
    assert outdir.default_outdir(now) == "vm5k_20140307_013045_+0100"


# -- logging ------------------------------------------------------------------------------------------------

def test_plain_logging_in_pipes_and_the_log_file(tmp_path: Path) -> None:
    stream = io.StringIO()
    setup_logging(0, stream)
    setup_logging(0, stream)  # idempotent: one handler, not two
    path = add_file_handler(tmp_path, verbosity=1)
    logger = logging.getLogger("vm5k.some.module")
    logger.info("hello")
    logger.debug("details")
    remove_file_handler()
    console = stream.getvalue()
    assert console.count("hello") == 1 and "details" not in console and "\x1b" not in console
    content = path.read_text()
    assert "INFO    vm5k.some.module: hello" in content and "details" in content and "\x1b" not in content


def test_quiet_and_verbose_levels() -> None:
    stream = io.StringIO()
    setup_logging(-1, stream)
    logging.getLogger("vm5k.x").info("info line")
    logging.getLogger("vm5k.x").warning("warning line")
    assert "info line" not in stream.getvalue() and "warning line" in stream.getvalue()
    setup_logging(1, stream)
    logging.getLogger("vm5k.x").debug("debug line")
    assert "debug line" in stream.getvalue()


def test_rich_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    from rich.logging import RichHandler

    logger = setup_logging(0, Terminal())
    assert any(isinstance(handler, RichHandler) for handler in logger.handlers)
    setup_logging(0, io.StringIO())
    assert not any(isinstance(handler, RichHandler) for handler in logging.getLogger("vm5k").handlers)
