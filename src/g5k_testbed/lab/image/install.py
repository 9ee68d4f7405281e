"""Build guest images into the cache and install them where Grid'5000 keeps VM images.

    /var/cache/vm5k-testbed/debs/                 downloaded .debs (kernel, dropbear, ...)
    /var/cache/vm5k-testbed/kernel/<deb>/         vmlinux + modules
    /var/cache/vm5k-testbed/images/<flavour>-<fingerprint>/   disk.qcow2, initrd, boot.json
    /grid5000/virt-images/debian12-x64-min.qcow2  the default (tiny) image: vm5k's default backing file
    /grid5000/virt-images/debian12-x64-min.qcow2.boot.json
    /grid5000/virt-images/vmlinux-<version>, initrd-vm5k-<version>-<hash>.img

A build is keyed by a fingerprint of its inputs, so an unchanged image is never rebuilt and a changed
builder always is. The sidecar `<image>.boot.json` (see docs/guest-images.md) names the kernel and initrd
(relative to the image's folder) and the kernel command line.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from g5k_testbed.lab.errors import LabError
from g5k_testbed.lab.image import debs, kernel, tiny
from g5k_testbed.lab.layout import CACHE_DIR, DEFAULT_IMAGE_NAME, VIRT_IMAGES

FLAVOURS = ("tiny", "debian")
INSTALL_NAMES = {"tiny": DEFAULT_IMAGE_NAME, "debian": "debian12-x64-base"}
BOOT_FORMAT = 1


def _kernel_deb(progress: Callable[[str], None], refresh: bool) -> Path:
    folder = CACHE_DIR / "debs"
    package = None if refresh else debs.cached_kernel_package(folder)
    if package is None:
        try:
            package = debs.kernel_package()
        except LabError:
            package = debs.cached_kernel_package(folder)
            if package is None:
                raise
        progress(f"kernel package {package}")
    return debs.fetch(package, folder, refresh)


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """One builder at a time on this machine (several testbeds may start together)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".build.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(flavour: str = "tiny", force: bool = False, refresh: bool = True,
          progress: Callable[[str], None] = lambda message: None) -> Path:
    """Build (or find in the cache) a flavour; returns its cache folder (disk.qcow2, boot.json, ...).

    `refresh` asks apt for the current versions of the packages the image is made of (a new kernel
    upload then means a new build); without it, the packages already cached are used (fast, offline).
    """
    if flavour not in FLAVOURS:
        raise LabError(f"unknown image flavour {flavour!r} (known: {', '.join(FLAVOURS)})")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    kernel_deb = _kernel_deb(progress, refresh)
    extra = [debs.fetch(name, CACHE_DIR / "debs", refresh) for name in tiny.DROPBEAR_DEBS]
    key = tiny.fingerprint(kernel_deb.name, extra)
    if flavour == "debian":
        from g5k_testbed.lab.image import debian
        key = debian.fingerprint(key)
    folder = CACHE_DIR / "images" / f"{flavour}-{key}"
    if (folder / "boot.json").exists() and not force:
        return folder
    progress(f"building the {flavour} guest image")
    bundle = kernel.prepare(kernel_deb, CACHE_DIR)
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{flavour}-", dir=folder.parent))
    try:
        initrd = f"initrd-vm5k-{bundle.version}-{key[:8]}.img"
        tiny.build_initrd(bundle, work / initrd)
        shutil.copyfile(bundle.vmlinux, work / bundle.vmlinux.name)
        if flavour == "tiny":
            tree = work / "tree"
            tree.mkdir()
            tiny.build_tree(tree, extra, bundle)
            tiny.build_disk(tree, work / "disk.qcow2")
            shutil.rmtree(tree)
            cmdline = tiny.CMDLINE
        else:
            from g5k_testbed.lab.image import debian
            debian.build_disk(work, bundle, progress)
            cmdline = debian.CMDLINE
        boot = {"format": BOOT_FORMAT, "kernel": bundle.vmlinux.name, "initrd": initrd, "cmdline": cmdline,
                "flavour": flavour, "build": key, "kernel_version": bundle.version}
        (work / "boot.json").write_text(json.dumps(boot, indent=1) + "\n")
        work.chmod(0o755)
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(work, folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return folder


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_atomic(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    tmp.chmod(0o644)
    os.replace(tmp, target)


def install(folder: Path, name: str, images: Path = VIRT_IMAGES) -> Path:
    """Install a built image as `<images>/<name>.qcow2` with its sidecar; unchanged files are kept."""
    boot = json.loads((folder / "boot.json").read_text())
    images.mkdir(parents=True, exist_ok=True)
    images.chmod(0o755)
    for part in (boot["kernel"], boot["initrd"]):
        target = images / part
        if not target.exists() or target.stat().st_size != (folder / part).stat().st_size or \
                _sha256(target) != _sha256(folder / part):
            _copy_atomic(folder / part, target)
    image = images / f"{name}.qcow2"
    sidecar = images / f"{name}.qcow2.boot.json"
    current = _read(sidecar)
    if not image.exists() or current.get("build") != boot["build"]:
        _copy_atomic(folder / "disk.qcow2", image)
    if current != boot:
        tmp = sidecar.with_name(f".{sidecar.name}.tmp")
        tmp.write_text(json.dumps(boot, indent=1) + "\n")
        tmp.chmod(0o644)
        os.replace(tmp, sidecar)
    return image


def _read(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (FileNotFoundError, ValueError):
        return {}


def ensure_default_image(progress: Callable[[str], None] = lambda message: None,
                         images: Path = VIRT_IMAGES) -> Path:
    """The default image installed and current (built when missing or when its builder changed).

    Packages already in the cache are used as they are (`vm5k-testbed image` refreshes them).
    """
    with cache_lock():
        return install(build("tiny", refresh=False, progress=progress), INSTALL_NAMES["tiny"], images)


def installed(name: str = DEFAULT_IMAGE_NAME, images: Path = VIRT_IMAGES) -> dict[str, Any] | None:
    """The sidecar of an installed image, None when the image is not installed."""
    image = images / f"{name}.qcow2"
    return _read(Path(f"{image}.boot.json")) if image.exists() else None
