"""Images: boot.json parsing, content-addressed cache, copies only where missing (local runner: two labels,
one machine, so the scripts run for real)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from vm5k.errors import UsageError
from vm5k.hypervisor.images import distribute, image_format, load_image, parse_boot_json
from vm5k.hypervisor.layout import HostLayout
from vm5k.remote import LocalRunner


def test_boot_json_paths_are_relative_to_the_image_folder() -> None:
    spec = parse_boot_json(json.dumps({"kernel": "kernel/vmlinux", "initrd": "initrd.gz",
                                       "cmdline": "console=ttyS0 quiet"}), Path("/grid5000/virt-images"))
    assert spec.kernel == Path("/grid5000/virt-images/kernel/vmlinux")
    assert spec.initrd == Path("/grid5000/virt-images/initrd.gz") and spec.cmdline == "console=ttyS0 quiet"


@pytest.mark.parametrize("data", [
    {"kernel": "/etc/shadow"}, {"kernel": "../../etc/shadow"}, {"kernel": "a/../../b"}, {"initrd": "x"},
    {"kernel": "k", "cmdline": "quiet\ninit=/bin/sh"}, {"kernel": 3}, [],
])
def test_bad_boot_json_is_refused(data: object) -> None:
    with pytest.raises(UsageError):
        parse_boot_json(json.dumps(data), Path("/images"))


def test_load_image_reads_digests_format_and_boot_files(tmp_path: Path) -> None:
    image = tmp_path / "tiny.qcow2"
    image.write_bytes(b"QFI\xfb" + b"\0" * 100)
    (tmp_path / "vmlinux").write_bytes(b"kernel")
    boot = {"kernel": "vmlinux", "cmdline": "console=ttyS0"}
    (tmp_path / "tiny.qcow2.boot.json").write_text(json.dumps(boot))
    loaded = load_image(str(image))
    assert loaded.fmt == "qcow2" and loaded.disk.sha256 == hashlib.sha256(image.read_bytes()).hexdigest()
    assert loaded.kernel is not None and loaded.kernel.sha256 == hashlib.sha256(b"kernel").hexdigest()
    assert loaded.initrd is None and loaded.cmdline == "console=ttyS0"
    raw = tmp_path / "disk.img"
    raw.write_bytes(b"\0" * 10)
    assert image_format(raw) == "raw"
    with pytest.raises(UsageError):
        load_image(str(tmp_path / "absent.qcow2"))


def test_distribute_copies_once_then_finds_the_cache(tmp_path: Path) -> None:
    source = tmp_path / "shared" / "image.qcow2"
    source.parent.mkdir()
    source.write_bytes(b"QFI\xfb" + b"x" * 4096)
    layout = HostLayout("r1", str(tmp_path / "vm5k"))
    disk = load_image(str(source)).disk
    cached = Path(disk.remote(layout))

    async def go(transfer: str = "auto"):
        async with LocalRunner() as local:
            return await distribute(local, ["h1"], [disk], layout, transfer=transfer)

    first = asyncio.run(go())
    assert first.shared == {"image.qcow2": ["h1"]} and not first.failed
    assert cached.read_bytes() == source.read_bytes()
    assert Path(f"{cached}.sha256").read_text().strip() == disk.sha256
    assert cached.stat().st_mode & 0o777 == 0o644 and cached.parent.stat().st_mode & 0o777 == 0o755
    second = asyncio.run(go())
    assert second.had == {"image.qcow2": ["h1"]} and not second.shared and not second.sent

    cached.write_bytes(b"truncated")  # a damaged copy is sent again, through the frontend this time
    third = asyncio.run(go("chain"))
    assert third.sent == {"image.qcow2": ["h1"]} and cached.read_bytes() == source.read_bytes()


def test_the_same_bytes_under_two_names_are_both_cached(tmp_path: Path) -> None:
    """Two backing files with one content (a copy of the default image under another name) are two cache
    entries: the VMs of each find theirs (one of them used to be missing, and its VMs KO)."""
    content = b"QFI\xfb" + b"same" * 1024
    first, second = tmp_path / "a" / "debian.qcow2", tmp_path / "b" / "mine.qcow2"
    for path in (first, second):
        path.parent.mkdir()
        path.write_bytes(content)
    layout = HostLayout("r1", str(tmp_path / "vm5k"))
    disks = [load_image(str(first)).disk, load_image(str(second)).disk]

    async def go(transfer: str):
        async with LocalRunner() as local:
            return await distribute(local, ["h1"], disks, layout, transfer=transfer)

    report = asyncio.run(go("chain"))
    assert not report.failed and report.sent == {"debian.qcow2": ["h1"], "mine.qcow2": ["h1"]}
    assert [Path(disk.remote(layout)).read_bytes() for disk in disks] == [content, content]
    again = asyncio.run(go("auto"))
    assert again.had == {"debian.qcow2": ["h1"], "mine.qcow2": ["h1"]} and not again.sent
