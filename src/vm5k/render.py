"""The outdir's text files, rendered from a topology: pure functions that return strings.

``outdir.py`` writes them; the XML of the original vm5k and topology.json come from ``topology.py`` itself.

- ``hosts.list``: one host a line (hosts that failed, state KO, are left out, as in the original);
- ``vms.list``: ``<ip>\\t<id>`` a line, VMs in natural id order (``vm-2`` before ``vm-10``), VMs without
  an IP left out — the original's format, which existing scripts read;
- ``vms.csv``: id, host, cluster, site, ip, mac, mem, n_cpu, hdd, state, reason;
- ``inventory.yaml``: an Ansible inventory with groups ``hypervisors`` and ``vms``, one group per site
  (``site_lyon``), per cluster (``cluster_taurus``) and per host (``on_taurus_1_lyon_grid5000_fr``: the VMs
  of that host); site and cluster groups hold the hosts and their VMs;
- ``ssh_config``: ``Host <vm id>`` blocks (``HostName <ip>``, ``User root``, ``ProxyJump <its host>``, the
  run's key and known_hosts file) and ``Host <host>`` blocks with what the platform needs to reach hosts.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from vm5k.placement import CountedFit, Limits, MaxVms
from vm5k.topology import HOST_KO, VM, Topology, natural_key

VMS_CSV_COLUMNS = ("id", "host", "cluster", "site", "ip", "mac", "mem", "n_cpu", "hdd", "state", "reason")


def hosts_list(topo: Topology) -> str:
    """One host id (a FQDN on Grid'5000) a line, document order, KO hosts left out."""
    return "".join(f"{host.id}\n" for host in topo.hosts() if host.state != HOST_KO)


def _sorted_vms(topo: Topology) -> list[VM]:
    return sorted(topo.vms(), key=lambda vm: natural_key(vm.id))


def vms_list(topo: Topology) -> str:
    """``<ip>\\t<id>`` a line (IP first, tab separated: the original's format)."""
    return "".join(f"{vm.ip}\t{vm.id}\n" for vm in _sorted_vms(topo) if vm.ip)


def vms_csv(topo: Topology) -> str:
    """Every VM with where it runs and what it is, with a header line."""
    where = {host.id: (site.id, cluster.id) for site, cluster, host in topo.locations()}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(VMS_CSV_COLUMNS)
    for vm in _sorted_vms(topo):
        site, cluster = where.get(vm.host or "", ("", ""))
        writer.writerow([vm.id, vm.host or "", cluster, site, vm.ip or "", vm.mac or "", vm.mem, vm.n_cpu,
                         vm.hdd, vm.state, vm.reason or ""])
    return out.getvalue()


def group_name(prefix: str, name: str) -> str:
    """An Ansible group name (letters, digits, underscores) for a site, cluster or host id."""
    return f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"


def ansible_inventory(topo: Topology, *, ssh_config_path: str | None = None, user: str = "root") -> str:
    """An Ansible YAML inventory of hosts and VMs.

    With `ssh_config_path`, Ansible connects through that ssh_config (``ssh -F``), where every VM is a
    ``Host`` alias that jumps through its host; without it, VMs are reached at their IP directly.
    """
    hypervisors: dict[str, dict[str, str]] = {}
    vms: dict[str, dict[str, object]] = {}
    groups: dict[str, dict[str, object]] = {}
    used: set[str] = set()

    def unique(name: str) -> str:
        candidate, number = name, 2
        while candidate in used:
            candidate, number = f"{name}_{number}", number + 1
        used.add(candidate)
        return candidate

    used.update(("all", "ungrouped", "hypervisors", "vms"))
    for site in topo.sites:
        site_children: dict[str, None] = {}
        for cluster in site.clusters:
            cluster_hosts: dict[str, None] = {}
            cluster_children: dict[str, None] = {}
            for host in cluster.hosts:
                hypervisors[host.id] = {}
                cluster_hosts[host.id] = None
                on_host = unique(group_name("on", host.id))
                groups[on_host] = {"hosts": {vm.id: None for vm in host.vms}}
                cluster_children[on_host] = None
                for vm in host.vms:
                    variables: dict[str, object] = {"vm5k_host": host.id, "vm5k_mem": vm.mem,
                                                    "vm5k_n_cpu": vm.n_cpu}
                    if vm.ip:
                        variables["vm5k_ip"] = vm.ip
                        if ssh_config_path is None:
                            variables["ansible_host"] = vm.ip
                    if vm.mac:
                        variables["vm5k_mac"] = vm.mac
                    vms[vm.id] = variables
            cluster_group = unique(group_name("cluster", cluster.id))
            groups[cluster_group] = {"hosts": cluster_hosts, "children": cluster_children}
            site_children[cluster_group] = None
        groups[unique(group_name("site", site.id))] = {"children": site_children}
    all_vars: dict[str, str] = {"ansible_user": user}
    if ssh_config_path is not None:
        all_vars["ansible_ssh_common_args"] = f"-F {_ssh_quote(ssh_config_path)}"
    inventory = {"all": {"vars": all_vars, "children": {
        "hypervisors": {"hosts": hypervisors},
        "vms": {"hosts": vms},
        **groups,
    }}}
    return "".join(_yaml_lines(inventory, 0))


_YAML_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}  # would not stay strings


