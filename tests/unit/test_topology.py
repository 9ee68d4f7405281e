"""The topology model: ids, the original vm5k's XML format (read, written, round trip), topology.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vm5k.errors import UsageError
from vm5k.topology import (
    GIB,
    VM,
    Capacity,
    Host,
    Topology,
    VMTemplate,
    natural_key,
    validate_id,
)

from .strategies import topologies

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def doc(inner: str) -> str:
    """A one-site, one-cluster topology file around `inner` (the hosts)."""
    return f"<vm5k><site id='s'><cluster id='c'>{inner}</cluster></site></vm5k>"


def one_vm(attrs: str) -> str:
    return doc(f"<host id='h'><vm id='v' {attrs}/></host>")


# -- ids --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vm-1", "taurus-3.lyon.grid5000.fr", "A", "0abc", "a.b-c"])
def test_valid_ids(name: str) -> None:
    assert validate_id(name) == name


@pytest.mark.parametrize("name", ["", "-vm", ".x", "vm 1", "vm;rm", "vm_1", "vm/1", "é", "a\nb", "x" * 254])
def test_invalid_ids_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="invalid"):
        validate_id(name, "VM id")


def test_natural_order() -> None:
    assert sorted(["vm-10", "vm-2", "vm-1"], key=natural_key) == ["vm-1", "vm-2", "vm-10"]


# -- building and moving -------------------------------------------------------------------------------

def small() -> Topology:
    topo = Topology()
    topo.add_host("lyon", "taurus", Host("taurus-1", capacity=Capacity(ram=32 * GIB, cores=12, threads=24)))
    topo.add_host("lyon", "taurus", Host("taurus-2"))
    topo.add_host("nancy", "gros", Host("gros-1"))
    return topo


def test_place_move_unplace_remove() -> None:
    topo = small()
    vm = topo.add_vm(VM("vm-1"), "taurus-1")
    assert vm.host == "taurus-1" and topo.host("taurus-1").vms == [vm]
    topo.place(vm, "gros-1")
    assert topo.host("taurus-1").vms == [] and topo.host("gros-1").vms == [vm] and vm.host == "gros-1"
    topo.unplace(vm)
    assert topo.unplaced == [vm] and vm.host is None
    topo.place(vm, "taurus-2")
    assert topo.unplaced == []
    assert topo.remove_host("taurus-2") == [vm]
    assert topo.unplaced == [vm] and vm.host is None and topo.find_host("taurus-2") is None
    topo.validate()


def test_assign_moves_many_vms() -> None:
    topo = small()
    for i in range(1, 5):
        topo.add_vm(VM(f"vm-{i}"))
    topo.assign({"vm-1": "taurus-1", "vm-2": "gros-1", "vm-3": "taurus-1"})
    assert [vm.id for vm in topo.host("taurus-1").vms] == ["vm-1", "vm-3"]
    assert [vm.id for vm in topo.unplaced] == ["vm-4"]
    topo.assign({"vm-1": "gros-1"})
    assert [vm.id for vm in topo.host("gros-1").vms] == ["vm-2", "vm-1"]
    topo.validate()
    with pytest.raises(KeyError):
        topo.assign({"vm-1": "nowhere"})


def test_duplicates_are_refused() -> None:
    topo = small()
    topo.add_vm(VM("vm-1"))
    with pytest.raises(UsageError, match="VM id vm-1 appears twice"):
        topo.add_vm(VM("vm-1"), "gros-1")
    with pytest.raises(UsageError, match="host gros-1 appears twice"):
        topo.add_host("nancy", "other", Host("gros-1"))


def test_reset_run_state_keeps_placement() -> None:
    topo = small()
    vm = topo.add_vm(VM("vm-1", ip="10.0.0.1", mac="00:16:3e:00:00:01", state="OK"), "taurus-1")
    topo.host("taurus-1").state = "OK"
    topo.reset_run_state()
    assert (vm.ip, vm.mac, vm.state, vm.host) == (None, None, "planned", "taurus-1")
    assert topo.host("taurus-1").state == "planned"


# -- the original vm5k's XML -----------------------------------------------------------------

def test_two_site_example() -> None:
    topo = Topology.from_xml((EXAMPLES / "two_sites.xml").read_bytes())
    assert [site.id for site in topo.sites] == ["luxembourg", "lyon"]
    assert [c.id for c in topo.sites[1].clusters] == ["hercule", "orion"]
    assert len(topo.hosts()) == 5 and len(topo.vms()) == 12
    vm4 = topo.vm("vm-4")
    assert (vm4.n_cpu, vm4.mem, vm4.hdd, vm4.host) == (4, 4096, 20, "clervaux-3")  # cpu= is n_cpu
    assert topo.vm("vm-6").real_file is False and topo.vm("vm-8").real_file is True
    vm9 = topo.vm("vm-9")  # no attributes: the defaults of -t
    assert (vm9.mem, vm9.n_cpu, vm9.hdd, vm9.cpuset, vm9.backing_file) == (1024, 1, 10, "auto", None)


def test_single_site_example_carries_capacity() -> None:
    topo = Topology.from_xml((EXAMPLES / "one_site.xml").read_bytes())
    assert all(host.capacity == Capacity(ram=128 * GIB, cores=16, threads=32) for host in topo.hosts())


def test_missing_attributes_come_from_the_template() -> None:
    xml = one_vm("n_cpu='2'")
    vm = Topology.from_xml(xml, VMTemplate(mem=4096, backing_file="/img.qcow2")).vm("v")
    assert (vm.mem, vm.n_cpu, vm.backing_file) == (4096, 2, "/img.qcow2")


@pytest.mark.parametrize("value, expected", [("False", False), ("false", False), ("0", False), ("no", False),
                                             ("True", True), ("true", True), ("1", True), ("yes", True)])
def test_real_file_is_a_real_boolean(value: str, expected: bool) -> None:
    xml = one_vm(f"real_file='{value}'")
    assert Topology.from_xml(xml).vm("v").real_file is expected


def test_original_final_topo_is_accepted() -> None:
    """What the original vm5k wrote (host cpu/mem, vm ip/mac/state) is read back."""
    xml = """<vm5k><site id="grenoble"><cluster id="adonis">
      <host cpu="8" id="adonis-1-kavlan-13.grenoble.grid5000.fr" mem="25330" state="OK">
        <vm backing_file="/grid5000/images/KVM/wheezy-x64-base.qcow2" cpuset="auto" hdd="10" id="vm-1"
            ip="10.15.216.1" mac="00:20:4e:e1:e8:b7" mem="1024" n_cpu="1" real_file="False" state="OK"/>
      </host></cluster></site></vm5k>"""
    topo = Topology.from_xml(xml)
    vm = topo.vm("vm-1")
    assert (vm.ip, vm.mac, vm.state, vm.real_file) == ("10.15.216.1", "00:20:4e:e1:e8:b7", "OK", False)
    assert topo.hosts()[0].capacity is None  # the original's cpu/mem meant different things across versions


def test_the_originals_address_placeholders_mean_no_address() -> None:
    """The original's example files (`<deployment>`, `ip="X.X.X.X"`) are read as they were meant."""
    xml = """<deployment><site id="lyon"><cluster id="taurus"><host id="taurus-1">
      <vm id="vm-1" ip="X.X.X.X" mem="1024"/><vm id="vm-2" ip="x.x.x.x"/><vm id="vm-3" ip=""/>
      </host></cluster></site></deployment>"""
    topo = Topology.from_xml(xml)
    assert [vm.ip for vm in topo.vms()] == [None, None, None]
    with pytest.raises(UsageError, match=r"invalid ip 'X\.X\.X\.Y'"):
        Topology.from_xml(one_vm("ip='X.X.X.Y'"))


