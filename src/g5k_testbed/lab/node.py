"""One node's files and life: its filesystem layers, its PID-1 process, start, stop and Kadeploy's wipe.

    <state>/nodes/<uid>/base/      what makes the machine's Debian this node (hostname, hosts, resolv.conf,
                                   sshd_config, host keys, the testbed key, apt's offline notice)
    <state>/nodes/<uid>/upper/     everything the node's users wrote (one folder per overlaid top-level dir)
    <state>/nodes/<uid>/work/      overlayfs work folders
    <state>/nodes/<uid>/root/      mount point of the node's tmpfs root (only inside the node)
    <state>/nodes/<uid>/init.json  the node's recipe, read by `nodeinit`

Starting a node = a network namespace cabled into its vlan, a memory cgroup, and `nodeinit` as PID 1 of
fresh mount/UTS/IPC/PID namespaces (see `nodeinit`). Stopping it = SIGKILL to that PID 1 (the kernel then
kills every process of the node, VMs included) and deleting the namespace (its taps and bridges go with it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from g5k_testbed.lab import cgroups, netfab, users
from g5k_testbed.lab.errors import LabError
from g5k_testbed.lab.layout import DEFAULT_STATE_DIR, Layout
from g5k_testbed.lab.nodeinit import OVERLAID
from g5k_testbed.lab.plan import LabPlan, NodePlan
from g5k_testbed.lab.procs import ProcRef, children, run, wait_until
from g5k_testbed.lab.runtime import Runtime, write_json
from g5k_testbed.lab.sshconf import HOST_KEY_TYPES, ensure_host_keys

READY_TIMEOUT = 60
#: Machine folders a node does not see through: its base layer stands alone (root's home).
REPLACED = ("root",)
#: The environment a node runs outside deploy jobs, as its `/etc/grid5000/release` names it.
STANDARD_ENVIRONMENT = "debian12-x64-std"
STANDARD_RELEASE = "debian12-x64-std-2025010712"
RELEASE_FILE = Path("etc/grid5000/release")

APT_NOTICE = """#!/bin/sh
# apt asks this script which proxy to use for each host; it answers DIRECT after saying why downloads fail.
echo "vm5k-testbed: this node has no network access to the Debian archive: only the packages installed on" >&2
echo "vm5k-testbed: the machine that runs the testbed are available (apt-get install works for those)." >&2
echo DIRECT
"""
APT_CONF = 'Acquire::http::Proxy-Auto-Detect "/etc/vm5k-testbed/apt-no-network";\n'

SSHD_CONFIG = """# sshd of a vm5k-testbed node (written by the testbed; Kadeploy restores it)
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
PermitRootLogin prohibit-password
PubkeyAuthentication yes
# The testbed's own key stays authorized whatever a deployment installs for root.
AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2 /etc/ssh/vm5k-testbed-authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
X11Forwarding no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
PrintMotd no
MaxStartups 200:30:400
MaxSessions 200
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
PidFile /run/sshd.pid
"""

# Popen handles of the launchers this process started, so their exit is collected (no zombies here).
_launchers: dict[str, subprocess.Popen[bytes]] = {}
_launchers_lock = threading.Lock()


class NodeFiles:
    def __init__(self, layout: Layout, node: NodePlan) -> None:
        self.dir = layout.node_dir(node.uid)
        self.base = self.dir / "base"
        self.upper = self.dir / "upper"
        self.work = self.dir / "work"
        self.root = self.dir / "root"
        self.init_json = self.dir / "init.json"
        self.log = layout.logs_dir / f"node-{node.uid}.log"


def machine_id(layout: Layout, node: NodePlan) -> str:
    return hashlib.sha256(f"{layout.id}/{node.fqdn}".encode()).hexdigest()[:32]


def write_base_layer(layout: Layout, plan: LabPlan, node: NodePlan, testbed_pub: str) -> None:
    """(Re)write the node's identity layer; host keys come from the state folder's keys/ (stable)."""
    files = NodeFiles(layout, node)
    site = plan.sites[node.site]
    etc = files.base / "etc"
    for folder in (etc / "ssh", etc / "apt" / "apt.conf.d", etc / "vm5k-testbed"):
        folder.mkdir(parents=True, exist_ok=True)
    (etc / "hostname").write_text(node.fqdn + "\n")
    (etc / "hosts").write_text(
        "127.0.0.1\tlocalhost\n"
        f"{node.ip}\t{node.fqdn} {node.uid}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
    (etc / "resolv.conf").write_text(f"search {site.domain} grid5000.fr\nnameserver {site.prod_gateway}\n")
    (etc / "machine-id").write_text(machine_id(layout, node) + "\n")
    (etc / "ssh" / "sshd_config").write_text(SSHD_CONFIG + users.SSHD_MATCH)
    users.write_base(etc)
    authorized = etc / "ssh" / "vm5k-testbed-authorized_keys"
    authorized.write_text(testbed_pub.strip() + "\n")
    authorized.chmod(0o644)
    for kind, path in ensure_host_keys(layout, node).items():
        assert kind in HOST_KEY_TYPES
        target = etc / "ssh" / path.name
        shutil.copyfile(path, target)
        target.chmod(0o600)
        shutil.copyfile(f"{path}.pub", f"{target}.pub")
        Path(f"{target}.pub").chmod(0o644)
    notice = etc / "vm5k-testbed" / "apt-no-network"
    notice.write_text(APT_NOTICE)
    notice.chmod(0o755)
    (etc / "apt" / "apt.conf.d" / "00vm5k-testbed-offline").write_text(APT_CONF)
    # root's home is a fresh system's (skeleton files), never the machine's /root (its tools and secrets)
    root_home = files.base / "root"
    root_home.mkdir(parents=True, exist_ok=True)
    for name in (".bashrc", ".profile"):
        if os.path.exists(f"/etc/skel/{name}"):
            shutil.copyfile(f"/etc/skel/{name}", root_home / name)
    (etc / "grid5000").mkdir(exist_ok=True)
    (files.base / RELEASE_FILE).write_text(STANDARD_RELEASE + "\n")


def mirror_attributes(source: Path, target: Path) -> None:
    """Give a layer's top folder the machine folder's mode and owner (overlayfs shows the top layer's)."""
    info = source.stat()
    os.chown(target, info.st_uid, info.st_gid)
    target.chmod(stat.S_IMODE(info.st_mode))


def write_init_config(layout: Layout, node: NodePlan) -> NodeFiles:
    files = NodeFiles(layout, node)
    layers: dict[str, Any] = {}
    for entry in OVERLAID:
        if not os.path.isdir(f"/{entry}") or os.path.islink(f"/{entry}"):
            continue
        (files.upper / entry).mkdir(parents=True, exist_ok=True)
        (files.work / entry).mkdir(parents=True, exist_ok=True)
        # Only /etc and /root have a base layer: overlayfs refuses a lower layer inside another one
        # (/var), and the state folder may well be under /var. /root's base replaces the machine's.
        lower = [str(files.base / entry)] if (files.base / entry).is_dir() else []
        for layer in (files.upper / entry, *map(Path, lower)):
            mirror_attributes(Path(f"/{entry}"), layer)
        layers[entry] = {"lower": lower, "upper": str(files.upper / entry), "work": str(files.work / entry),
                         "replace": entry in REPLACED}
    files.root.mkdir(parents=True, exist_ok=True)
    write_json(files.init_json, {
        "hostname": node.fqdn,
        "cgroup": str(layout.node_cgroup(node.uid)),
        "root": str(files.root),
        "layers": layers,
        # The testbed's files (keys, every node's layers) are none of the nodes' business.
        "hide": [str(layout.state_dir), str(DEFAULT_STATE_DIR.parent)],
        # Grid'5000's NFS home: the same folder on every node
        "binds": [[str(users.home(layout)), f"/home/{users.USER}"]],
        "daemons": [["virtlogd", "-d"], ["libvirtd", "-d"], ["/usr/sbin/sshd"]],
    })
    return files


def launch(layout: Layout, runtime: Runtime, node: NodePlan) -> ProcRef:
    """Start the node's PID 1 (namespaces, root, daemons) and wait until its sshd accepts connections."""
    files = write_init_config(layout, node)
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    argv = ["nsenter", f"--net=/run/netns/{layout.node_netns(node.uid)}",
            "unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--kill-child",
            "--propagation", "private", "--",
            sys.executable, "-m", "g5k_testbed.lab.nodeinit", str(files.init_json)]
    read_end, write_end = os.pipe()
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "VTB_READY_FD": str(write_end),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with open(files.log, "ab") as log:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    pass_fds=(write_end,), env=env, cwd="/", start_new_session=True)
        finally:
            os.close(write_end)
    with _launchers_lock:
        _launchers[node.uid] = proc
    runtime.record(f"process:launcher:{node.uid}", "process", **ProcRef.of(proc.pid).to_dict())
    try:
        answer = _read_ready(read_end, READY_TIMEOUT)
    finally:
        os.close(read_end)
    init_pids = children(proc.pid)
    if answer != "ready" or not init_pids:
        tail = files.log.read_text(errors="replace").strip().splitlines()[-5:] if files.log.exists() else []
        raise LabError(f"{node.fqdn} did not start ({answer or 'no answer'}): {' | '.join(tail)}")
    init = ProcRef.of(init_pids[0])
    runtime.record(f"process:node:{node.uid}", "process", **init.to_dict())
    return init