def _yaml_lines(mapping: Mapping[str, object], depth: int) -> Iterator[str]:
    """Block YAML for the nesting, JSON flow (valid YAML, always quoted) for the leaves.

    A small emitter of our own: PyYAML takes seconds for 10,000 VMs, this takes milliseconds, and quoting
    every key keeps ids such as ``123`` or ``true`` strings.
    """
    pad = "  " * depth
    for key, value in mapping.items():
        plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) and key.lower() not in _YAML_WORDS
        name = key if plain else json.dumps(key)
        if isinstance(value, dict) and value and all(isinstance(v, dict | None) for v in value.values()):
            yield f"{pad}{name}:\n"
            yield from _yaml_lines(value, depth + 1)
        elif value is None:
            yield f"{pad}{name}:\n"
        else:
            yield f"{pad}{name}: {json.dumps(value)}\n"


@dataclass(frozen=True)
class SshConfigSettings:
    """How the ssh_config reaches VMs and hosts (the workflow fills it from the platform and the run).

    `host_options` are OpenSSH options for physical hosts: key ``"*"`` applies to every host of the
    topology, a host id to that host only, e.g. ``{"*": {"User": "root", "ProxyJump": "gateway"}}``.
    `include` are ssh_config files included first (e.g. the testbed's, which says how to reach its nodes).
    """

    identity_file: str | None = None
    known_hosts_file: str | None = None
    vm_user: str = "root"
    host_options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    vm_options: Mapping[str, str] = field(default_factory=dict)
    include: Sequence[str] = ()


_OPTION = re.compile(r"[A-Za-z][A-Za-z0-9]*")


def _ssh_quote(value: str) -> str:
    """An ssh_config value: quoted when it holds spaces; control characters and quotes refused."""
    if not value or re.search(r"[\x00-\x1f\x7f\"]", value):
        raise ValueError(f"cannot put {value!r} in an ssh_config")
    return f'"{value}"' if re.search(r"\s", value) else value


def _block(name: str, options: Sequence[tuple[str, str]]) -> list[str]:
    lines = [f"Host {name}"]
    for key, value in options:
        if not _OPTION.fullmatch(key):
            raise ValueError(f"invalid ssh_config option {key!r}")
        lines.append(f"    {key} {_ssh_quote(value)}")
    return [*lines, ""]


def ssh_config(topo: Topology, settings: SshConfigSettings | None = None) -> str:
    """An OpenSSH client config so that ``ssh -F ssh_config vm-1`` reaches vm-1 through its host.

    VMs without an IP get no block (there is nothing to connect to yet).
    """
    settings = settings or SshConfigSettings()
    lines = ["# Written by vm5k: ssh -F <this file> <vm id>", ""]
    for path in settings.include:
        lines += [f"Include {_ssh_quote(path)}", ""]
    common: list[tuple[str, str]] = []
    if settings.identity_file:
        common += [("IdentityFile", settings.identity_file), ("IdentitiesOnly", "yes")]
    if settings.known_hosts_file:
        common += [("UserKnownHostsFile", settings.known_hosts_file), ("StrictHostKeyChecking", "accept-new")]
    for vm in _sorted_vms(topo):
        if not vm.ip:
            continue
        options = [("HostName", vm.ip), ("User", settings.vm_user)]
        if vm.host:
            options.append(("ProxyJump", vm.host))
        options += common + sorted(settings.vm_options.items())
        lines += _block(vm.id, options)
    every_host = settings.host_options.get("*", {})
    for host in topo.hosts():
        host_options = {**every_host, **settings.host_options.get(host.id, {})}
        if host_options:
            lines += _block(host.id, list(host_options.items()))
    return "\n".join(lines)


