"""Debian packages for the guest images, fetched once into the cache with apt's own client.

Guest packages are downloaded (`apt-get download`), never installed on the machine. A package already in
the cache at apt's candidate version is reused; when apt cannot say (no package lists, no network) the
newest cached file is used, so that rebuilding an image works offline.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from g5k_testbed.lab.errors import LabError
from g5k_testbed.lab.procs import run


def candidate_version(package: str) -> str | None:
    proc = run(["apt-cache", "policy", package], check=False)
    match = re.search(r"Candidate:\s*(\S+)", proc.stdout or "")
    if not match or match.group(1) == "(none)":
        return None
    return match.group(1)


def _deb_version(version: str) -> str:
    """How apt writes a version in a file name (an epoch's colon becomes %3a)."""
    return version.replace(":", "%3a")


def cached(package: str, folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{package}_*.deb"), key=lambda path: path.stat().st_mtime)


def fetch(package: str, folder: Path, refresh: bool = True) -> Path:
    """The .deb of `package` in `folder`, downloaded when missing.

    Without `refresh`, a cached file is used as it is (no question to apt: about a second per package);
    with it, apt's candidate version is fetched when the cache does not have it yet.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if not refresh and cached(package, folder):
        return cached(package, folder)[-1]
    version = candidate_version(package)
    if version is not None:
        pattern = f"{package}_{_deb_version(version)}_*.deb"
        if not list(folder.glob(pattern)):
            proc = subprocess.run(["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", package],
                                  cwd=folder, capture_output=True, text=True, timeout=900, check=False)
            if not list(folder.glob(pattern)):
                detail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:]
                raise LabError(f"cannot download the Debian package {package}: {' '.join(detail)}")
        return next(iter(folder.glob(pattern)))
    old = cached(package, folder)
    if old:
        return old[-1]
    raise LabError(f"the Debian package {package} is unknown to apt and not in {folder} "
                   "(run apt-get update, or scripts/setup.sh)")


def kernel_package() -> str:
    """The versioned kernel package behind linux-image-amd64 (e.g. linux-image-6.1.0-56-amd64)."""
    proc = run(["apt-cache", "depends", "linux-image-amd64"], check=False)
    for line in (proc.stdout or "").splitlines():
        match = re.match(r"\s*Depends:\s*(linux-image-\S+-amd64)\s*$", line)
        if match:
            return match.group(1)
    raise LabError("apt does not know linux-image-amd64 (run apt-get update)")


def cached_kernel_package(folder: Path) -> str | None:
    debs = sorted(folder.glob("linux-image-*-amd64_*.deb"), key=lambda path: path.stat().st_mtime)
    return debs[-1].name.split("_")[0] if debs else None
