"""The original vm5k's workflow as data: topology → reservation → hosts → network → vms → program.

Each `Step` takes the run's topology and returns it richer; `RunContext.save` writes it (topology.json, the
lists, the ssh_config) after every step, and inside long steps whenever the platform reports a change worth
keeping (jobs submitted, deployments started), so an interruption always leaves a true record. Steps are
re-entrant: a resumed run calls the steps it has not finished again, and each skips what is already done.

The context joins the two halves that never know each other: the platform (where hosts come from:
``vm5k.platforms``) and the hypervisor engine (libvirt on those hosts: ``vm5k.hypervisor``). Platform
steps block on HTTP; hypervisor steps are coroutines on one event loop that lives as long as the run, so
that their SSH connections are opened once and reused by every step.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vm5k import outdir, ownership, render
from vm5k.addresses import POOL_KEY, SERVICE_KEY, AddressPool, assign
from vm5k.errors import DeploymentError, Vm5kError
from vm5k.hypervisor import RunSettings, VmNetwork, deploy_vms, setup_hosts, setup_service
from vm5k.keys import PRIVATE_KEY
from vm5k.loop import LoopThread
from vm5k.placement import NotEnoughCapacity, PlacementPolicy, evacuate
from vm5k.platforms import Platform
from vm5k.program import run_program
from vm5k.progress import Reporter
from vm5k.remote import SshRunner, SshSettings
from vm5k.request import Request
from vm5k.runstate import RunRecord
from vm5k.topology import HOST_KO, HOST_OK, Topology

log = logging.getLogger(__name__)

KNOWN_HOSTS = "known_hosts"
#: written by their own steps: the state first of all, the final XML once the VMs are deployed
SAVED_APART = (outdir.STATE_FILE, outdir.FINAL_XML)


@dataclass
class RunContext:
    """Everything the steps of one run share (see the module docstring)."""

    outdir: Path
    record: RunRecord
    topology: Topology
    ssh: SshSettings
    reporter: Reporter
    loop: LoopThread
    lock: ownership.Lock  # the run's outdir, held from the start of the operation to `close`
    request: Request | None = None  # None on --resume and --destroy: the record says everything
    platform: Platform = field(init=False)
    placement: PlacementPolicy = field(default_factory=PlacementPolicy)
    _runner: SshRunner | None = None

    # -- state ---------------------------------------------------------------------------------------

    def save(self, topology: Topology) -> Topology:
        """Record `topology` as the run's truth: topology.json first, then the lists derived from it.

        Every file is replaced atomically, so a full disk or a vanished outdir leaves the last good state
        in place; it stops the run with a `Vm5kError` that says so (also when the platform saves from
        inside a step through its checkpoint callback).
        """
        self.record.save(topology)
        self.topology = topology
        try:
            outdir.write_state(self.outdir, topology)
            outdir.write_outputs(self.outdir, topology, ssh=self.ssh_config_settings(),
                                 names=[name for name in outdir.OUTPUTS if name not in SAVED_APART])
        except OSError as error:
            raise Vm5kError(f"cannot write the run's state in {self.outdir}: {error.strerror or error} (the "
                            "last state saved is kept: free space, then vm5k --resume)") from None
        return topology

    def ssh_config_settings(self) -> render.SshConfigSettings:
        """How the outdir's ssh_config reaches hosts and VMs: the run's key, known_hosts, the platform's
        own ssh_config included (it says how to reach the hosts: the testbed's, an access gateway's)."""
        key = str((self.outdir / PRIVATE_KEY).resolve())
        host_options = {"*": {"User": "root", "IdentityFile": key}}
        known_hosts = str((self.outdir / KNOWN_HOSTS).resolve())
        return render.SshConfigSettings(identity_file=key, known_hosts_file=known_hosts,
                                        host_options=host_options,
                                        include=[self.record.ssh_config] if self.record.ssh_config else [])

    # -- the hypervisor half ---------------------------------------------------------------------------

    def run_async(self, make: Callable[[SshRunner], Coroutine[Any, Any, Topology]]) -> Topology:
        """Run a hypervisor coroutine on the run's event loop, with the run's SSH connections."""
        async def with_runner() -> Topology:
            if self._runner is None:
                self._runner = SshRunner(self.ssh)
                await self._runner.__aenter__()
            return await make(self._runner)

        return self.loop.run(with_runner())

    def check_stop(self) -> None:
        """Raise `vm5k.ownership.StopRequested` when a destroy has asked this run to stop."""
        self.lock.check_stop()

    def close(self) -> None:
        """Close the SSH connections and let go of the run (at the end of the operation, also after a
        failure or an interruption)."""
        try:
            if self._runner is not None:
                runner, self._runner = self._runner, None
                check, self.loop.check = self.loop.check, None  # closing is never stopped halfway
                try:
                    self.loop.run(runner.__aexit__(None, None, None))
                except (Exception, KeyboardInterrupt) as error:  # closing must not hide why we stopped
                    log.debug("closing SSH connections: %s", error)
                finally:
                    self.loop.check = check
        finally:
            self.lock.release()

    def hypervisor_settings(self, topology: Topology) -> RunSettings:
        """The hypervisor's settings, with the VM network as the platform described it; recorded."""
        settings = RunSettings.from_dict(self.record.hypervisor)
        network, service_node = vm_network(topology)
        settings = replace(settings, network=network, service_node=service_node)
        self.record.hypervisor = settings.to_dict()
        return settings


