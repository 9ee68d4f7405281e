"""The `tiny` guest: busybox + dropbear on an ext4 qcow2, and the initrd every flavour boots with.

Root filesystem (a few MB, `mkfs.ext4 -d`: no loop mount, no root-only step beyond writing files):

    /bin/busybox + applet links    (busybox-static of the machine, a Debian package)
    /sbin/init -> busybox init     (inittab: sysinit /usr/lib/vm5k/boot; reaps orphans)
    /usr/sbin/dropbear, /usr/bin/dropbearkey, /usr/bin/dbclient   (dropbear-bin .deb) + their libraries
    /usr/lib/sftp-server           (openssh-sftp-server .deb: scp of OpenSSH 9 speaks SFTP)
    /usr/lib/vm5k/                 boot, seed-lib.sh, seed-parse, udhcpc.script

The initrd (`initrd-init.sh` + static busybox + the kernel modules in dependency order) mounts the root
named by `root=` and switches to it; it is the same for the `debian` flavour.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from g5k_testbed.lab.errors import LabError
from g5k_testbed.lab.image import cpio
from g5k_testbed.lab.image.kernel import Kernel
from g5k_testbed.lab.procs import run

ROOT_LABEL = "vm5k-root"
ROOT_SIZE = "1G"
CMDLINE = f"console=ttyS0 root=LABEL={ROOT_LABEL} rw panic=-1 quiet"
DROPBEAR_DEBS = ("dropbear-bin", "libtomcrypt1", "libtommath1", "libgmp10", "openssh-sftp-server")
DROPBEAR_FILES = {  # path in the .debs -> path in the guest
    "usr/sbin/dropbear": "usr/sbin/dropbear",
    "usr/bin/dropbearkey": "usr/bin/dropbearkey",
    "usr/bin/dbclient": "usr/bin/dbclient",
    "usr/lib/openssh/sftp-server": "usr/lib/sftp-server",
}
GUEST_FILES = ("initrd-init.sh", "tiny-boot.sh", "seed-lib.sh", "seed-parse.sh", "udhcpc.sh")

INITTAB = """# busybox init of the vm5k tiny guest
::sysinit:/usr/lib/vm5k/boot
::ctrlaltdel:/sbin/poweroff
::shutdown:/bin/umount -a -r
"""
PROFILE = 'export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nPS1="$(hostname):\\w# "\n'
OS_RELEASE = ('PRETTY_NAME="vm5k tiny guest (busybox, dropbear)"\nNAME="vm5k-tiny"\nID=vm5k-tiny\n'
              'ID_LIKE=debian\nVERSION_ID="1"\n')


def guest_file(name: str) -> bytes:
    return resources.files(__package__).joinpath("guest", name).read_bytes()


def busybox() -> Path:
    """The machine's static busybox (package busybox-static): it runs unchanged in any guest."""
    path = shutil.which("busybox")
    if path is None:
        raise LabError("busybox is missing (package busybox-static; run scripts/setup.sh)")
    if b"ld-linux" in Path(path).read_bytes()[:4096] or "not a dynamic" not in _ldd(Path(path)):
        raise LabError(f"{path} is not statically linked: install busybox-static")
    return Path(path)


def _ldd(path: Path, extra: list[Path] | None = None) -> str:
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(str(p) for p in extra or []))
    proc = subprocess.run(["ldd", str(path)], capture_output=True, text=True, env=env, check=False)
    return proc.stdout + proc.stderr


def libraries(binary: Path, extra: list[Path]) -> list[Path]:
    """Shared libraries `binary` needs, found in `extra` folders first, then on the machine."""
    found = []
    for line in _ldd(binary, extra).splitlines():
        parts = line.split()
        if "=>" in parts and parts[-1].startswith("(") and parts[parts.index("=>") + 1].startswith("/"):
            found.append(Path(parts[parts.index("=>") + 1]))
        elif parts and parts[0].startswith("/") and "ld-linux" in parts[0]:
            found.append(Path(parts[0]))
        elif "not found" in line:
            raise LabError(f"{binary.name}: library missing: {line.strip()}")
    return found


def build_initrd(kernel: Kernel, out: Path) -> None:
    folders = ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules")
    entries = [cpio.directory(name) for name in folders]
    entries.append(cpio.char_device("dev/console", 5, 1))
    entries.append(cpio.file("init", guest_file("initrd-init.sh"), 0o755))
    entries.append(cpio.file("bin/busybox", busybox().read_bytes(), 0o755))
    for name in kernel.load_order("initrd"):
        entries.append(cpio.file(f"lib/modules/{name}", (kernel.modules / name).read_bytes()))
    entries.append(cpio.file("lib/modules/load-order", (kernel.modules / "initrd.order").read_bytes()))
    cpio.write_gzip(entries, out)


