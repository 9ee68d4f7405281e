"""SSH access to the nodes: the testbed key, stable host keys, and the `ssh_config` that reaches them.

The machine's root network namespace has no route to the testbed's networks, so every node name (the
production FQDN, its short forms, and each `<node>-kavlan-<N>` name) gets a `Host` block whose
`ProxyCommand` opens the TCP connection from inside the namespace that routes that address:

    Host paradoxe-1.rennes.grid5000.fr paradoxe-1.rennes paradoxe-1
      HostName paradoxe-1.rennes.grid5000.fr
      ProxyCommand /usr/bin/nsenter --net=/run/netns/vtb-1a2b3c-rennes /usr/bin/nc 172.16.101.1 %p

Two configs are written. `ssh_config` is the testbed's own (admin) config: it carries the testbed key,
which every node accepts whatever a deployment installed, for the testbed's work and tests' inspection.
`ssh_config.routing` says only how to reach each node (ProxyCommand, host-key trust) and names no key and
no user: a client given it gets in only with a key of its own that the node accepts (Kadeploy's, a
user's key in the shared home), as on Grid'5000.

A KaVLAN name only answers while the node is in that vlan (elsewhere its address is unreachable), as on
Grid'5000. Host keys live in the state folder and survive deployments, so `known_hosts` stays valid and
strict host-key checking works.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from g5k_testbed.lab.layout import Layout
from g5k_testbed.lab.plan import LabPlan, NodePlan
from g5k_testbed.lab.procs import run

HOST_KEY_TYPES = ("ed25519", "ecdsa")


def _tool(name: str, fallback: str) -> str:
    return shutil.which(name) or fallback


def ensure_testbed_key(layout: Layout) -> Path:
    """The testbed's ed25519 key pair (created once, kept across `down`)."""
    layout.keys_dir.mkdir(parents=True, exist_ok=True)
    layout.keys_dir.chmod(0o700)
    key = layout.private_key
    if not key.exists() or not key.with_suffix(".pub").exists():
        key.unlink(missing_ok=True)
        key.with_suffix(".pub").unlink(missing_ok=True)
        comment = f"vm5k-testbed-{layout.id}"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
    return key


def host_key_dir(layout: Layout, node: NodePlan) -> Path:
    return layout.keys_dir / "hosts" / node.uid


def ensure_host_keys(layout: Layout, node: NodePlan) -> dict[str, Path]:
    """The node's SSH host keys by type (created once; deployments keep them)."""
    folder = host_key_dir(layout, node)
    folder.mkdir(parents=True, exist_ok=True)
    keys = {}
    for kind in HOST_KEY_TYPES:
        path = folder / f"ssh_host_{kind}_key"
        if not path.exists() or not Path(f"{path}.pub").exists():
            path.unlink(missing_ok=True)
            Path(f"{path}.pub").unlink(missing_ok=True)
            run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"root@{node.fqdn}", "-f", str(path)])
        keys[kind] = path
    return keys


def node_aliases(node: NodePlan) -> list[str]:
    """Every name a user may type for the node on the production network."""
    return [node.fqdn, f"{node.uid}.{node.site}", node.uid]


def render_ssh_config(layout: Layout, plan: LabPlan, *, admin: bool = True) -> str:
    """The admin config (testbed key, root), or with `admin=False` the routing-only one."""
    nsenter = _tool("nsenter", "/usr/bin/nsenter")
    nc = _tool("nc", "/usr/bin/nc")
    path = layout.ssh_config if admin else layout.routing_ssh_config
    lines = [
        f"# vm5k-testbed {layout.id}: the nodes of the testbed in {layout.state_dir}",
        f"# Use: ssh -F {path} root@<node>   (names: FQDN, <uid>.<site>, <uid>, KaVLAN names)",
    ]
    if not admin:
        lines.append("# Routing only: no key and no user here; bring your own (ssh -i KEY), as on Grid'5000.")
    lines.append("")
    for node in plan.nodes:
        entries: list[tuple[list[str], str, str]] = [
            (node_aliases(node), node.ip, layout.site_netns(node.site))]
        for vid, address in sorted(node.kavlan.items(), key=lambda kv: int(kv[0])):
            vlan = plan.vlan(vid, node.site)
            if vlan is None:
                continue  # a global vlan owned by a site this testbed does not run
            name = node.kavlan_fqdn(vid)
            entries.append(([name, name.split(".")[0]], address, layout.site_netns(vlan.owner)))
        for names, address, netns in entries:
            lines += [
                f"Host {' '.join(names)}",
                f"  HostName {names[0]}",
                f"  ProxyCommand {nsenter} --net=/run/netns/{netns} {nc} {address} %p",
            ]
            if admin:
                lines += ["  User root", f"  IdentityFile {layout.private_key}", "  IdentitiesOnly yes"]
            lines += [
                f"  UserKnownHostsFile {layout.known_hosts}",
                "  GlobalKnownHostsFile /dev/null",
                "  StrictHostKeyChecking yes",
                "  CheckHostIP no",
                "",
            ]
    return "\n".join(lines)


def render_known_hosts(layout: Layout, plan: LabPlan) -> str:
    lines = []
    for node in plan.nodes:
        names = node_aliases(node)
        for vid in sorted(node.kavlan, key=int):
            if plan.vlan(vid, node.site) is not None:
                names += [node.kavlan_fqdn(vid), node.kavlan_fqdn(vid).split(".")[0]]
        for kind in HOST_KEY_TYPES:
            pub = Path(f"{host_key_dir(layout, node) / f'ssh_host_{kind}_key'}.pub").read_text().split()
            lines.append(f"{','.join(names)} {pub[0]} {pub[1]}")
    return "\n".join(lines) + "\n"


def write_client_files(layout: Layout, plan: LabPlan) -> None:
    layout.ssh_config.write_text(render_ssh_config(layout, plan))
    layout.routing_ssh_config.write_text(render_ssh_config(layout, plan, admin=False))
    layout.known_hosts.write_text(render_known_hosts(layout, plan))
