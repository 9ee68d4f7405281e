"""The testbed as a whole: `up`, `down`, `status`, and what Kadeploy and KaVLAN do to its nodes.

`up` is idempotent: every step checks what exists and makes only what is missing, and records each
resource before creating it (`Runtime.record`), so that `down` after a crash in the middle of `up` still
finds everything. `down` only signals processes the testbed recorded (PID + start time) and only removes
namespaces, cgroups and folders whose names carry this testbed's id.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from g5k_testbed.lab import cgroups, netfab, node, siteservices, sshconf, users
from g5k_testbed.lab.errors import LabError, UsageError
from g5k_testbed.lab.layout import Layout
from g5k_testbed.lab.netfab import DEFAULT_VLAN
from g5k_testbed.lab.plan import LabPlan, NodePlan, SiteRequest, choose
from g5k_testbed.lab.procs import ProcRef, run, wait_until
from g5k_testbed.lab.runtime import Runtime, read_json, write_json

REQUIRED_TOOLS = ("ip", "nsenter", "unshare", "pivot_root", "mount", "nc", "dnsmasq", "sshd", "ssh-keygen",
                  "libvirtd", "virtlogd", "virsh", "qemu-system-x86_64", "qemu-img", "sysctl")
LAB_FORMAT = 1


@dataclass
class UpOptions:
    requests: list[SiteRequest] | None = None  # None: keep the plan of an existing testbed
    node_memory: int | None = None  # bytes per node; None = min(reference RAM, machine budget)
    api_args: list[str] = field(default_factory=list)
    build_image: bool = True
    start_api: bool = True
    progress: Callable[[str], None] = lambda message: None


def check_machine() -> None:
    """Fail early, with what to do, when this machine cannot run a testbed."""
    if os.geteuid() != 0:
        raise UsageError("the testbed needs root (namespaces, bridges, libvirt): run it as root")
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise LabError(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")
    if not cgroups.available():
        raise LabError("no memory cgroup controller (cgroup v1 at /sys/fs/cgroup/memory, or v2 with memory "
                       "in /sys/fs/cgroup/cgroup.controllers): nodes need memory limits")


def fix_kvm_device() -> None:
    """libvirt's QEMU user must open /dev/kvm, or every domain start re-probes QEMU for a minute."""
    if os.path.exists("/dev/kvm"):
        info = os.stat("/dev/kvm")
        with contextlib.suppress(KeyError, OSError):
            import grp
            kvm_gid = grp.getgrnam("kvm").gr_gid
            if info.st_gid != kvm_gid:
                os.chown("/dev/kvm", -1, kvm_gid)
            if info.st_mode & 0o660 != 0o660:
                os.chmod("/dev/kvm", 0o660)


