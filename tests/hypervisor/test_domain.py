"""The domain XML: valid for libvirt's schema, every choice where it should be, hostile values as data."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vm5k.errors import UsageError
from vm5k.hypervisor.domain import DomainSpec, domain_uuid, domain_xml


def spec(**changes: object) -> DomainSpec:
    values: dict[str, object] = dict(
        name="vm5k_r1_vm-1", vm_id="vm-1", run_id="r1", memory_mib=512, vcpus=1,
        disk="/tmp/vm5k/runs/r1/disks/vm-1.qcow2", seed="/tmp/vm5k/runs/r1/seeds/vm-1.iso",
        mac="00:16:3E:00:00:01", bridge="br0", console="/tmp/vm5k/runs/r1/console/vm-1.log", accel="tcg")
    values.update(changes)
    return DomainSpec(**values)  # type: ignore[arg-type]


def validate(xml: str, tmp_path: Path) -> None:
    """libvirt's own schema check (virt-xml-validate needs xmllint, from libxml2-utils)."""
    if shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None:
        pytest.skip("virt-xml-validate and xmllint (libvirt-clients, libxml2-utils) are needed")
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    result = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", [
    {},
    {"accel": "kvm", "vcpus": 4, "cpuset": "0-3,^2", "memory_mib": 4096},
    {"kernel": "/c/vmlinux", "initrd": "/c/initrd.gz", "cmdline": "console=ttyS0 panic=-1 quiet"},
    {"seed": None, "disk_format": "raw"},
])
def test_domain_validates_against_libvirt_schema(variant: dict[str, object], tmp_path: Path) -> None:
    validate(domain_xml(spec(**variant)), tmp_path)


def test_tcg_domain_has_a_small_translation_cache_and_no_host_cpu() -> None:
    root = ET.fromstring(domain_xml(spec(accel="tcg", tb_cache_mib=64)))
    assert root.get("type") == "qemu"
    cache = root.find("features/tcg/tb-cache")
    assert cache is not None and cache.text == "64" and cache.get("unit") == "MiB"
    assert root.find("cpu") is None


@pytest.mark.parametrize(("memory", "cache"), [(96, "32"), (192, "48"), (1024, "256"), (8192, "512")])
def test_tcg_translation_cache_follows_the_guest_memory_unless_set(memory: int, cache: str) -> None:
    root = ET.fromstring(domain_xml(spec(accel="tcg", memory_mib=memory)))
    assert root.findtext("features/tcg/tb-cache") == cache
    fixed = ET.fromstring(domain_xml(spec(accel="tcg", memory_mib=memory, tb_cache_mib=40)))
    assert fixed.findtext("features/tcg/tb-cache") == "40"


def test_kvm_domain_uses_host_model_and_no_tcg_features() -> None:
    root = ET.fromstring(domain_xml(spec(accel="kvm")))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-model"  # type: ignore[union-attr]
    assert root.find("features/tcg") is None


def test_devices_memory_cpus_and_names() -> None:
    root = ET.fromstring(domain_xml(spec(memory_mib=768, vcpus=2, cpuset="1,3")))
    assert root.findtext("name") == "vm5k_r1_vm-1"
    assert root.findtext("uuid") == domain_uuid("r1", "vm-1")
    assert root.find("memory").text == "768" and root.find("memory").get("unit") == "MiB"  # type: ignore[union-attr]
    vcpu = root.find("vcpu")
    assert vcpu is not None and vcpu.text == "2" and vcpu.get("cpuset") == "1,3"
    disks = root.findall("devices/disk")
    assert [d.find("source").get("file") for d in disks] == [  # type: ignore[union-attr]
        "/tmp/vm5k/runs/r1/disks/vm-1.qcow2", "/tmp/vm5k/runs/r1/seeds/vm-1.iso"]
    assert disks[0].find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
    assert disks[1].find("readonly") is not None
    nic = root.find("devices/interface")
    assert nic is not None and nic.get("type") == "bridge"
    assert nic.find("source").get("bridge") == "br0"  # type: ignore[union-attr]
    assert nic.find("mac").get("address") == "00:16:3e:00:00:01"  # type: ignore[union-attr]
    assert nic.find("model").get("type") == "virtio"  # type: ignore[union-attr]
    serial = root.find("devices/serial")
    assert serial is not None and serial.get("type") == "file"
    assert serial.find("source").get("path") == "/tmp/vm5k/runs/r1/console/vm-1.log"  # type: ignore[union-attr]


def test_auto_cpuset_lets_libvirt_choose() -> None:
    assert ET.fromstring(domain_xml(spec(cpuset="auto"))).find("vcpu").get("cpuset") is None  # type: ignore[union-attr]


def test_direct_kernel_boot_or_disk_boot() -> None:
    direct = ET.fromstring(domain_xml(spec(kernel="/k", initrd="/i", cmdline="console=ttyS0")))
    assert (direct.findtext("os/kernel"), direct.findtext("os/initrd"), direct.findtext("os/cmdline")) == \
        ("/k", "/i", "console=ttyS0")
    assert direct.find("os/boot") is None
    disk = ET.fromstring(domain_xml(spec()))
    assert disk.find("os/kernel") is None and disk.find("os/boot").get("dev") == "hd"  # type: ignore[union-attr]


def test_uuid_is_stable_per_run_and_vm() -> None:
    assert domain_uuid("r1", "vm-1") == domain_uuid("r1", "vm-1")
    assert domain_uuid("r1", "vm-1") != domain_uuid("r2", "vm-1")


HOSTILE_TEXT = ("</cmdline><devices><disk type='block'><source dev='/dev/sda'/></disk></devices>"
                "&x; \"'$(reboot)")


def test_hostile_paths_and_cmdline_stay_data(tmp_path: Path) -> None:
    hostile_path = "/tmp/x'\"<disk>&amp;$(reboot)`id`/vm.qcow2"
    xml = domain_xml(spec(disk=hostile_path, kernel="/k", cmdline=HOSTILE_TEXT[:200].replace("\n", " ")))
    root = ET.fromstring(xml)
    assert root.find("devices/disk/source").get("file") == hostile_path  # type: ignore[union-attr]
    assert root.findtext("os/cmdline") == HOSTILE_TEXT[:200]
    assert len(root.findall("devices/disk")) == 2  # no injected disk
    validate(xml, tmp_path)


@pytest.mark.parametrize("field,value", [
    ("vm_id", "vm-1;reboot"), ("vm_id", "../x"), ("run_id", "r 1"), ("mac", "00:16:3e:00:00:01\n"),
    ("cpuset", "0; reboot"), ("disk", "relative/disk.qcow2"), ("accel", "xen"),
])
def test_bad_values_are_refused(field: str, value: str) -> None:
    with pytest.raises((UsageError, ValueError)):
        spec(**{field: value})
