"""Pure parts of the testbed: resource grammar, property filters, subnets, calendars, dates."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from g5k_testbed.calendar import Calendar
from g5k_testbed.oar_grammar import (
    ALL,
    NodesPart,
    ResourceSyntaxError,
    SubnetPart,
    VlanPart,
    parse_resources,
    parse_walltime,
)
from g5k_testbed.oar_properties import FilterSyntaxError, compile_filter
from g5k_testbed.subnets import ip_mac_pairs, mac_for_ip, site_slash22s, slash16_of
from g5k_testbed.timefmt import ReservationSyntaxError, format_paris, parse_reservation


def test_resource_strings_clients_send() -> None:
    req = parse_resources("{type='kavlan'}/vlan=1+{cluster='paravance'}/nodes=4+slash_22=2,walltime=2:00:00")
    assert req.walltime == 7200
    vlan, nodes, subnet = req.parts
    assert vlan == VlanPart("kavlan", 1) and subnet == SubnetPart(22, 2)
    assert isinstance(nodes, NodesPart) and nodes.count == 4
    assert nodes.match({"cluster": "paravance"}) and not nodes.match({"cluster": "parasilo"})
    named = parse_resources("{network_address in ('a.rennes.grid5000.fr', 'b.rennes.grid5000.fr')}/nodes=2")
    assert named.parts[0].match({"network_address": "b.rennes.grid5000.fr"})  # type: ignore[union-attr]
    assert parse_resources("slash_16=1").parts == (SubnetPart(16, 1),)
    assert parse_resources("{type='subnet'}/slash_22=3").parts[0].blocks == 1  # type: ignore[union-attr]
    assert parse_resources("nodes=ALL").parts[0].count == ALL  # type: ignore[union-attr]
    assert parse_resources(None).parts[0].count == 1  # type: ignore[union-attr]
    assert [parse_walltime(w) for w in ("1:30:00", "2:15", "3")] == [5400, 8100, 10800]


@pytest.mark.parametrize(
    "bad",
    [
        "nodes=0",
        "nodes=-1",
        "foo=2",
        "{cluster='x'/nodes=1",
        "nodes=1,walltime=x",
        "nodes=1,color=red",
        "{type='kavlan'}/vlan=2",
        "{cluster='x'}/vlan=1",
        "nodes=2/core=4",
        "{type='kavlan'}/nodes=1",
    ],
)
def test_bad_resource_strings_are_refused(bad: str) -> None:
    with pytest.raises(ResourceSyntaxError):
        parse_resources(bad)


@given(st.text(max_size=60))
def test_any_resource_string_parses_or_fails_cleanly(text: str) -> None:
    with contextlib.suppress(ResourceSyntaxError):
        parse_resources(text)


@given(st.text(max_size=60))
def test_any_property_filter_compiles_or_fails_cleanly(text: str) -> None:
    with contextlib.suppress(FilterSyntaxError):
        compile_filter(text)({"cluster": "gros"})


def test_property_filters() -> None:
    props = {"cluster": "gros", "memnode": 98304, "exotic": "NO", "host": "gros-12.nancy.grid5000.fr"}
    assert compile_filter("cluster='gros' AND memnode >= 65536")(props)
    assert compile_filter("(type='default' or type='disk') and cluster='gros'")({**props, "type": "default"})
    assert compile_filter("NOT exotic='YES'")(props)
    assert compile_filter("host LIKE 'gros-1%'")(props)
    assert not compile_filter("cluster not in ('gros', 'grisou')")(props)
    assert not compile_filter("memnode < 1024")(props)


def test_subnets_and_mac_rule() -> None:
    blocks = site_slash22s("10.156.0.0/14")
    assert len(blocks) == 192 and blocks[0] == "10.156.0.0/22" and blocks[-1] == "10.158.252.0/22"
    assert slash16_of("10.157.4.0/22") == "10.157.0.0/16"
    assert mac_for_ip("10.132.8.1") == "00:16:3E:84:08:01"
    pairs = ip_mac_pairs("10.158.4.0/22")
    assert len(pairs) == 1022 and pairs[0] == ("10.158.4.1", "00:16:3E:9E:04:01")
    assert pairs[-1] == ("10.158.7.254", "00:16:3E:9E:07:FE")


def test_calendar_gaps() -> None:
    cal = Calendar()
    cal.add(100, 200, 1)
    cal.add(250, 300, 2)
    assert cal.next_free(0, 100) == 0 and cal.next_free(50, 100) == 300 and cal.next_free(150, 50) == 200
    assert cal.owners_at(150) == [1] and cal.owners_at(200) == []
    with pytest.raises(ValueError):
        cal.add(190, 260, 3)
    cal.remove(1)
    assert cal.next_free(50, 100) == 50


def test_reservation_dates_are_paris_wall_clock() -> None:
    winter = parse_reservation("2024-01-15 10:00:00", now=0)[0]
    summer = parse_reservation("2024-07-15 10:00", now=0)[0]
    assert format_paris(winter) == "2024-01-15 10:00:00" and winter % 86400 == 9 * 3600  # UTC+1
    assert summer % 86400 == 8 * 3600  # UTC+2
    start, end = parse_reservation("2024-01-15 10:00:00,2024-01-15 12:30:00", now=0)
    assert end is not None and end - start == 9000
    assert parse_reservation("now", now=1234)[0] == 1234
    with pytest.raises(ReservationSyntaxError):
        parse_reservation("tomorrow at noon", now=0)
