"""The libvirt domain of a VM, written in Python with ElementTree (never by string templates).

Why ElementTree: every value (a path, a kernel command line, a name) is escaped as XML data by construction,
so no id or path can inject an element. Why our own XML rather than virt-install: one process per VM less,
and every choice visible here:

- ``type='kvm'`` with ``<cpu mode='host-model'/>`` where the host's canary booted, else ``type='qemu'``
  (TCG) with a translation cache sized from the guest's memory (``<features><tcg><tb-cache>``, see
  `tb_cache_for`) instead of QEMU's default of 1 GiB per VM;
- memory in MiB, vCPUs, and a cpuset when one is given (``auto`` lets the kernel schedule the vCPUs);
- the disk (qcow2 overlay or copy) on virtio, the cloud-init seed as a read-only virtio disk (found by its
  ``cidata`` label; virtio needs no extra driver in small guests, unlike an IDE/SATA CD-ROM);
- one virtio NIC on the host's bridge with the VM's MAC, without option ROM (no iPXE: nothing boots from
  the network and it costs time under TCG);
- direct kernel boot (kernel, initrd, command line) when the image comes with a ``.boot.json``;
- the serial console logged to a file of the run's folder (its last lines explain a VM that stays silent);
- a virtio RNG (fast SSH host-key generation on first boot), no graphics, and no balloon: a balloon with
  free page reporting was tried for density, and a tiny guest's free memory, fragmented after its boot,
  was not given back (RSS unchanged after 40 s);
- vm5k metadata (run id and VM id) so that a domain tells which run made it.

>>> xml = domain_xml(DomainSpec(name="vm5k_r1_vm-1", vm_id="vm-1", run_id="r1", memory_mib=512, vcpus=1,
...                             disk="/tmp/vm5k/runs/r1/disks/vm-1.qcow2",
...                             seed="/tmp/vm5k/runs/r1/seeds/vm-1.iso",
...                             mac="00:16:3e:00:00:01", bridge="br0", console="/tmp/c.log", accel="tcg"))
>>> "<tb-cache unit=\\"MiB\\">128</tb-cache>" in xml, "type=\\"qemu\\"" in xml
(True, True)
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from vm5k.topology import parse_cpuset, parse_mac, validate_id

VM5K_NAMESPACE = "https://github.com/vm5k/vm5k/domain"
ET.register_namespace("vm5k", VM5K_NAMESPACE)


def domain_uuid(run_id: str, vm_id: str) -> str:
    """A stable UUID per (run, VM): redefining a VM keeps its identity in libvirt."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vm5k:{run_id}:{vm_id}"))


@dataclass(frozen=True)
class DomainSpec:
    """Everything the domain XML says about one VM on one host."""

    name: str
    vm_id: str
    run_id: str
    memory_mib: int
    vcpus: int
    disk: str
    seed: str | None
    mac: str
    bridge: str
    console: str
    accel: str = "kvm"  # kvm or tcg
    cpuset: str = "auto"
    disk_format: str = "qcow2"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    tb_cache_mib: int | None = None  # None: sized from the guest's memory (tb_cache_for)

    def __post_init__(self) -> None:
        validate_id(self.vm_id, "VM id")
        validate_id(self.run_id, "run id")
        parse_mac(self.mac)
        parse_cpuset(self.cpuset)
        if self.accel not in ("kvm", "tcg"):
            raise ValueError(f"accel must be kvm or tcg, not {self.accel!r}")
        if self.disk_format not in ("qcow2", "raw"):
            raise ValueError(f"disk format must be qcow2 or raw, not {self.disk_format!r}")
        for path in (self.disk, self.seed, self.console, self.kernel, self.initrd):
            if path is not None and (not path.startswith("/") or "\0" in path or "\n" in path):
                raise ValueError(f"domain paths must be absolute: {path!r}")
        if self.memory_mib < 1 or self.vcpus < 1:
            raise ValueError("memory and vcpus must be positive")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = text
    return element


