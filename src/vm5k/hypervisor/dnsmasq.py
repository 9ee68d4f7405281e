"""The service node: one dnsmasq per run that names every VM, and serves DHCP in KaVLAN mode.

Why one per run, each on an address of its own: two runs on the same hosts must not fight over port 53 (or
answer each other's DHCP clients). The run's dnsmasq listens only on the run's service address, on the VM
network's bridge (``listen-address`` + ``bind-interfaces``): an address kept from the run's pool and added to
the service node's bridge for the run (or the service node's own address when the run has none). Its files
live in the run's folder (``dnsmasq/``): configuration, ``hosts`` (one ``IP name`` line per VM, read with
``addn-hosts``), ``dhcp-hosts`` (``MAC,IP,name`` static leases, ``dhcp-hostsfile``), the lease file, the
pid file, the log, and ``upstream.conf`` (the host's own name servers, to which other names are forwarded).

- DNS, both modes: every VM's id (and ``<id>.<domain>`` when the run has a domain) resolves to its address.
- DHCP, KaVLAN mode only: static leases only (``dhcp-range=<net>,static`` and ``dhcp-ignore=tag:!known``:
  an unknown MAC gets no answer, so another run's server on the same segment is never contradicted; not
  authoritative for the same reason); the router is the VM network's gateway (none when there is none:
  dnsmasq would offer itself otherwise) and the DNS server is the run's dnsmasq itself.
- In subnet mode the platform's DHCP already knows the MAC→IP pairs; each VM's cloud-init seed points its
  resolver at the service address (`vm5k.hypervisor.seed`).
- Every host (the service node included) resolves VM names through it: a ``nameserver`` line, preceded by a
  ``# vm5k run <run>`` marker, goes first in ``/etc/resolv.conf`` and is removed by destroy. A second run
  prepends its own line; its dnsmasq forwards what it does not know to the servers that were there before,
  the first run's included, so both runs' names resolve from every host.
- Adding VMs rewrites ``hosts``/``dhcp-hosts`` and sends SIGHUP (no restart: leases and caches stay); only
  a changed configuration restarts it. "Running" means the pid file names a live ``dnsmasq`` (a zombie is
  not one, see `/proc/PID/stat`).

>>> print(hosts_file([("vm-1", "10.0.0.5"), ("vm-2", "10.0.0.6")]), end="")
10.0.0.5 vm-1
10.0.0.6 vm-2
>>> print(dhcp_hosts_file([("vm-1", "10.0.0.5", "00:16:3E:00:00:05")]), end="")
00:16:3e:00:00:05,10.0.0.5,vm-1
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from vm5k.hypervisor.daemons import ALIVE_FUNCTION
from vm5k.hypervisor.layout import HostLayout
from vm5k.hypervisor.settings import VmNetwork
from vm5k.topology import parse_ip, parse_mac, validate_id

LEASE_TIME = "12h"


@dataclass(frozen=True)
class DnsmasqFiles:
    """The run's dnsmasq files on the service node."""

    conf: str
    hosts: str
    dhcp_hosts: str
    leases: str
    pid: str
    log: str
    upstream: str

    @classmethod
    def of(cls, layout: HostLayout) -> DnsmasqFiles:
        d = layout.dnsmasq_dir
        return cls(conf=f"{d}/dnsmasq.conf", hosts=f"{d}/hosts", dhcp_hosts=f"{d}/dhcp-hosts",
                   leases=f"{d}/leases", pid=f"{d}/dnsmasq.pid", log=f"{d}/dnsmasq.log",
                   upstream=f"{d}/upstream.conf")


def hosts_file(entries: Iterable[tuple[str, str]]) -> str:
    """``IP name`` lines (addn-hosts format) for (VM id, IP) pairs."""
    return "".join(f"{parse_ip(ip)} {validate_id(name, 'VM id')}\n" for name, ip in entries)


def dhcp_hosts_file(entries: Iterable[tuple[str, str, str]]) -> str:
    """``MAC,IP,name`` lines (dhcp-hostsfile format) for (VM id, IP, MAC) triples."""
    return "".join(f"{parse_mac(mac).lower()},{parse_ip(ip)},{validate_id(name, 'VM id')}\n"
                   for name, ip, mac in entries)