def _table(rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """Plain aligned columns; `align` has one letter per column, ``l`` (left) or ``r`` (right)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) if align[i] == "l" else cell.rjust(widths[i])
                      for i, cell in enumerate(row)).rstrip() for row in rows]


def plan_text(topo: Topology, *, walltime: str | None = None, source: str | None = None,
              skipped: Sequence[str] = (), warnings: Sequence[str] = ()) -> str:
    """What a dry run would do: the hosts to reserve (per site and cluster) and each VM's host."""
    hosts = topo.hosts()
    sites = len(topo.sites)
    head = f"Would reserve {len(hosts)} host{'s' * (len(hosts) != 1)} on {sites} site{'s' * (sites != 1)}"
    head += f" for {walltime}" if walltime else ""
    head += f" (hosts named in {source})" if source else ""
    lines = [head + ":"]
    rows = [[site.id, cluster.id, " ".join(host.id for host in cluster.hosts)]
            for site in topo.sites for cluster in site.clusters]
    lines += ["  " + line for line in _table(rows, "lll")] if rows else []
    vms = topo.vms()
    lines.append(f"Would place {len(vms)} VM{'s' * (len(vms) != 1)}:")
    rows = [[host.id, f"{len(host.vms)} VM{'s' * (len(host.vms) != 1)}",
             f"{sum(vm.mem for vm in host.vms)} MiB", f"{sum(vm.n_cpu for vm in host.vms)} vCPU",
             " ".join(vm.id for vm in host.vms)] for host in hosts]
    lines += ["  " + line for line in _table(rows, "lrrrl")] if rows else []
    if topo.unplaced:
        lines.append(f"  not placed: {' '.join(vm.id for vm in topo.unplaced)}")
    for warning in warnings:
        lines.append(f"Warning: {warning}")
    if skipped:
        lines.append("Skipped checks:")
        lines += [f"  - {item}" for item in skipped]
    return "\n".join(lines) + "\n"


def max_vms_text(result: MaxVms, limits: Limits, capacities: Mapping[str, tuple[int, int]],
                 counted: Sequence[CountedFit] = ()) -> str:
    """`vm5k_max_vms`'s answer: per host the usable RAM and vCPUs and how many VMs fit, then the total,
    then what each counted ``-r`` element holds (OAR chooses which hosts: a range, not one number).

    `capacities` maps host ids to (usable MiB, usable vCPUs) for the hosts whose capacity is known.
    """
    rows = [["host", "RAM (MiB)", "vCPUs", "max VMs"]]
    for host_id, count in result.per_host.items():
        mem, vcpus = capacities.get(host_id, (None, None))
        rows.append([host_id, "?" if mem is None else str(mem), "?" if vcpus is None else str(vcpus),
                     "?" if count is None else str(count)])
    rows.append(["total", "", "", str(result.total)])
    template = result.template
    lines = _table(rows, "lrrr")
    lines.append(f"template: {template.mem} MiB, {template.n_cpu} vCPU{'s' * (template.n_cpu != 1)}; "
                 f"{limits.describe()}")
    if result.unknown:
        lines.append(f"capacity unknown (not counted): {' '.join(result.unknown)}")
    for fit in counted:
        held = str(fit.most) if fit.fewest == fit.most else f"{fit.fewest} to {fit.most}"
        if fit.count > fit.candidates:
            lines.append(f"{fit.element}: only {fit.candidates} usable hosts, holding {held} VMs")
        else:
            lines.append(f"{fit.element}: {fit.count} of its {fit.candidates} usable hosts hold {held} VMs "
                         "(OAR chooses which)")
    return "\n".join(lines) + "\n"
