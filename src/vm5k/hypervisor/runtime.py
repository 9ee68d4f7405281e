"""What the hosts step learns about each host and the later steps use: one typed record, one owner.

The accelerator chosen (KVM or TCG, and why), the processors and the kernel's boot id, the address and
prefix of the host's main interface and the bridge the VMs join are read once, when the host is set up
(`record`), and kept in the topology with the host (``host.extra``, so that ``--resume`` and the other
operations find them); every reader gets them from `HostRuntime.of` instead of knowing the keys.

>>> from vm5k.topology import Host
>>> host = Host("node-1")
>>> HostRuntime(accel="kvm", accel_reason="canary booted", nproc=8, address="172.16.0.5", prefixlen=20,
...             bridge="br0").record(host)
>>> HostRuntime.of(host).nproc, HostRuntime.of(Host("node-2")).accel
(8, 'tcg')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vm5k.topology import Host

#: set once a host holds something of the run (its folders): destroy visits it even if it failed later
PROVISIONED = "provisioned"


@dataclass(frozen=True)
class HostRuntime:
    """A set-up host's facts as the hypervisor steps use them (see the module docstring)."""

    accel: str = "tcg"
    accel_reason: str = ""
    nproc: int = 0  # 0: not known (the host was not set up by this run)
    address: str = ""
    prefixlen: int = 0
    bridge: str = ""
    boot_id: str = ""  # the host's kernel: hosts on one kernel share their processors (`waves`)

    @classmethod
    def of(cls, host: Host) -> HostRuntime:
        extra, default = host.extra, cls()
        return cls(accel=str(extra.get("accel") or default.accel),
                   accel_reason=str(extra.get("accel_reason") or ""),
                   nproc=int(extra.get("nproc") or 0), address=str(extra.get("address") or ""),
                   prefixlen=int(extra.get("prefixlen") or 0), bridge=str(extra.get("bridge") or ""),
                   boot_id=str(extra.get("boot_id") or ""))

    def record(self, host: Host) -> None:
        host.extra.update(asdict(self))


def mark_provisioned(host: Host) -> None:
    host.extra[PROVISIONED] = True


def provisioned(host: Host) -> bool:
    return bool(host.extra.get(PROVISIONED))
