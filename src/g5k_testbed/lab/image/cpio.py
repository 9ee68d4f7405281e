"""A minimal writer of `newc` cpio archives (the initramfs format), so building an initrd needs no cpio tool.

Entries are written as given (parents before children); device nodes are plain header fields, so an
archive holding /dev/console is built without any privilege.
"""

from __future__ import annotations

import gzip
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    name: str  # path inside the archive, without a leading slash
    mode: int  # full st_mode (type and permissions)
    data: bytes = b""  # file content, or the target of a symlink
    rdev: tuple[int, int] = (0, 0)  # (major, minor) of a device node


def directory(name: str, perm: int = 0o755) -> Entry:
    return Entry(name, stat.S_IFDIR | perm)


def file(name: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(name, stat.S_IFREG | perm, data)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, stat.S_IFLNK | 0o777, target.encode())


def char_device(name: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(name, stat.S_IFCHR | perm, b"", (major, minor))


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(ino: int, entry: Entry, name: bytes, size: int) -> bytes:
    fields = [ino, entry.mode, 0, 0, 2 if stat.S_ISDIR(entry.mode) else 1, 0, size, 0, 0,
              entry.rdev[0], entry.rdev[1], len(name) + 1, 0]
    return b"070701" + b"".join(f"{value:08X}".encode() for value in fields)


def archive(entries: list[Entry]) -> bytes:
    """The uncompressed newc archive of `entries`, with its trailer."""
    out = bytearray()
    for ino, entry in enumerate([*entries, Entry("TRAILER!!!", 0)], start=1):
        name = entry.name.lstrip("/").encode()
        head = _header(ino if entry.name != "TRAILER!!!" else 0, entry, name, len(entry.data))
        out += head + name + b"\0"
        out += _pad(len(head) + len(name) + 1)
        out += entry.data + _pad(len(entry.data))
    return bytes(out)


def write_gzip(entries: list[Entry], path: Path) -> None:
    path.write_bytes(gzip.compress(archive(entries), compresslevel=6, mtime=0))
