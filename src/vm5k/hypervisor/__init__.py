"""The hypervisor engine: reserved hosts in, a running fleet of VMs that answer SSH out.

It knows libvirt, QEMU, cloud-init and dnsmasq, and nothing of any platform: it reads the topology (hosts,
VMs with their IP/MAC pairs), talks to hosts only through the SSH layer (`vm5k.remote`), and writes what it
learns back into the topology (`vm5k.hypervisor.state`). The workflow calls four re-entrant steps, in order,
saving the topology after each one:

1. ``await setup_hosts(topo, ssh, settings, progress)``: packages, libvirt, ``/dev/kvm``, the bridge, the
   accelerator, the images in every host's cache → hosts ``OK``/``KO`` (`vm5k.hypervisor.hosts_step`);
2. ``await setup_service(topo, ssh, settings, progress)``: once the VMs have IP/MAC pairs, the run's dnsmasq
   on the service node (DNS, and DHCP in KaVLAN mode) and every host's resolver pointed at it
   (`vm5k.hypervisor.service_step`);
3. ``await deploy_vms(topo, ssh, settings, progress)``: disks, seeds, domains, waves, readiness, recreate →
   every VM ``OK`` or ``KO`` with a reason (`vm5k.hypervisor.vms_step`); ``ko_vms(topo)`` lists the KO ones;
4. ``await destroy_run(topo, ssh, settings, progress)``: the run's VMs, files and dnsmasq, on every host
   (`vm5k.hypervisor.destroy_step`).

``settings`` is a `RunSettings` (run id, the run's key pair, the VM network and its mode, the service node,
packages, disk location...), ``ssh`` an `vm5k.remote.SshRunner`, ``progress`` a callable
``(step, done, total, message)``. Where things live on hosts: `vm5k.hypervisor.layout`.

>>> import asyncio
>>> from vm5k.remote import SshRunner, SshSettings
>>> async def deploy(topo, ssh_settings, settings):
...     async with SshRunner(ssh_settings) as ssh:
...         topo = await setup_hosts(topo, ssh, settings)
...         topo = await setup_service(topo, ssh, settings)
...         topo = await deploy_vms(topo, ssh, settings)
...     return topo, ko_vms(topo)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vm5k.hypervisor.destroy_step import destroy_leftovers, destroy_run
    from vm5k.hypervisor.hosts_step import setup_hosts
    from vm5k.hypervisor.layout import HostLayout
    from vm5k.hypervisor.service_step import setup_service
    from vm5k.hypervisor.settings import RunSettings, StepCounter, VmNetwork
    from vm5k.hypervisor.state import ko_vms
    from vm5k.hypervisor.vms_step import deploy_vms

#: name → its module, imported on first use: the pure parts of this package (the package-name grammar of
#: `provision`, the `layout`) are read by the command line, which must not pull in the SSH layer to say
#: ``--help`` or refuse bad input
_LAZY = {"destroy_leftovers": "destroy_step", "destroy_run": "destroy_step", "setup_hosts": "hosts_step",
         "HostLayout": "layout", "setup_service": "service_step", "RunSettings": "settings",
         "StepCounter": "settings", "VmNetwork": "settings", "ko_vms": "state", "deploy_vms": "vms_step"}

__all__ = [
    "HostLayout",
    "RunSettings",
    "StepCounter",
    "VmNetwork",
    "deploy_vms",
    "destroy_leftovers",
    "destroy_run",
    "ko_vms",
    "setup_hosts",
    "setup_service",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vm5k.hypervisor' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"vm5k.hypervisor.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
