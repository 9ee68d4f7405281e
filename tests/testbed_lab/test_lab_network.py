"""KaVLAN on the testbed: nodes re-plugged into vlans answer by their KaVLAN names; sites route to each other;
a global vlan spans sites. Vlans are taken and released through the API, as vm5k does.
"""

from __future__ import annotations

import subprocess

import pytest

from lab_fixtures import LabTestbed
from waiting import wait_for

pytestmark = pytest.mark.integration



def answers(testbed: LabTestbed, name: str) -> bool:
    """True when `ssh root@name` works within a few seconds (a node outside that network does not)."""
    try:
        proc = testbed.ssh(name, "hostname", check=False, timeout=15, options=["-o", "ConnectTimeout=5"])
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def start_job(site, resources: str):  # type: ignore[no-untyped-def]
    job = site.jobs.create({"resources": f"{resources},walltime=0:30:00", "types": ["deploy"],
                            "command": "sleep 3600", "name": "lab-kavlan"})
    wait_for(lambda: (job.refresh(), job.state)[1] == "running", 60)
    return job


def kavlan_name(fqdn: str, vid: str) -> str:
    host, _, domain = fqdn.partition(".")
    return f"{host}-kavlan-{vid}.{domain}"


@pytest.mark.parametrize("kind", ["kavlan", "kavlan-local"])
def test_a_node_moved_into_a_vlan_answers_by_its_kavlan_name(lab_testbed: LabTestbed, kind: str) -> None:
    site = lab_testbed.grid5000().sites["rennes"]
    node, other = lab_testbed.nodes[0], lab_testbed.nodes[1]
    job = start_job(site, f"{{type='{kind}'}}/vlan=1+{{network_address in ('{node}')}}/nodes=1")
    try:
        vid = job.resources_by_type["vlans"][0]
        result = site.vlans[vid].nodes.submit([node])
        assert result[node]["status"] == "success"
        in_vlan = kavlan_name(node, vid)
        assert wait_for(lambda: answers(lab_testbed, in_vlan), 30)
        assert not answers(lab_testbed, node)  # its production address is gone
        address = lab_testbed.ssh(in_vlan, "ip -o -4 addr show scope global").stdout
        resolved = lab_testbed.ssh(other, f"getent hosts {in_vlan}").stdout.split()[0]
        assert f" {resolved}/" in address
        reaches_production = lab_testbed.ssh(
            in_vlan, f"ping -c 1 -W 2 {lab_testbed.node(other)['ip']}", check=False).returncode == 0
        assert reaches_production == (kind == "kavlan")  # local vlans are isolated, routed ones are not
    finally:
        job.delete()
    assert wait_for(lambda: answers(lab_testbed, node), 60)  # back to DEFAULT when the job ends
    assert lab_testbed.refresh()["nodes"][0]["vlan"] == "DEFAULT"


@pytest.fixture(scope="module")
def two_sites(lab_testbed_factory) -> LabTestbed:  # type: ignore[no-untyped-def]
    return lab_testbed_factory("rennes:1,nancy:1")


def test_sites_route_to_each_other_by_name(two_sites: LabTestbed) -> None:
    rennes, nancy = (n for n in two_sites.nodes)
    assert {n["site"] for n in two_sites.status["nodes"]} == {"rennes", "nancy"}
    for here, there in ((rennes, nancy), (nancy, rennes)):
        assert two_sites.ssh(here, f"ping -c 1 -W 3 {there}", check=False).returncode == 0, (here, there)


def test_a_global_vlan_spans_sites(two_sites: LabTestbed) -> None:
    api = two_sites.grid5000()
    by_site = {n["site"]: n["name"] for n in two_sites.status["nodes"]}
    rennes_node = f"{{network_address in ('{by_site['rennes']}')}}/nodes=1"
    rennes_job = start_job(api.sites["rennes"], f"{{type='kavlan-global'}}/vlan=1+{rennes_node}")
    nancy_job = start_job(api.sites["nancy"], f"{{network_address in ('{by_site['nancy']}')}}/nodes=1")
    try:
        vid = rennes_job.resources_by_type["vlans"][0]
        assert api.sites["rennes"].vlans[vid].nodes.submit([by_site["rennes"]])[by_site["rennes"]]["status"] \
            == "success"
        assert api.sites["nancy"].vlans[vid].nodes.submit([by_site["nancy"]])[by_site["nancy"]]["status"] \
            == "success"
        rennes_in, nancy_in = kavlan_name(by_site["rennes"], vid), kavlan_name(by_site["nancy"], vid)
        assert wait_for(lambda: answers(two_sites, rennes_in) and answers(two_sites, nancy_in), 30)
        nancy_address = two_sites.ssh(nancy_in, "ip -o -4 addr show scope global").stdout.split()[3]
        assert two_sites.ssh(rennes_in, f"ping -c 1 -W 3 {nancy_address.split('/')[0]}",
                             check=False).returncode == 0
    finally:
        nancy_job.delete()
        rennes_job.delete()
    assert wait_for(lambda: all(answers(two_sites, name) for name in by_site.values()), 60)
