"""The guests' kernel, from Debian's kernel package: an uncompressed PVH vmlinux and a few modules.

Debian builds virtio, ext4, iso9660 and friends as modules, so every guest needs an initrd that loads
them. The package is unpacked once; `depmod` + `modprobe --show-depends` give the load order (no hand
ordering), the needed `.ko` files are kept, and the ELF vmlinux is pulled out of vmlinuz (the compressed
payload behind its setup code), because direct PVH boot of the ELF skips the in-guest decompression
that costs seconds under TCG. The unpacked package is then deleted: only ~70 MB stay in the cache.
"""

from __future__ import annotations

import lzma
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from g5k_testbed.lab.errors import LabError
from g5k_testbed.lab.procs import run

# Modules in three groups, each loaded when it is needed, because every insmod costs tens to hundreds of
# milliseconds of TCG time (about 3 s of a loaded machine's 8 s to the root's init when all came first):
#   initrd      what mounting the root and the network need: virtio disks and NIC, ext4, entropy;
#   seed        iso9660 (the usual seed's filesystem) and the ACPI power button (`virsh shutdown` must
#               work as soon as the guest answers), loaded by the root's boot script at once;
#   late        vfat seeds, SATA CD-ROMs, virtio-scsi, console, balloon: loaded once sshd is up, or at
#               once when the seed is not found without them (the guest has one vCPU: loading them
#               beside the boot would only slow it down).
MODULE_GROUPS = {
    "initrd": ("virtio_pci", "virtio_blk", "virtio_net", "virtio_rng", "ext4"),
    "seed": ("isofs", "button", "evdev"),
    "late": ("vfat", "nls_cp437", "nls_ascii", "nls_utf8", "nls_iso8859-1", "ahci", "sr_mod", "virtio_scsi",
             "virtio_console", "virtio_balloon"),
}
CACHE_LAYOUT = "modules-in-groups/3"
XZ_MAGIC = b"\xfd7zXZ\x00"
GZIP_MAGIC = b"\x1f\x8b\x08\x00"


@dataclass(frozen=True)
class Kernel:
    version: str  # e.g. 6.1.0-56-amd64
    vmlinux: Path
    modules: Path  # folder with the .ko files and one `<group>.order` file per group

    def load_order(self, group: str = "initrd") -> list[str]:
        """The .ko files of a group, in the order to insmod them (each module in one group only)."""
        return (self.modules / f"{group}.order").read_text().split()


def extract_vmlinux(vmlinuz: bytes) -> bytes:
    """The ELF kernel inside a bzImage (xz or gzip payload)."""
    for magic, opener in ((XZ_MAGIC, "xz"), (GZIP_MAGIC, "gzip")):
        start = vmlinuz.find(magic)
        while start >= 0:
            try:
                if opener == "xz":
                    data = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(vmlinuz[start:])
                else:
                    data = _gunzip_prefix(vmlinuz[start:])
            except (lzma.LZMAError, OSError, EOFError):
                data = b""
            if data.startswith(b"\x7fELF"):
                return data
            start = vmlinuz.find(magic, start + 1)
    raise LabError("no ELF kernel found inside vmlinuz (unknown compression)")


def _gunzip_prefix(data: bytes) -> bytes:
    """Decompress one gzip member, ignoring whatever follows it."""
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)


def load_order(root: Path, version: str, wanted: tuple[str, ...]) -> list[Path]:
    """The .ko files to insmod, dependencies first, each once (from modprobe --show-depends)."""
    order: list[Path] = []
    for module in wanted:
        proc = run(["modprobe", "-d", str(root), "-S", version, "--show-depends", module], check=False)
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "insmod":
                path = Path(parts[1])
                if path not in order:
                    order.append(path)
    if not order:
        raise LabError(f"no module of {', '.join(wanted)} found in the kernel package")
    return order


def prepare(deb: Path, cache: Path) -> Kernel:
    """Unpack a linux-image .deb into `cache/kernel/<deb>/` once; later calls reuse it."""
    target = cache / "kernel" / deb.stem
    done = target / ".complete"
    if done.exists() and len(done.read_text().split()) == 2 and done.read_text().split()[1] == CACHE_LAYOUT:
        version = done.read_text().split()[0]
        return Kernel(version, target / f"vmlinux-{version}", target / "modules")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="vm5k-kernel-", dir=cache) as tmp:
        root = Path(tmp)
        run(["dpkg-deb", "-x", str(deb), str(root)], timeout=600)
        versions = sorted(p.name for p in (root / "lib" / "modules").iterdir())
        if len(versions) != 1:
            raise LabError(f"{deb.name}: expected one kernel version, found {versions}")
        version = versions[0]
        run(["depmod", "-b", str(root), version], timeout=300)
        vmlinux = target / f"vmlinux-{version}"
        vmlinux.write_bytes(extract_vmlinux((root / "boot" / f"vmlinuz-{version}").read_bytes()))
        modules = target / "modules"
        modules.mkdir()
        seen: set[str] = set()
        for group, wanted in MODULE_GROUPS.items():
            names = []
            for path in load_order(root, version, wanted):
                if path.name in seen:
                    continue  # already loaded by an earlier group
                seen.add(path.name)
                shutil.copyfile(path, modules / path.name)
                names.append(path.name)
            (modules / f"{group}.order").write_text("\n".join(names) + "\n")
    done.write_text(f"{version} {CACHE_LAYOUT}\n")
    return Kernel(version, target / f"vmlinux-{version}", target / "modules")
