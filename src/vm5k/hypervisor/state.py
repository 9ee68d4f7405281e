"""How the hypervisor steps record what they learn in the topology (the one source of truth).

- ``topology.meta["hypervisor"]``: run-level facts: the images (source → sha256, format, paths on hosts,
  direct-boot files), the service node and the DNS server address, hosts a destroy could not clean;
- ``host.extra``: ``accel`` (kvm/tcg) and ``accel_reason``, ``nproc``, ``address``, ``prefixlen``, ``bridge``,
  ``provisioned`` (the run made its folders there: destroy visits it);
- ``vm.extra``: ``domain`` (libvirt name), ``stage`` (the last readiness stage reached), ``attempts``,
  ``boot_seconds`` (start to key login);
- ``extra["times"]`` of hosts and VMs: when their phases began and ended, epoch seconds (set-up, image copy;
  created, started, answered), owned by `vm5k.timeline` (its event names, its rows, its picture);
- states: hosts ``OK``/``KO``, VMs ``OK``/``KO``, each KO with a one-line ``reason``.

>>> from vm5k.topology import Host
>>> host = Host("node-1")
>>> mark_host_ko(host, "unreachable:\\nconnection refused")
>>> host.state, host.reason
('KO', 'unreachable: connection refused')
"""

from __future__ import annotations

from typing import Any

from vm5k.topology import HOST_KO, VM, VM_KO, Host, Topology, one_line

META_KEY = "hypervisor"
REASON_LIMIT = 1500


def short(text: str, limit: int = REASON_LIMIT) -> str:
    """One line, at most `limit` characters (reasons are read in tables and logs)."""
    line = one_line(text)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def meta(topo: Topology) -> dict[str, Any]:
    """The hypervisor's part of the topology's metadata (created when missing)."""
    part: dict[str, Any] = topo.meta.setdefault(META_KEY, {})
    return part


def mark_host_ko(host: Host, reason: str) -> None:
    host.state = HOST_KO
    host.reason = short(reason) or "failed"


def mark_vm_ko(vm: VM, reason: str) -> None:
    vm.state = VM_KO
    vm.reason = short(reason) or "failed"


def ko_vms(topo: Topology) -> list[VM]:
    """The VMs that are KO (the fleet is never silently smaller than asked: this is the list to report)."""
    return [vm for vm in topo.vms() if vm.state == VM_KO]