def vm_network(topology: Topology) -> tuple[VmNetwork, str | None]:
    """The VMs' network from the platform's address pool, and the host that should serve it.

    A range whose pairs vm5k must serve (a KaVLAN, the hosts platform) means ``kavlan`` mode; otherwise the
    platform's DHCP knows the pairs (Grid'5000 subnets) and vm5k serves names only. The run's DNS/DHCP
    address (``meta["service_address"]``) lives in one range: the service node is an OK host of that range's
    sites, so the address is routed where it is added.
    """
    pool = AddressPool.from_dict(topology.meta.get(POOL_KEY))
    service = topology.meta.get(SERVICE_KEY)
    ranges = list(pool.ranges)
    chosen = next((r for r in ranges if service and r.holds(service)), ranges[0] if ranges else None)
    if chosen is None:
        return VmNetwork(mode="subnet", service_address=None), None
    mode = "kavlan" if chosen.dhcp == "vm5k" else "subnet"
    network = VmNetwork(mode=mode, cidr=chosen.network, gateway=chosen.gateway, service_address=service)
    candidates = [host for site in topology.sites if site.id in chosen.sites
                  for cluster in site.clusters for host in cluster.hosts if host.state == HOST_OK]
    best = max(candidates, key=lambda h: h.capacity.hw_threads if h.capacity else 0, default=None)
    return network, best.id if best else None


def evacuate_ko_hosts(ctx: RunContext, topology: Topology, why: str) -> Topology:
    """Place the VMs of hosts that failed on the hosts left (and give them addresses); a clear error when
    they do not fit. The fleet is never silently smaller than asked."""
    ko = [host for host in topology.hosts() if host.state == HOST_KO and host.vms]
    if not ko:
        return topology
    topo = topology.copy()
    failed = [host for host in topo.hosts() if host.state == HOST_KO]
    displaced = sum(len(host.vms) for host in failed)
    try:
        for warning in evacuate(topo, failed, ctx.placement):
            log.warning("%s", warning)
    except NotEnoughCapacity as error:
        ctx.save(topo)
        names = ", ".join(host.id for host in ko)
        raise DeploymentError(f"{len(ko)} hosts failed {why} ({names}); their {displaced} VMs do not "
                              f"fit on the hosts left: {error}") from None
    assign(topo, AddressPool.from_dict(topo.meta.get(POOL_KEY)))
    log.warning("%d hosts failed %s (%s): their %d VMs now run on the other hosts", len(ko), why,
                ", ".join(host.id for host in ko), displaced)
    return topo


# -- the steps ---------------------------------------------------------------------------------------------


def plan_step(ctx: RunContext) -> Topology:
    topo = ctx.platform.plan(ctx.topology, ctx.request)
    outdir.write_atomic(ctx.outdir / outdir.INITIAL_XML, topo.to_xml())
    return topo


def reservation_step(ctx: RunContext) -> Topology:
    topo = ctx.save(ctx.platform.reserve(ctx.topology))
    return ctx.platform.wait_running(topo)


def hosts_step(ctx: RunContext) -> Topology:
    topo = ctx.save(ctx.platform.resources(ctx.topology))
    topo = ctx.save(ctx.platform.deploy_hosts(topo))
    settings = ctx.hypervisor_settings(topo)
    topo = ctx.run_async(lambda ssh: setup_hosts(topo, ssh, settings, ctx.reporter.hypervisor))
    return evacuate_ko_hosts(ctx, topo, "their set-up")


def network_step(ctx: RunContext) -> Topology:
    settings = ctx.hypervisor_settings(ctx.topology)
    topo = ctx.topology
    return ctx.run_async(lambda ssh: setup_service(topo, ssh, settings, ctx.reporter.hypervisor))


def vms_step(ctx: RunContext) -> Topology:
    # a resumed run: the VMs of a host that died in an earlier attempt go to the hosts that are OK
    topo = evacuate_ko_hosts(ctx, ctx.topology, "earlier in this run")
    if topo is not ctx.topology:
        ctx.save(topo)
    settings = ctx.hypervisor_settings(topo)
    topo = ctx.run_async(lambda ssh: deploy_vms(topo, ssh, settings, ctx.reporter.hypervisor))
    outdir.write_atomic(ctx.outdir / outdir.FINAL_XML, topo.to_xml())
    if ctx.record.plot:
        from vm5k.plot import write_pictures  # matplotlib: only when a plot is asked for

        for path in write_pictures(topo, ctx.outdir):
            log.info("plot written to %s", path)
    return topo


def program_step(ctx: RunContext) -> Topology:
    if ctx.record.program:
        status = run_program(ctx.record.program, outdir=ctx.outdir, run_id=ctx.record.run_id,
                             key_path=ctx.outdir / PRIVATE_KEY, start_dir=ctx.record.start_dir)
        ctx.topology.meta["program_status"] = status
    return ctx.topology


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    run: Callable[[RunContext], Topology]


STEPS = (
    Step("topology", "choose the hosts and place the VMs", plan_step),
    Step("reservation", "reserve the hosts and wait for the start", reservation_step),
    Step("hosts", "deploy and configure the hosts, distribute the VM image", hosts_step),
    Step("network", "serve the VMs' names (and addresses) from the service node", network_step),
    Step("vms", "create and start the VMs, wait until they answer SSH", vms_step),
    Step("program", "run the program", program_step),
)


def identity_files(outdir_path: Path) -> list[str]:
    """The keys vm5k offers to hosts: the run's, then the user's own usual keys (hosts kept with
    --nodeploy, or given with --hosts, trust those); the SSH config's IdentityFile entries come after
    (the testbed's key, a gateway's)."""
    home = Path(os.path.expanduser("~")) / ".ssh"
    own = [str(home / name) for name in ("id_ed25519", "id_ecdsa", "id_rsa") if (home / name).is_file()]
    return list(dict.fromkeys([str((outdir_path / PRIVATE_KEY).resolve()), *own]))
