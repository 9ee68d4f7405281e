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
    # Under KVM only: the processor a guest's CPU (libvirt's host-model) is made from, which a live
    # migration's destination must offer (`vm5k.migrate`). Under TCG the guest's CPU is QEMU's own
    # model, the same on every host, and the record stays small.
    cpu_model: str = ""
    cpu_flags: str = ""  # sorted, space-separated, as /proc/cpuinfo names them

    @classmethod
    def of(cls, host: Host) -> HostRuntime:
        extra, default = host.extra, cls()
        return cls(accel=str(extra.get("accel") or default.accel),
                   accel_reason=str(extra.get("accel_reason") or ""),
                   nproc=int(extra.get("nproc") or 0), address=str(extra.get("address") or ""),
                   prefixlen=int(extra.get("prefixlen") or 0), bridge=str(extra.get("bridge") or ""),
                   boot_id=str(extra.get("boot_id") or ""), cpu_model=str(extra.get("cpu_model") or ""),
                   cpu_flags=str(extra.get("cpu_flags") or ""))

    def record(self, host: Host) -> None:
        host.extra.update(asdict(self))

    def missing_cpu_flags(self, dest: HostRuntime) -> list[str]:
        """The processor features a KVM guest of this host has that `dest` lacks ([] when either is not
        known: libvirt then checks by itself when the migration starts).

        >>> a = HostRuntime(accel="kvm", cpu_flags="avx avx2 avx512f sse4_2")
        >>> a.missing_cpu_flags(HostRuntime(accel="kvm", cpu_flags="avx avx2 sse4_2"))
        ['avx512f']
        """
        if not self.cpu_flags or not dest.cpu_flags:
            return []
        return sorted(set(self.cpu_flags.split()) - set(dest.cpu_flags.split()))


def mark_provisioned(host: Host) -> None:
    host.extra[PROVISIONED] = True


def provisioned(host: Host) -> bool:
    return bool(host.extra.get(PROVISIONED))