def _read_ready(fd: int, timeout: float) -> str:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return "timeout"
    return os.read(fd, 64).decode(errors="replace").strip()


def init_ref(runtime: Runtime, node: NodePlan) -> ProcRef | None:
    record = runtime.resource(f"process:node:{node.uid}")
    return ProcRef.from_dict(record) if record else None


def running(runtime: Runtime, node: NodePlan) -> bool:
    ref = init_ref(runtime, node)
    return ref is not None and ref.alive()


def stop(layout: Layout, runtime: Runtime, plan: LabPlan, node: NodePlan, vlan: str) -> None:
    """Kill the node (every process of it), cut its cable, delete its network namespace."""
    for key in (f"process:node:{node.uid}", f"process:launcher:{node.uid}"):
        record = runtime.resource(key)
        if record:
            ProcRef.from_dict(record).signal(9)
    cgroup = layout.node_cgroup(node.uid)
    if not wait_until(lambda: not cgroups.procs(cgroup), 20):
        raise LabError(f"{node.fqdn}: processes still running after SIGKILL: {cgroups.procs(cgroup)}")
    with _launchers_lock:
        launcher = _launchers.pop(node.uid, None)
    if launcher is not None:
        launcher.wait(timeout=10)
    runtime.forget(f"process:node:{node.uid}")
    runtime.forget(f"process:launcher:{node.uid}")
    with contextlib.suppress(LabError):  # a vlan this testbed cannot reach: no cable of the node there
        netfab.cut_cable(netfab.attachment(layout, plan, node, vlan)[0], node)
    netfab.delete_netns(layout.node_netns(node.uid))