def domain_element(spec: DomainSpec) -> ET.Element:
    """The ``<domain>`` element (see the module docstring)."""
    domain = ET.Element("domain", {"type": "kvm" if spec.accel == "kvm" else "qemu"})
    _sub(domain, "name", spec.name)
    _sub(domain, "uuid", domain_uuid(spec.run_id, spec.vm_id))
    _sub(domain, "title", spec.vm_id)
    _sub(domain, "description", f"vm5k run {spec.run_id}, VM {spec.vm_id}")
    metadata = _sub(domain, "metadata")
    ET.SubElement(metadata, f"{{{VM5K_NAMESPACE}}}vm", {"run": spec.run_id, "id": spec.vm_id})
    _sub(domain, "memory", str(spec.memory_mib), unit="MiB")
    _sub(domain, "currentMemory", str(spec.memory_mib), unit="MiB")
    vcpu_attrs = {"placement": "static"}
    if spec.cpuset != "auto":
        vcpu_attrs["cpuset"] = spec.cpuset
    _sub(domain, "vcpu", str(spec.vcpus), **vcpu_attrs)
    os_el = _sub(domain, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="q35")
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")
    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.accel == "tcg":
        tcg = _sub(features, "tcg")
        cache = spec.tb_cache_mib if spec.tb_cache_mib is not None else tb_cache_for(spec.memory_mib)
        _sub(tcg, "tb-cache", str(cache), unit="MiB")
    else:
        _sub(domain, "cpu", mode="host-model")
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    devices = _sub(domain, "devices")
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type=spec.disk_format, discard="unmap")
    _sub(disk, "source", file=spec.disk)
    _sub(disk, "target", dev="vda", bus="virtio")
    if spec.seed:
        seed = _sub(devices, "disk", type="file", device="disk")
        _sub(seed, "driver", name="qemu", type="raw")
        _sub(seed, "source", file=spec.seed)
        _sub(seed, "target", dev="vdb", bus="virtio")
        _sub(seed, "readonly")
    nic = _sub(devices, "interface", type="bridge")
    _sub(nic, "mac", address=spec.mac.lower())
    _sub(nic, "source", bridge=spec.bridge)
    _sub(nic, "model", type="virtio")
    _sub(nic, "rom", enabled="no")
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=spec.console, append="off")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="file")
    _sub(console, "source", path=spec.console, append="off")
    _sub(console, "target", type="serial", port="0")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="none")
    return domain


#: Bounds of the TCG translation cache vm5k chooses (MiB); see `tb_cache_for`.
TB_CACHE_MIN_MIB = 32
TB_CACHE_MAX_MIB = 512


def tb_cache_for(memory_mib: int) -> int:
    """The TCG translation cache (MiB) for a guest of ``memory_mib``: a quarter of it, within 32-512 MiB.

    Why: QEMU's default cache is 1 GiB per VM, and QEMU touches all of the cache it is given while a guest
    boots (so does the guest with its memory): a fixed size either starves big guests or costs small ones
    more than their own memory. A quarter of the guest's memory (QEMU's own rule before 5.0) grows with what
    the guest can run. The floor is measured: the tiny image's boot under TCG took 14.9 s with 8 MiB (the
    cache thrashes), 5.8 s with 16, 4.5 s with 32 and 4.2 s with 64, while each QEMU's RSS grew
    217 → 236 → 272 MiB (``benchmarks/vms.py --only density``, 96 MiB guests): 32 MiB keeps the boot within
    10 % of a big cache for 36 MiB less per VM than the former fixed 64 MiB.

    >>> tb_cache_for(96), tb_cache_for(192), tb_cache_for(1024), tb_cache_for(65536)
    (32, 48, 256, 512)
    """
    return max(TB_CACHE_MIN_MIB, min(TB_CACHE_MAX_MIB, memory_mib // 4))


def domain_xml(spec: DomainSpec) -> str:
    """The domain as an XML document (indented, UTF-8 text)."""
    element = domain_element(spec)
    ET.indent(element, space="  ")
    return ET.tostring(element, encoding="unicode") + "\n"