def install_late_modules(root: Path, kernel: Kernel) -> None:
    """The modules the root's boot loads itself (the seed's filesystem at once, the others later).

    They live in /lib/modules/vm5k/ with `seed.order` and `late.order`; the kernel that boots the image
    is the one of the same build (the sidecar names it), so they always match.
    """
    folder = root / "lib" / "modules" / "vm5k"
    folder.mkdir(parents=True, exist_ok=True)
    for group in ("seed", "late"):
        for name in kernel.load_order(group):
            shutil.copyfile(kernel.modules / name, folder / name)
        shutil.copyfile(kernel.modules / f"{group}.order", folder / f"{group}.order")


def _write(root: Path, relative: str, data: bytes | str, mode: int = 0o644) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)


def build_tree(root: Path, debs: list[Path], kernel: Kernel) -> None:
    """The tiny root filesystem in folder `root`."""
    for folder, mode in (("bin", 0o755), ("sbin", 0o755), ("usr/bin", 0o755), ("usr/sbin", 0o755),
                         ("usr/lib/vm5k", 0o755), ("etc/dropbear", 0o700), ("root/.ssh", 0o700),
                         ("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("run", 0o755), ("tmp", 0o1777),
                         ("var/lib/vm5k", 0o755), ("var/log", 0o755), ("mnt", 0o755), ("home", 0o755),
                         ("etc/acpi/PWRF", 0o755), ("lib/x86_64-linux-gnu", 0o755), ("lib64", 0o755)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder).chmod(mode)
    (root / "root").chmod(0o700)
    (root / "var" / "run").symlink_to("/run")
    box = busybox()
    shutil.copyfile(box, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    listing = run([str(box), "--list-full"]).stdout.split()
    for applet in listing:
        link = root / applet
        if applet in ("linuxrc", "bin/busybox") or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")
    with tempfile.TemporaryDirectory(prefix="vm5k-debs-") as tmp:
        unpacked = Path(tmp)
        for deb in debs:
            run(["dpkg-deb", "-x", str(deb), str(unpacked)])
        lib_dirs = [unpacked / "usr/lib/x86_64-linux-gnu", unpacked / "lib/x86_64-linux-gnu"]
        needed: set[Path] = set()
        for source, target in DROPBEAR_FILES.items():
            _write(root, target, (unpacked / source).read_bytes(), 0o755)
            needed.update(libraries(unpacked / source, lib_dirs))
        for library in sorted(needed):
            real = library.resolve()
            folder = "lib64" if "ld-linux" in library.name else "lib/x86_64-linux-gnu"
            _write(root, f"{folder}/{library.name}", real.read_bytes(), 0o755)
    install_late_modules(root, kernel)
    _write(root, "usr/lib/vm5k/boot", guest_file("tiny-boot.sh"), 0o755)
    _write(root, "usr/lib/vm5k/seed-lib.sh", guest_file("seed-lib.sh"))
    _write(root, "usr/lib/vm5k/seed-parse", guest_file("seed-parse.sh"), 0o755)
    _write(root, "usr/lib/vm5k/udhcpc.script", guest_file("udhcpc.sh"), 0o755)
    for alias in ("usr/share/udhcpc/default.script", "etc/udhcpc/default.script"):
        (root / alias).parent.mkdir(parents=True, exist_ok=True)
        (root / alias).symlink_to("/usr/lib/vm5k/udhcpc.script")
    _write(root, "etc/inittab", INITTAB)
    _write(root, "etc/passwd",
           "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    _write(root, "etc/shadow", "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0o600)
    _write(root, "etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n")
    _write(root, "etc/shells", "/bin/sh\n/bin/ash\n")
    _write(root, "etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n")
    _write(root, "etc/hostname", "vm5k-guest\n")
    _write(root, "etc/hosts", "127.0.0.1\tlocalhost\n")
    _write(root, "etc/profile", PROFILE)
    _write(root, "etc/os-release", OS_RELEASE)
    _write(root, "etc/acpid.conf", "PWRF PWRF\n")
    _write(root, "etc/acpi/PWRF/00-poweroff", "#!/bin/sh\nexec poweroff\n", 0o755)


def build_disk(tree: Path, out: Path) -> None:
    """ext4 (label vm5k-root) from `tree` without mounting anything, then qcow2."""
    raw = out.with_suffix(".raw")
    raw.unlink(missing_ok=True)
    run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-b", "4096", "-m", "0", "-J", "size=4",
         "-E", "root_owner=0:0", "-d", str(tree), str(raw), ROOT_SIZE], timeout=600)
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)], timeout=600)
    raw.unlink()


def fingerprint(kernel_deb: str, debs: list[Path]) -> str:
    """What the tiny image is made of: a new value means a new build."""
    digest = hashlib.sha256()
    digest.update(b"tiny/2\n" + kernel_deb.encode() + b"\n")
    for name in GUEST_FILES:
        digest.update(name.encode() + hashlib.sha256(guest_file(name)).digest())
    digest.update(hashlib.sha256(busybox().read_bytes()).digest())
    digest.update(INITTAB.encode() + CMDLINE.encode())
    for deb in debs:
        digest.update(deb.name.encode())
    return digest.hexdigest()[:16]


def is_executable(path: Path) -> bool:
    return path.exists() and bool(path.stat().st_mode & stat.S_IXUSR)