def wipe(layout: Layout, node: NodePlan) -> None:
    """Forget everything the node's users wrote (Kadeploy's fresh system)."""
    files = NodeFiles(layout, node)
    for folder in (files.upper, files.work):
        if folder.exists():
            run(["rm", "-rf", "--one-file-system", str(folder)])


def install_root_key(layout: Layout, node: NodePlan, authorized_keys: str | None) -> None:
    """Kadeploy's key for root, written into the (stopped) node's fresh layer."""
    if not authorized_keys:
        return
    ssh_dir = NodeFiles(layout, node).upper / "root" / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    ssh_dir.chmod(0o700)
    keys = ssh_dir / "authorized_keys"
    keys.write_text(authorized_keys.strip() + "\n")
    keys.chmod(0o600)


def write_release(layout: Layout, node: NodePlan, release: str | None) -> None:
    """The deployed environment's `/etc/grid5000/release`, in the (stopped, wiped) node's writable layer."""
    if not release:
        return
    target = NodeFiles(layout, node).upper / RELEASE_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(release + "\n")


def nsenter_argv(init: ProcRef, argv: list[str]) -> list[str]:
    """Run a command inside a node (all its namespaces), e.g. for the testbed's own checks."""
    return ["nsenter", "-t", str(init.pid), "-m", "-u", "-i", "-n", "-p", "--", *argv]
