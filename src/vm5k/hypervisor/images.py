"""The VMs' backing files on every host: checksummed on the frontend, cached by content on the hosts.

Why content-addressed: a host keeps ``<base>/images/<sha256>/<name>`` across runs, so a second run (or a
rerun of this one) finds the file in place and copies nothing; two different files with the same name never
collide; ``--vm-clean-disks`` and destroy never touch the cache. A copy is verified (sha256) before it is
renamed into place, then a ``<name>.sha256`` marker beside it lets later runs check it without reading it.

How a file gets to the hosts that lack it:

- when the hosts already see the source at the same path with the same size (``/grid5000/...`` is NFS on
  Grid'5000 and shared on the testbed), each host copies it locally from there and verifies it
  (``shared``): nothing goes through the frontend or over SSH;
- otherwise (``chain``) the remote layer's chain broadcast streams it from the frontend through the hosts,
  verifies it everywhere and falls back to direct copies for hosts the chain missed.

Why a local copy rather than using a shared file in place: VMs then never depend on the shared filesystem
(an NFS hiccup does not freeze hundreds of guests), libvirt may relabel (chown) a local file freely, which it
cannot do on a root-squashed NFS export (on the testbed, libvirt did chown a kernel used in place in the
shared folder), and reads at boot are local. What it costs (benchmarks/vms.py, testbed node, 2 loaded cores):
the tiny image with its kernel and initrd, 75 MiB, takes 0.8-4.2 s to copy from ``/grid5000`` into an empty
cache, 2.3-11.7 s to send from the frontend over SSH, and 0.2-0.9 s to find already cached; using the file in
place would save the first figure once per host and run, a few seconds against minutes of VM boots.

An image may come with ``<image>.boot.json`` (``{"kernel": ..., "initrd": ..., "cmdline": ...}``, paths
relative to the image's folder): the VMs then boot that kernel directly, and the kernel and initrd are cached
and copied like the image.

>>> spec = parse_boot_json('{"kernel": "k/vmlinux", "initrd": "initrd.gz", "cmdline": "console=ttyS0"}',
...                        Path("/grid5000/virt-images"))
>>> spec.kernel, spec.cmdline
(PosixPath('/grid5000/virt-images/k/vmlinux'), 'console=ttyS0')
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import posixpath
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vm5k.errors import UsageError
from vm5k.hypervisor.layout import HostLayout, cache_name
from vm5k.remote import Runner, SshRunner, broadcast_file, file_sha256

log = logging.getLogger(__name__)

QCOW2_MAGIC = b"QFI\xfb"
_CMDLINE = re.compile(r"[\x20-\x7e]{0,2048}")

#: Per file, 4 arguments: cached path, sha256, size, source path. Prints "have <cached path>" for a verified
#: copy (marker present, size right) and "shared <cached path>" when the source is visible here with the
#: same size. By path, not by digest: two files with the same content and different names are two entries.
CHECK_SCRIPT = r"""
while [ $# -ge 4 ]; do
    path=$1 sum=$2 size=$3 src=$4
    shift 4
    if [ -f "$path" ] && [ "$(cat "$path.sha256" 2>/dev/null)" = "$sum" ] \
            && [ "$(stat -c %s "$path")" = "$size" ]; then
        echo "have $path"
    elif [ -f "$src" ] && [ -r "$src" ] && [ "$(stat -c %s "$src")" = "$size" ]; then
        echo "shared $path"
    fi
done
"""

#: $1 source (shared), $2 destination, $3 sha256: copy, verify, rename, mark.
SHARED_COPY_SCRIPT = r"""
set -u
src=$1 dest=$2 sum=$3
dir=$(dirname -- "$dest")
mkdir -p -- "$dir" && chmod 0755 -- "$dir"
part="$dest.vm5k-part-$$"
trap 'rm -f -- "$part"' EXIT
cp -- "$src" "$part" || exit 40
got=$(sha256sum < "$part" | cut -d' ' -f1)
if [ "$got" != "$sum" ]; then echo "checksum mismatch after copy from $src: got $got" >&2; exit 41; fi
chmod 0644 -- "$part" && mv -f -- "$part" "$dest" && printf '%s\n' "$sum" > "$dest.sha256"
"""

#: Per file, 2 arguments: path and sha256 of a verified copy. Writes the markers.
MARK_SCRIPT = r"""
while [ $# -ge 2 ]; do printf '%s\n' "$2" > "$1.sha256"; shift 2; done
"""


@dataclass(frozen=True)
class BootSpec:
    """Direct kernel boot of an image: kernel and initrd on the frontend, and the kernel command line."""

    kernel: Path
    initrd: Path | None
    cmdline: str


def _relative(value: object, folder: Path, what: str) -> Path:
    if not isinstance(value, str) or not value or value.startswith("/") or "\0" in value or "\n" in value:
        raise UsageError(f"boot.json: {what} must be a path relative to the image's folder")
    norm = posixpath.normpath(value)
    if norm.startswith("..") or norm == ".":
        raise UsageError(f"boot.json: {what} {value!r} leaves the image's folder")
    return folder / norm


def parse_boot_json(text: str, folder: Path) -> BootSpec:
    """Read an image's ``.boot.json`` (paths relative to `folder`); UsageError when it is malformed."""
    try:
        data = json.loads(text)
    except ValueError as error:
        raise UsageError(f"boot.json is not valid JSON: {error}") from None
    if not isinstance(data, dict) or "kernel" not in data:
        raise UsageError("boot.json must be an object with at least a kernel")
    cmdline = data.get("cmdline", "")
    if not isinstance(cmdline, str) or not _CMDLINE.fullmatch(cmdline):
        raise UsageError("boot.json: cmdline must be one line of printable characters")
    initrd = data.get("initrd")
    return BootSpec(kernel=_relative(data["kernel"], folder, "kernel"),
                    initrd=_relative(initrd, folder, "initrd") if initrd else None, cmdline=cmdline)


@dataclass(frozen=True)
class LocalFile:
    """A file on the frontend with its digest; `remote` is where hosts cache it."""

    path: Path
    sha256: str
    size: int

    def remote(self, layout: HostLayout) -> str:
        return layout.cached(self.sha256, self.path.name)

    @property
    def name(self) -> str:
        return cache_name(self.path.name)


@dataclass(frozen=True)
class Image:
    """A backing file as the VMs use it: the disk image, its format, and its direct-boot files if any."""

    source: str  # as the user wrote it (the VMs' backing_file)
    disk: LocalFile
    fmt: str  # qcow2 or raw
    kernel: LocalFile | None = None
    initrd: LocalFile | None = None
    cmdline: str = ""

    def files(self) -> list[LocalFile]:
        return [f for f in (self.disk, self.kernel, self.initrd) if f is not None]

    def to_dict(self, layout: HostLayout) -> dict[str, object]:
        """What the topology records about the image (meta), with the paths on the hosts."""
        return {"source": self.source, "sha256": self.disk.sha256, "size": self.disk.size, "format": self.fmt,
                "path": self.disk.remote(layout),
                "kernel": self.kernel.remote(layout) if self.kernel else None,
                "initrd": self.initrd.remote(layout) if self.initrd else None, "cmdline": self.cmdline}


_digests: dict[tuple[str, int, int], str] = {}


def _digest(path: Path) -> LocalFile:
    try:
        info = path.stat()
    except OSError as error:
        raise UsageError(f"backing file {path}: {error.strerror}") from None
    if not path.is_file():
        raise UsageError(f"backing file {path} is not a file")
    key = (str(path.resolve()), info.st_size, info.st_mtime_ns)
    if key not in _digests:
        _digests[key] = file_sha256(path)
    return LocalFile(path=path, sha256=_digests[key], size=info.st_size)


def image_format(path: Path) -> str:
    """``qcow2`` when the file starts with the qcow2 magic, else ``raw``."""
    with open(path, "rb") as stream:
        return "qcow2" if stream.read(4) == QCOW2_MAGIC else "raw"


def load_image(source: str) -> Image:
    """Checksum an image (and its boot files) on the frontend; reads ``<image>.boot.json`` when present.

    Digests are remembered per (path, size, mtime) for the life of the process.
    """
    path = Path(source).expanduser()
    disk = _digest(path)
    boot_json = Path(f"{path}.boot.json")
    kernel = initrd = None
    cmdline = ""
    if boot_json.is_file():
        spec = parse_boot_json(boot_json.read_text(), path.parent)
        kernel = _digest(spec.kernel)
        initrd = _digest(spec.initrd) if spec.initrd else None
        cmdline = spec.cmdline
    return Image(source=source, disk=disk, fmt=image_format(path), kernel=kernel, initrd=initrd,
                 cmdline=cmdline)


async def load_images(sources: Iterable[str]) -> dict[str, Image]:
    """`load_image` for each distinct source, in threads (checksums of big files take seconds)."""
    unique = sorted(set(sources))
    loaded = await asyncio.gather(*(asyncio.to_thread(load_image, source) for source in unique))
    return dict(zip(unique, loaded, strict=True))


@dataclass
class DistributionReport:
    """Per file: which hosts had it, copied it from the shared path, or got it through the chain."""

    had: dict[str, list[str]] = field(default_factory=dict)
    shared: dict[str, list[str]] = field(default_factory=dict)
    sent: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # host → why it lacks a file
    seconds: float = 0.0
    #: host → when (epoch seconds) its last file was found or put in place; a host in `failed` may be here
    #: too, for the files it got
    ready_at: dict[str, float] = field(default_factory=dict)

    def got(self, hosts: Iterable[str]) -> None:
        """These hosts hold one more file now."""
        now = time.time()
        for host in hosts:
            self.ready_at[host] = max(self.ready_at.get(host, now), now)


def check_command(files: Iterable[LocalFile], layout: HostLayout) -> list[str]:
    """The argument list that tells which files a host holds (verified) or sees at their source path."""
    args: list[str] = []
    for item in files:
        args += [item.remote(layout), item.sha256, str(item.size), str(item.path.resolve())]
    return ["sh", "-c", CHECK_SCRIPT, "vm5k-images", *args]


def parse_check(stdout: str) -> tuple[set[str], set[str]]:
    """(cached paths held, cached paths whose source is visible) from `CHECK_SCRIPT`'s output."""
    have: set[str] = set()
    shared: set[str] = set()
    for line in stdout.splitlines():
        word, _, path = line.partition(" ")
        (have if word == "have" else shared if word == "shared" else set()).add(path.strip())
    return have, shared


async def distribute(runner: Runner, hosts: Iterable[str], files: Iterable[LocalFile], layout: HostLayout, *,
                     transfer: str = "auto", timeout: float | None = None) -> DistributionReport:
    """Make every file present and verified in every host's cache (see the module docstring).

    transfer: ``auto`` (a local copy from the shared path where hosts see it, the chain elsewhere) or
    ``chain`` (always through the frontend).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    host_list = list(hosts)
    unique = {item.remote(layout): item for item in files}  # same bytes under another name: another file
    report = DistributionReport()
    if not host_list or not unique:
        return report
    checks = await runner.run(host_list, check_command(unique.values(), layout), timeout=120)
    for result in checks.ko:
        report.failed[result.host] = f"cannot check its image cache: {result.describe()}"
    status = {result.host: parse_check(result.stdout) for result in checks.ok}

    async def one(item: LocalFile) -> None:
        cached = item.remote(layout)
        have = [h for h, (held, _) in status.items() if cached in held]
        missing = [h for h in status if h not in have]
        report.had[item.name] = have
        report.got(have)
        shared = [h for h in missing if transfer == "auto" and cached in status[h][1]]
        chain = [h for h in missing if h not in shared]
        if shared:
            command = ["sh", "-c", SHARED_COPY_SCRIPT, "vm5k-shared-copy", str(item.path.resolve()),
                       item.remote(layout), item.sha256]
            copied = await runner.run(shared, command, timeout=timeout)
            report.shared[item.name] = copied.ok_hosts
            report.got(copied.ok_hosts)
            for result in copied.ko:  # the shared copy failed: let the chain try
                log.warning("%s: local copy of %s failed (%s); sending it", result.host, item.name,
                            result.describe())
                chain.append(result.host)
        if chain:
            report.sent[item.name] = await _send(runner, chain, item, layout, timeout, report)
            report.got(report.sent[item.name])

    await asyncio.gather(*(one(item) for item in unique.values()))
    report.seconds = loop.time() - started
    return report


async def _send(runner: Runner, hosts: list[str], item: LocalFile, layout: HostLayout,
                timeout: float | None, report: DistributionReport) -> list[str]:
    """Send one file to `hosts` (chain broadcast over SSH; plain verified copies otherwise)."""
    dest = item.remote(layout)
    await runner.run(hosts, ["sh", "-c", 'mkdir -p -- "$1" && chmod 0755 -- "$1"', "vm5k-mkdir",
                             os.path.dirname(dest)], timeout=60)
    if isinstance(runner, SshRunner):
        result = await broadcast_file(runner, hosts, item.path, dest, work_dir=layout.run_dir,
                                      sha256=item.sha256, timeout=timeout)
        ok, failed = result.ok_hosts, dict(result.failed)
    else:
        copies = await runner.put(hosts, item.path, dest, sha256=item.sha256, mode=0o644, timeout=timeout)
        ok, failed = copies.ok_hosts, {r.host: r.describe() for r in copies.ko}
    for host, why in failed.items():
        report.failed[host] = f"no verified copy of {item.name}: {why}"
    if ok:
        marks = await runner.run(ok, ["sh", "-c", MARK_SCRIPT, "vm5k-mark", dest, item.sha256], timeout=60)
        for mark in marks.ko:
            report.failed[mark.host] = f"cannot mark {item.name}: {mark.describe()}"
    return [host for host in ok if host not in report.failed]
