"""A site's DNS and production DHCP: one dnsmasq in the site's namespace, listening on `br-prod`.

- DNS for `grid5000.fr`: every node of the testbed's sites (materialised or not) by its production FQDN and
  its KaVLAN names, from the reference data, as Grid'5000's DNS knows them. Nodes use it (resolv.conf
  points at the site's production gateway address). Names of DHCP clients are *not* published (Grid'5000
  does not publish VM names either: vm5k's own dnsmasq does that).
- DHCP on the VM range (`g5ksubnet`): exactly the IP/MAC pairs of the /22s that running jobs hold
  (`00:16:3e` + hex of the address's last three octets); any other MAC is ignored. The pairs change with
  jobs (`subnets_changed`): the hosts file is rewritten and dnsmasq reloads it on SIGHUP.
"""

from __future__ import annotations

import ipaddress
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

from g5k_testbed.lab.errors import LabError
from g5k_testbed.lab.layout import Layout
from g5k_testbed.lab.netfab import PROD_BRIDGE
from g5k_testbed.lab.plan import SitePlan
from g5k_testbed.lab.procs import ProcRef, in_netns, wait_until
from g5k_testbed.lab.runtime import Runtime
from g5k_testbed.subnets import ip_mac_pairs

LEASE_TIME = "12h"


class SiteFiles:
    def __init__(self, layout: Layout, site: str) -> None:
        self.dir = layout.site_dir(site)
        self.conf = self.dir / "dnsmasq.conf"
        self.dns_hosts = self.dir / "dns-hosts"
        self.dhcp_hosts = self.dir / "dhcp-hosts"
        self.leases = self.dir / "leases"
        self.log = layout.logs_dir / f"dnsmasq-{site}.log"


def render_conf(files: SiteFiles, site: SitePlan) -> str:
    subnet = ipaddress.IPv4Network(site.subnet_network)
    return "\n".join([
        f"# DNS and production DHCP of {site.name} (vm5k-testbed)",
        "user=root",
        "group=root",
        "pid-file=",
        "bind-interfaces",
        f"interface={PROD_BRIDGE}",
        "no-resolv",
        "no-hosts",
        "bogus-priv",
        f"addn-hosts={files.dns_hosts}",
        f"domain={site.domain}",
        "local=/grid5000.fr/",
        f"dhcp-range=set:vms,{subnet.network_address},static,{subnet.netmask},{LEASE_TIME}",
        f"dhcp-option=tag:vms,option:router,{site.subnet_gateway}",
        f"dhcp-option=tag:vms,option:dns-server,{site.prod_gateway}",
        f"dhcp-option=tag:vms,option:domain-name,{site.domain}",
        f"dhcp-option=tag:vms,option:domain-search,{site.domain},grid5000.fr",
        f"dhcp-hostsfile={files.dhcp_hosts}",
        "dhcp-ignore=tag:!known",
        "dhcp-ignore-names",
        "dhcp-authoritative",
        f"dhcp-leasefile={files.leases}",
        f"log-facility={files.log}",
        "log-dhcp",
        "",
    ])


def render_dns_hosts(entries: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{address} {name}\n" for address, name in entries)


def render_dhcp_hosts(cidrs: Iterable[str]) -> str:
    """One `mac,ip` line per address of each reserved /22 (dnsmasq's dhcp-hostsfile format)."""
    lines: list[str] = []
    for cidr in cidrs:
        lines.extend(f"{mac.lower()},{address}\n" for address, mac in ip_mac_pairs(cidr))
    return "".join(lines)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def start(layout: Layout, runtime: Runtime, site: SitePlan, dns_entries: list[tuple[str, str]],
          cidrs: list[str]) -> ProcRef:
    """Write the site's files and start its dnsmasq (unless the recorded one still runs)."""
    files = SiteFiles(layout, site.name)
    files.dir.mkdir(parents=True, exist_ok=True)
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(files.dns_hosts, render_dns_hosts(dns_entries))
    write_atomic(files.dhcp_hosts, render_dhcp_hosts(cidrs))
    files.conf.write_text(render_conf(files, site))
    key = f"process:dnsmasq:{site.name}"
    record = runtime.resource(key)
    if record and ProcRef.from_dict(record).alive():
        ref = ProcRef.from_dict(record)
        ref.signal(signal.SIGHUP)
        return ref
    argv = in_netns(layout.site_netns(site.name),
                    ["dnsmasq", "--keep-in-foreground", f"--conf-file={files.conf}"])
    with open(layout.logs_dir / f"dnsmasq-{site.name}.out", "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    ref = ProcRef.of(proc.pid)
    runtime.record(key, "process", **ref.to_dict())
    # dnsmasq exits at once on a bad configuration; give it a moment to prove it runs.
    if wait_until(lambda: proc.poll() is not None, 0.3):
        raise LabError(f"dnsmasq of {site.name} exited with status {proc.returncode}: see {out.name}")
    return ref


def set_subnets(layout: Layout, runtime: Runtime, site: str, cidrs: list[str]) -> None:
    """Serve exactly the IP/MAC pairs of `cidrs` from now on."""
    files = SiteFiles(layout, site)
    write_atomic(files.dhcp_hosts, render_dhcp_hosts(cidrs))
    record = runtime.resource(f"process:dnsmasq:{site}")
    if record:
        ProcRef.from_dict(record).signal(signal.SIGHUP)