def config(files: DnsmasqFiles, network: VmNetwork, listen: str, run_id: str, max_leases: int = 1000) -> str:
    """The run's dnsmasq configuration (see the module docstring).

    >>> files = DnsmasqFiles.of(HostLayout("r1"))
    >>> net = VmNetwork(mode="kavlan", cidr="10.16.0.0/18", gateway="10.16.63.254")
    >>> text = config(files, net, "10.16.0.2", "r1")
    >>> "dhcp-range=set:vm5k,10.16.0.0,static,255.255.192.0,12h" in text.splitlines()
    True
    """
    listen = parse_ip(listen)
    lines = [
        f"# dnsmasq of vm5k run {validate_id(run_id, 'run id')}: names of the run's VMs"
        + (" and their DHCP leases" if network.dhcp else ""),
        "user=nobody",
        "group=nogroup",
        f"pid-file={files.pid}",
        f"listen-address={listen}",
        "bind-interfaces",
        "no-hosts",
        "domain-needed",
        f"addn-hosts={files.hosts}",
        f"resolv-file={files.upstream}",
        f"log-facility={files.log}",
        "cache-size=1000",
    ]
    if network.domain:
        lines += [f"domain={network.domain}", "expand-hosts", f"local=/{network.domain}/"]
    if network.dhcp:
        net = network.network
        lines += [
            f"dhcp-range=set:vm5k,{net.network_address},static,{net.netmask},{LEASE_TIME}",
            f"dhcp-hostsfile={files.dhcp_hosts}",
            "dhcp-ignore=tag:!known",
            f"dhcp-leasefile={files.leases}",
            f"dhcp-lease-max={max(16, max_leases)}",
            f"dhcp-option=tag:vm5k,option:dns-server,{listen}",
            f"dhcp-option=tag:vm5k,option:router,{network.gateway}" if network.gateway
            else "dhcp-option=tag:vm5k,option:router",
        ]
        if network.domain:
            lines += [f"dhcp-option=tag:vm5k,option:domain-name,{network.domain}",
                      f"dhcp-option=tag:vm5k,option:domain-search,{network.domain}"]
        lines.append("log-dhcp")
    return "\n".join(lines) + "\n"


def service_interface(address: str, network: VmNetwork, host_address: str, host_prefixlen: int) -> str:
    """``address/prefix`` to add to the service node's bridge ('' when it is the host's own address)."""
    if address == host_address:
        return ""
    if network.cidr is not None and ipaddress.IPv4Address(address) in network.network:
        return f"{address}/{network.network.prefixlen}"
    return f"{address}/{host_prefixlen or 32}"


#: $1 dnsmasq folder, $2 bridge, $3 listen address, $4 "address/prefix" to add to the bridge ('' = none),
#: $5 the file recording that address for destroy. The new configuration is in $1/dnsmasq.conf.new.
START_SCRIPT = ALIVE_FUNCTION + r"""
set -u
dir=$1 bridge=$2 listen=$3 extra=$4 record=$5
conf="$dir/dnsmasq.conf" pidf="$dir/dnsmasq.pid"
if [ -n "$extra" ] && ! ip -o -4 addr show dev "$bridge" | grep -q " inet $extra "; then
    printf '%s %s\n' "$bridge" "$extra" > "$record"
    ip addr add "$extra" dev "$bridge" || { echo "cannot add $extra to $bridge" >&2; exit 60; }
fi
if [ ! -f "$dir/upstream.conf" ]; then
    grep '^[[:space:]]*nameserver[[:space:]]' /etc/resolv.conf 2>/dev/null \
        | awk -v me="$listen" '$2 != me' > "$dir/upstream.conf.tmp"
    mv -f "$dir/upstream.conf.tmp" "$dir/upstream.conf"
fi
touch "$dir/hosts" "$dir/dhcp-hosts"
chmod 0644 "$dir/hosts" "$dir/dhcp-hosts" "$dir/upstream.conf" "$dir/dnsmasq.conf.new"
if alive "$pidf" dnsmasq; then
    if cmp -s "$dir/dnsmasq.conf.new" "$conf"; then
        kill -HUP "$(cat "$pidf")" && echo reloaded && exit 0
    fi
    kill "$(cat "$pidf")"
    i=0; while alive "$pidf" dnsmasq && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    echo restarted
fi
mv -f "$dir/dnsmasq.conf.new" "$conf"
touch "$dir/leases" && chown nobody:nogroup "$dir/leases" 2>/dev/null
dnsmasq --conf-file="$conf" 2>"$dir/dnsmasq.err" || { cat "$dir/dnsmasq.err" >&2; exit 61; }
i=0; until alive "$pidf" dnsmasq; do
    i=$((i + 1))
    if [ $i -ge 50 ]; then echo "dnsmasq did not stay up" >&2; cat "$dir/dnsmasq.err" >&2; exit 62; fi
    sleep 0.1
done
echo started
"""