class Lab:
    """One testbed, named by its state folder (as root; `vm5k-testbed up` does this)::

        lab = Lab(Layout("/var/lib/vm5k-testbed/default"))
        lab.up(UpOptions(requests=parse_site_spec("rennes:2", None)))
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.runtime = Runtime(layout)
        self._node_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ------------------------------------------------------------------ description
    def info(self) -> dict[str, Any] | None:
        info: dict[str, Any] | None = read_json(self.layout.lab_json)
        return info

    def plan(self) -> LabPlan:
        info = self.info()
        if not info:
            raise LabError(f"no testbed in {self.layout.state_dir} (run vm5k-testbed up)")
        return LabPlan.from_dict(info["plan"])

    def _node_lock(self, uid: str) -> threading.Lock:
        with self._locks_guard:
            return self._node_locks.setdefault(uid, threading.Lock())

    # ------------------------------------------------------------------ up
    def up(self, options: UpOptions) -> dict[str, Any]:
        say = options.progress
        layout = self.layout
        info = self.info()
        plan = self._resolve_plan(info, options.requests)  # bad input is reported before anything else
        check_machine()
        layout.state_dir.mkdir(parents=True, exist_ok=True)
        layout.state_dir.chmod(0o755)
        marker = layout.state_dir / ".vm5k-testbed"
        marker.write_text(f"vm5k-testbed state folder, testbed id {layout.id}\n")
        layout.logs_dir.mkdir(exist_ok=True)
        fix_kvm_device()
        image = self._ensure_image(options, say)
        accel = self._decide_accel(image, say)
        sshconf.ensure_testbed_key(layout)
        budget = cgroups.machine_budget()
        node_memory = options.node_memory or (info or {}).get("node_memory")
        info = {
            "format": LAB_FORMAT, "testbed_id": layout.id, "state_dir": str(layout.state_dir),
            "plan": plan.to_dict(), "sites": list(plan.sites), "image": image, "accel": accel,
            "node_memory": node_memory, "memory_budget": budget,
            "created": (info or {}).get("created", int(time.time())),
        }
        write_json(layout.lab_json, info)
        say(f"network: {', '.join(plan.sites)} (backbone, site routers, DNS/DHCP)")
        netfab.build_fabric(layout, self.runtime, plan)
        dns = self._dns_entries(plan)
        subnets = self.runtime.read().get("subnets", {})
        for site in plan.sites.values():
            siteservices.start(layout, self.runtime, site, dns, subnets.get(site.name, []))
        cgroups.ensure_testbed(layout, self.runtime)
        for item in plan.nodes:
            sshconf.ensure_host_keys(layout, item)
        sshconf.write_client_files(layout, plan)
        self._start_nodes(plan, say)
        if options.start_api:
            say("API server")
            from g5k_testbed.lab import server
            _, url = server.start(layout, self.runtime, list(plan.sites), options.api_args)
            info["api_base"] = url
            write_json(layout.lab_json, info)
        return self.status()

    def _resolve_plan(self, info: dict[str, Any] | None, requests: list[SiteRequest] | None) -> LabPlan:
        if info and requests is None:
            return LabPlan.from_dict(info["plan"])
        from g5k_testbed.reference import Reference
        wanted = requests or []
        try:
            reference = Reference.load([r.site for r in wanted])
        except ValueError as exc:
            raise UsageError(f"--site: {exc}") from exc
        plan = choose(reference, wanted)
        if info and plan.to_dict() != info["plan"]:
            current = ", ".join(f"{n['fqdn']}" for n in info["plan"]["nodes"])
            raise UsageError(f"a different testbed is already up in {self.layout.state_dir} ({current}): "
                             "run `vm5k-testbed down` first, or use another --state")
        return plan

    def _ensure_image(self, options: UpOptions, say: Callable[[str], None]) -> str | None:
        if not options.build_image:
            return (self.info() or {}).get("image")
        from g5k_testbed.lab.image import install
        return str(install.ensure_default_image(progress=say))

    def _decide_accel(self, image: str | None, say: Callable[[str], None]) -> dict[str, Any]:
        from g5k_testbed.lab import accel
        return accel.decide(Path(image) if image else None, progress=say)

    def _dns_entries(self, plan: LabPlan) -> list[tuple[str, str]]:
        """(address, name) of every node of the testbed's sites, production and KaVLAN names."""
        from g5k_testbed.reference import Reference
        reference = Reference.load(list(plan.sites))
        entries: list[tuple[str, str]] = []
        for site_name, data in reference.sites.items():
            site = plan.sites[site_name]
            for cluster, docs in data.nodes.items():
                for doc in docs:
                    try:
                        item = node_plan_for_dns(site_name, cluster, doc, site)
                    except UsageError:
                        continue
                    entries.extend((address, name) for name, address, _ in netfab.node_names(item))
        return entries

    def _start_nodes(self, plan: LabPlan, say: Callable[[str], None]) -> None:
        from g5k_testbed.lab import libvirtcaps
        pending = [item for item in plan.nodes if not node.running(self.runtime, item)]
        if not pending:
            return
        if not libvirtcaps.machine_cache().is_dir():
            first = pending.pop(0)
            say(f"node {first.fqdn} (and the one QEMU capability probe every node will share)")
            init = self.start_node(plan, first)
            libvirtcaps.probe_in_node(init, node.NodeFiles(self.layout, first).upper)
        errors: list[str] = []

        def start(item: NodePlan) -> None:
            try:
                self.start_node(plan, item)
            except Exception as exc:  # reported by the caller, whatever broke in this thread
                errors.append(f"{item.fqdn}: {exc}" if not isinstance(exc, LabError) else str(exc))

        threads = []
        for item in pending:
            say(f"node {item.fqdn}")
            thread = threading.Thread(target=start, args=(item,))
            thread.start()
            threads.append(thread)
            if len(threads) >= 4:
                threads.pop(0).join()
        for thread in threads:
            thread.join()
        if errors:
            raise LabError("; ".join(errors))

    # ------------------------------------------------------------------ one node
    def node_vlan(self, fqdn: str) -> str:
        return str(self.runtime.read()["nodes"].get(fqdn, {}).get("vlan", DEFAULT_VLAN))

    def _set_node(self, fqdn: str, **fields: Any) -> None:
        with self.runtime.edit() as data:
            data["nodes"].setdefault(fqdn, {}).update(fields)

    def start_node(self, plan: LabPlan, item: NodePlan) -> ProcRef:
        """Create the node from scratch (namespace, cable, cgroup, layers, PID 1) in its recorded vlan."""
        layout = self.layout
        info = self.info() or {}
        vlan = self.node_vlan(item.fqdn)
        self._set_node(item.fqdn, state="starting", vlan=vlan)
        netns = layout.node_netns(item.uid)
        if netfab.netns_exists(netns):
            plugged = self.runtime.read()["nodes"][item.fqdn].get("plugged", vlan)
            node.stop(layout, self.runtime, plan, item, plugged)
        netfab.ensure_netns(self.runtime, netns)
        netfab.plug_node(layout, plan, item, vlan)
        self._set_node(item.fqdn, plugged=vlan)
        budget = int(info.get("memory_budget") or cgroups.machine_budget())
        limit = int(info.get("node_memory") or min(item.ram or budget, budget))
        limit = cgroups.ensure(self.runtime, layout.node_cgroup(item.uid), limit)
        pub = layout.private_key.with_suffix(".pub").read_text()
        node.write_base_layer(layout, plan, item, pub)
        users.ensure_home(layout)
        users.write_tools(node.NodeFiles(layout, item).upper)
        from . import libvirtcaps
        libvirtcaps.seed_node(node.NodeFiles(layout, item).upper)
        init = node.launch(layout, self.runtime, item)
        self._set_node(item.fqdn, state="up", memory_limit=limit, started_at=int(time.time()))
        return init

    def deploy_node(self, fqdn: str, environment: str, authorized_keys: str | None,
                    release: str | None = None) -> bool:
        """Kadeploy on a node: stop everything, wipe users' writes, fresh daemons, root's key, and the
        environment's `/etc/grid5000/release` (none given: the standard environment's, from the base)."""
        plan = self.plan()
        item = plan.node(fqdn)
        if item is None:
            return False
        with self._node_lock(item.uid):
            self._set_node(fqdn, state="deploying", environment=environment, tainted=False)
            try:
                plugged = self.runtime.read()["nodes"].get(fqdn, {}).get("plugged", DEFAULT_VLAN)
                node.stop(self.layout, self.runtime, plan, item, plugged)
                node.wipe(self.layout, item)
                node.install_root_key(self.layout, item, authorized_keys)
                node.write_release(self.layout, item, release)
                self.start_node(plan, item)
                state = self.runtime.read()["nodes"].get(fqdn, {})
                wanted, plugged = state.get("vlan", DEFAULT_VLAN), state.get("plugged", DEFAULT_VLAN)
                if wanted != plugged:  # KaVLAN moved the node while it was being rebuilt
                    netfab.replug_node(self.layout, plan, item, plugged, wanted)
                    self._set_node(fqdn, plugged=wanted)
            except LabError as exc:
                self._set_node(fqdn, state="failed", error=str(exc))
                return False
            self._set_node(fqdn, deployed_at=int(time.time()))
            return True

    def reboot_to_standard(self, fqdn: str) -> bool:
        """The end of a job on Grid'5000: the node rebooted into the standard environment, no key for root."""
        return self.deploy_node(fqdn, node.STANDARD_ENVIRONMENT, None, None)

    def node_tainted(self, fqdn: str) -> bool:
        """Whether someone became root on the node since its last (re)deployment (`sudo-g5k`)."""
        if bool(self.runtime.read()["nodes"].get(fqdn, {}).get("tainted")):
            return True
        item = self.plan().node(fqdn)
        return item is not None and users.sudo_used(node.NodeFiles(self.layout, item).upper)

    def _in_node(self, fqdn: str, script: str) -> bool:
        """Run a shell script inside a running node (all its namespaces), as its root."""
        item = self.plan().node(fqdn)
        init = node.init_ref(self.runtime, item) if item is not None else None
        if init is None or not init.alive():
            return False
        done = run(node.nsenter_argv(init, ["/bin/sh", "-c", script]), check=False)
        return done.returncode == 0

    def open_user_access(self, fqdn: str, user: str) -> None:
        """The job's user may log in (the testbed user only: other logins have no account on the nodes)."""
        folder = os.path.dirname(users.OAR_USERS)
        self._in_node(fqdn, f"mkdir -p {folder} && echo {shlex.quote(user)} >> {users.OAR_USERS}")

    def close_user_access(self, fqdn: str) -> None:
        """The end of a job that leaves the node as it is: its user's access and processes are gone."""
        self._in_node(fqdn, f"rm -f {users.OAR_USERS}; pkill -KILL -u {users.USER} || true")

    def move_to_vlan(self, address: str, vlan: str) -> None:
        """KaVLAN: re-plug a node into `vlan` with its reference address there (primary interface only)."""
        plan = self.plan()
        item = plan.node(address)
        if item is None:
            return  # a node the testbed did not materialise, or a secondary interface: state only
        self._set_node(address, vlan=vlan)
        lock = self._node_lock(item.uid)
        if not lock.acquire(timeout=0.5):
            return  # a deployment is rebuilding the node: it plugs it into the recorded vlan
        try:
            plugged = self.runtime.read()["nodes"].get(address, {}).get("plugged", DEFAULT_VLAN)
            if plugged == vlan or not netfab.netns_exists(self.layout.node_netns(item.uid)):
                return
            netfab.replug_node(self.layout, plan, item, plugged, vlan)
            self._set_node(address, plugged=vlan)
        finally:
            lock.release()

    def subnets_changed(self, site: str, cidrs: list[str]) -> None:
        with self.runtime.edit() as data:
            data.setdefault("subnets", {})[site] = list(cidrs)
        if site in self.plan().sites:
            siteservices.set_subnets(self.layout, self.runtime, site, list(cidrs))

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        info = self.info()
        if not info:
            return {"state": "down", "state_dir": str(self.layout.state_dir), "testbed_id": self.layout.id,
                    "nodes": []}
        plan = LabPlan.from_dict(info["plan"])
        data = self.runtime.read()
        pids: dict[str, Any] = {}
        for key, record in data["resources"].items():
            if record.get("kind") == "process":
                ref = ProcRef.from_dict(record)
                pids[key.removeprefix("process:")] = {"pid": ref.pid, "alive": ref.alive()}
        nodes = []
        for item in plan.nodes:
            state = data["nodes"].get(item.fqdn, {})
            alive = pids.get(f"node:{item.uid}", {}).get("alive", False)
            shown = state.get("state", "down")
            if shown == "up" and not alive:
                shown = "dead"
            usage = cgroups.usage(self.layout.node_cgroup(item.uid))
            nodes.append({
                "name": item.fqdn, "ip": item.ip, "site": item.site, "cluster": item.cluster, "state": shown,
                "vlan": state.get("vlan", DEFAULT_VLAN), "netns": self.layout.node_netns(item.uid),
                "memory_limit": state.get("memory_limit"), "memory_usage": usage,
            })
        api = data["resources"].get("process:api", {})
        api_alive = pids.get("api", {}).get("alive", False)
        from g5k_testbed.lab.server import api_url
        base = api.get("url") or info.get("api_base")
        return {
            "state": "up" if api_alive and all(n["state"] == "up" for n in nodes) else "degraded",
            "api": api_url(base) if base else None,
            "api_base": base,
            "ssh_config": str(self.layout.ssh_config),
            "routing_ssh_config": str(self.layout.routing_ssh_config),
            "users": [{"login": users.USER, "uid": users.UID, "home": str(users.home(self.layout))}],
            "known_hosts": str(self.layout.known_hosts),
            "private_key": str(self.layout.private_key),
            "image": info.get("image"),
            "accel": (info.get("accel") or {}).get("accel"),
            "accel_reason": (info.get("accel") or {}).get("reason"),
            "state_dir": str(self.layout.state_dir),
            "testbed_id": self.layout.id,
            "sites": list(plan.sites),
            "subnets": data.get("subnets", {}),
            "namespaces": sorted(r["name"] for r in data["resources"].values() if r.get("kind") == "netns"),
            "pids": pids,
            "nodes": nodes,
        }

    # ------------------------------------------------------------------ down
    def down(self, progress: Callable[[str], None] = lambda message: None) -> list[str]:
        """Undo every recorded resource, newest first; returns what could not be removed (empty = clean)."""
        if os.geteuid() != 0:
            raise UsageError("the testbed needs root: run `down` as root")
        layout = self.layout
        if not layout.state_dir.exists():
            return []
        if not (layout.state_dir / ".vm5k-testbed").exists() and not layout.runtime_json.exists():
            raise UsageError(f"{layout.state_dir} is not a vm5k-testbed state folder")
        data = self.runtime.read()
        problems: list[str] = []
        records = [(key, data["resources"][key]) for key in reversed(data["order"])
                   if key in data["resources"]]
        # Processes first (the API server before the nodes it drives), then kernel objects, then files.
        for key, record in records:
            if record["kind"] == "process":
                progress(f"stop {key.removeprefix('process:')}")
                ref = ProcRef.from_dict(record)
                if key.startswith(("process:node:", "process:launcher:")):
                    ref.signal(signal.SIGKILL)  # PID 1 of a node: the kernel ends the whole node with it
                    wait_until(partial(_gone, ref), 10)
                else:
                    ref.stop()
                if ref.alive():
                    problems.append(f"{key} (pid {ref.pid}) still running")
        for _, record in records:
            if record["kind"] == "cgroup" and not cgroups.remove(Path(record["path"])):
                problems.append(f"cgroup {record['path']} could not be removed")
        cgroups.remove_shared_parent(layout)
        for _, record in records:
            if record["kind"] == "netns" and record["name"].startswith(layout.prefix):
                progress(f"delete namespace {record['name']}")
                netfab.delete_netns(record["name"])
                if netfab.netns_exists(record["name"]):
                    problems.append(f"namespace {record['name']} still exists")
        netns_dir = Path("/run/netns")
        for leftover in sorted(netns_dir.glob(f"{layout.prefix}*")) if netns_dir.exists() else []:
            netfab.delete_netns(leftover.name)  # every one is recorded first; this only makes sure
        self._remove_files()
        return problems

    def _remove_files(self) -> None:
        """Everything in the state folder but the keys (kept so clients keep trusting the nodes)."""
        for entry in self.layout.state_dir.iterdir():
            if entry.name == "keys":
                continue
            if entry.is_dir() and not entry.is_symlink():
                run(["rm", "-rf", "--one-file-system", str(entry)], check=False)
            else:
                entry.unlink(missing_ok=True)


def _gone(ref: ProcRef) -> bool:
    return not ref.alive()


def node_plan_for_dns(site: str, cluster: str, doc: dict[str, Any], site_plan: Any) -> NodePlan:
    from g5k_testbed.lab.plan import node_plan
    return node_plan(site, cluster, doc, site_plan)
