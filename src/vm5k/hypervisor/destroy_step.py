"""Destroy one run on its hosts: its domains, disks, seeds, consoles, dnsmasq, resolver lines and folder.

Why by run and not by host: the reservation (and other runs' VMs on the same hosts) must survive. Only
domains named with this run's prefix and the run's own folder are removed; the image cache, the bridge and
the accelerator memo are host-level and shared by runs (a redeployment of the host resets them). The
reservation is the platform's business, never touched here.

Best effort and re-entrant: an unreachable host is reported (``meta["hypervisor"]["destroy_failed"]``) and a
second destroy finishes the job.

>>> # topo = await destroy_run(topo, ssh, settings); leftovers = meta(topo).get("destroy_failed")
"""

from __future__ import annotations

import logging

from vm5k.hypervisor import dnsmasq, lifecycle, migration
from vm5k.hypervisor.runtime import provisioned
from vm5k.hypervisor.settings import RunSettings, StepCounter, no_progress
from vm5k.hypervisor.state import meta, short
from vm5k.remote import Runner
from vm5k.topology import HOST_OK, Topology

log = logging.getLogger(__name__)

VM_DESTROYED = "destroyed"


async def destroy_run(topo: Topology, runner: Runner, settings: RunSettings,
                      progress: StepCounter = no_progress) -> Topology:
    """Remove everything of the run from every host of the topology (see the module docstring)."""
    layout = settings.layout
    # Hosts the run never reached hold nothing of it (e.g. unreachable from the start).
    hosts = [host.id for host in topo.hosts() if provisioned(host) or host.state == HOST_OK]
    state = meta(topo)
    failed: dict[str, str] = {}
    progress("destroy", 0, 3, f"{len(hosts)} hosts")
    service = state.get("service_node")
    if service in hosts:
        stopped = (await runner.run([service], dnsmasq.stop_command(layout), timeout=60))[0]
        if not stopped.ok:
            failed[service] = f"dnsmasq: {stopped.describe()}"
    progress("destroy", 1, 3, "resolvers")
    for result in (await runner.run(hosts, dnsmasq.resolver_remove_command(layout), timeout=60)).ko:
        failed.setdefault(result.host, f"resolver: {result.describe()}")
    # the run's migration key leaves root's authorized_keys (on --hosts they are the user's machines)
    for result in (await runner.run(hosts, migration.uninstall_command(settings.run_id), timeout=60)).ko:
        failed.setdefault(result.host, f"migration key: {result.describe()}")
    progress("destroy", 2, 3, "domains and files")
    removed = await runner.run(hosts, lifecycle.destroy_run_command(layout), timeout=600)
    for result in removed.ko:
        failed[result.host] = f"domains/files: {result.describe()}"
    for result in removed.ok:
        log.debug("%s: %s", result.host, " | ".join(result.stdout.splitlines()))
    gone = set(removed.ok_hosts) - set(failed)
    for vm in topo.vms():
        if vm.host in gone:
            vm.state, vm.reason = VM_DESTROYED, None
    if failed:
        state["destroy_failed"] = {host: short(why, 300) for host, why in failed.items()}
        log.warning("destroy left things on %d hosts: %s", len(failed),
                    "; ".join(f"{host}: {why}" for host, why in failed.items()))
    else:
        state.pop("destroy_failed", None)
        state.pop("dns_server", None)
    progress("destroy", 3, 3, f"{len(gone)} of {len(hosts)} hosts clean")
    return topo


def destroy_leftovers(topo: Topology) -> dict[str, str]:
    """Host → what the last `destroy_run` could not remove there (empty when every host is clean)."""
    return dict(meta(topo).get("destroy_failed") or {})