#: $1 dnsmasq folder, $2 the file recording the address added to the bridge. Stops the run's dnsmasq.
STOP_SCRIPT = r"""
set -u
dir=$1 record=$2
pidf="$dir/dnsmasq.pid"
if [ -r "$pidf" ]; then
    pid=$(cat "$pidf")
    case "$pid" in
        ''|*[!0-9]*) ;;
        *) if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dnsmasq ] \
                && grep -qF -- "$dir/" "/proc/$pid/cmdline" 2>/dev/null; then
               kill "$pid"
               i=0
               while [ -d "/proc/$pid" ] && [ $i -lt 50 ] \
                   && [ "$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]; do
                   sleep 0.1; i=$((i + 1))
               done
               echo stopped
           fi ;;
    esac
fi
if [ -r "$record" ]; then
    read -r bridge extra < "$record"
    # Another run's service address in the same network is a secondary address of this one when this one
    # came first: without promotion, the kernel would delete it along with this one.
    echo 1 > "/proc/sys/net/ipv4/conf/$bridge/promote_secondaries" 2>/dev/null
    ip addr del "$extra" dev "$bridge" 2>/dev/null && echo "removed $extra"
    rm -f -- "$record"
fi
exit 0
"""

#: $1 name server, $2 run id, $3 lock file. Puts "# vm5k run <id>" + "nameserver <ip>" first in resolv.conf.
RESOLVER_ADD_SCRIPT = r"""
set -eu
f=/etc/resolv.conf marker="# vm5k run $2"
mkdir -p -- "$(dirname -- "$3")"
exec 9>>"$3"
flock -w 60 9 || true
if grep -qxF -- "$marker" "$f" 2>/dev/null; then exit 0; fi
tmp=$(mktemp)
{ printf '%s\nnameserver %s\n' "$marker" "$1"; cat "$f" 2>/dev/null || true; } > "$tmp"
cat "$tmp" > "$f"
rm -f "$tmp"
echo added
"""

#: $1 run id, $2 lock file. Removes the run's marker and the name server line after it.
RESOLVER_REMOVE_SCRIPT = r"""
set -eu
f=/etc/resolv.conf marker="# vm5k run $1"
[ -f "$f" ] || exit 0
mkdir -p -- "$(dirname -- "$2")"  # gone with /tmp when the host rebooted; the resolver line survived
exec 9>>"$2"
flock -w 60 9 || true
grep -qxF -- "$marker" "$f" || exit 0
tmp=$(mktemp)
awk -v m="$marker" 'skip { skip = 0; if ($1 == "nameserver") next } $0 == m { skip = 1; next } { print }' \
    "$f" > "$tmp"
cat "$tmp" > "$f"
rm -f "$tmp"
echo removed
"""


def service_record(layout: HostLayout) -> str:
    """The file that remembers the address added to the service node's bridge (removed by destroy)."""
    return f"{layout.host_changes_dir}/service-address"


def resolver_lock(layout: HostLayout) -> str:
    return f"{layout.host_facts_dir}/resolv.lock"


def start_command(layout: HostLayout, bridge: str, listen: str, extra: str) -> list[str]:
    """Start (or reload with SIGHUP, or restart on a changed configuration) the run's dnsmasq."""
    return ["sh", "-c", START_SCRIPT, "vm5k-dnsmasq", layout.dnsmasq_dir, bridge, listen, extra,
            service_record(layout)]


def stop_command(layout: HostLayout) -> list[str]:
    """Stop the run's dnsmasq (only a dnsmasq started with this run's folder) and drop its address."""
    return ["sh", "-c", STOP_SCRIPT, "vm5k-dnsmasq-stop", layout.dnsmasq_dir, service_record(layout)]


def resolver_add_command(layout: HostLayout, server: str) -> list[str]:
    return ["sh", "-c", RESOLVER_ADD_SCRIPT, "vm5k-resolver", parse_ip(server), layout.run_id,
            resolver_lock(layout)]


def resolver_remove_command(layout: HostLayout) -> list[str]:
    return ["sh", "-c", RESOLVER_REMOVE_SCRIPT, "vm5k-resolver-rm", layout.run_id, resolver_lock(layout)]