@pytest.mark.parametrize("xml, message", [
    ("<vm5k><site id='s'><site id='s'/></site></vm5k>", "unexpected element <site>"),
    ("<vm5k><site id='s'/><site id='s'/></vm5k>", "site s appears twice"),
    ("<vm5k><site/></vm5k>", "has no id"),
    ("<vm5k><site id='s'><cluster id='c'><host id='h'><vm/></host></cluster></site></vm5k>", "no id"),
    (one_vm("memory='1'"),
     "unknown attribute 'memory'"),
    (one_vm("mem='-1'"),
     "must be at least 1, not -1"),
    (one_vm("mem='0'"),
     "at least 1"),
    (one_vm("real_file='maybe'"),
     "true or false"),
    (one_vm("cpu='1' n_cpu='2'"),
     "cpu and n_cpu differ"),
    (doc("<host id='h'><vm id='v'/></host><host id='h'/>"),
     "host h appears twice"),
    (doc("<host id='h'><vm id='v'/><vm id='v'/></host>"),
     "VM id v appears twice"),
    ("<vm5k><site id='s'><cluster id='c'><host id='h; rm -rf /'/></cluster></site></vm5k>", "invalid host"),
    ("<vm5k><site id='s'><cluster id='c'><host id='h' ram='12'/></cluster></site></vm5k>", "both ram"),
    ("<vm5k><site id='s'>text</site></vm5k>", "unexpected text"),
    ("<vm5k><site id='s'", "not valid XML"),
    ("", "not valid XML"),
])
def test_bad_topology_files(xml: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        Topology.from_xml(xml)
    assert "\n" not in str(caught.value)


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<vm5k><site id="&lol3;"/></vm5k>"""
EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><vm5k><site id="&x;"/></vm5k>"""


@pytest.mark.parametrize("xml", [BILLION_LAUGHS, EXTERNAL_ENTITY, '<!DOCTYPE vm5k><vm5k/>'])
def test_hostile_xml_is_refused(xml: str) -> None:
    with pytest.raises(UsageError, match="refused") as caught:
        Topology.from_xml(xml)
    assert "\n" not in str(caught.value)


@settings(max_examples=100, deadline=None)
@given(topologies())
def test_xml_round_trip(topo: Topology) -> None:
    text = topo.to_xml()
    again = Topology.from_xml(text)
    assert again == topo
    assert again.to_xml() == text


# -- topology.json -------------------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(topologies(), st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3))
def test_json_round_trip(topo: Topology, meta: dict) -> None:
    topo.meta = {"run_id": "r1", "pool": [["10.0.0.1", "00:16:3e:00:00:01"]], "free": meta}
    text = topo.to_json()
    again = Topology.from_json(text)
    assert again == topo
    assert again.to_json() == text


def test_json_keeps_fields_it_does_not_know() -> None:
    """A newer vm5k may add fields: an older one reading and re-writing the file keeps them."""
    data = small().to_dict()
    data["sites"][0]["clusters"][0]["hosts"][0]["kernel"] = "6.1"
    data["sites"][0]["clusters"][0]["hosts"][0]["vms"] = [{"id": "vm-1", "boot_seconds": 4.2}]
    data["new_top_level"] = {"x": 1}
    topo = Topology.from_dict(data)
    assert topo.host("taurus-1").extra == {"kernel": "6.1"} and topo.vm("vm-1").extra == {"boot_seconds": 4.2}
    again = topo.to_dict()
    assert again["sites"][0]["clusters"][0]["hosts"][0]["kernel"] == "6.1"
    assert again["sites"][0]["clusters"][0]["hosts"][0]["vms"][0]["boot_seconds"] == 4.2
    assert again["meta"]["new_top_level"] == {"x": 1}


def test_json_of_an_older_file_with_missing_fields() -> None:
    old = {"sites": [{"id": "s", "clusters": [{"id": "c", "hosts": [{"id": "h", "vms": [{"id": "v"}]}]}]}]}
    topo = Topology.from_json(json.dumps(old))
    vm = topo.vm("v")
    assert (vm.mem, vm.n_cpu, vm.hdd, vm.state, vm.host) == (1024, 1, 10, "planned", "h")


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ("[]", "must be a JSON object"),
    ('{"version": 99}', "newer than this vm5k"),
    ('{"format": "other"}', "format is"),
    ('{"sites": {}}', "must be a JSON list"),
    ('{"sites": [{"id": "bad id"}]}', "invalid site"),
    ('{"unplaced": [{"id": "v", "mem": "lots"}]}', "mem must be an integer"),
    ('{"unplaced": [{"id": "v", "ip": 5}]}', "invalid ip"),
    ('{"unplaced": [{"id": "v"}, {"id": "v"}]}', "appears twice"),
])
def test_bad_json(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Topology.from_json(text)
