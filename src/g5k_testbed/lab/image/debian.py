"""The `debian` guest: a debootstrap minbase of bookworm with systemd, OpenSSH and systemd-networkd.

It boots with the same kernel and initrd as `tiny` (the root filesystem needs no kernel package) and
honours the same cloud-init seed through two small units of ours rather than the real cloud-init:

    vm5k-seed.service   before the network and sshd: host name, keys, files, bootcmd, DNS wishes,
                        SSH host keys regenerated on a new instance       (/usr/lib/vm5k/seed-early)
    vm5k-ready.service  after sshd and network-online: markers on the console, then runcmd
                                                                          (/usr/lib/vm5k/seed-late)

Why not cloud-init itself: it would pull Python and ~100 MB of packages into the image and cost many
seconds of interpreter start-up per boot under TCG, for a seed subset that vm5k fully defines; sharing
the tiny guest's seed reader also means one implementation, tested once, for both flavours.
Building needs the Debian archive once (debootstrap's packages are cached in the image cache).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from g5k_testbed.lab.image.kernel import Kernel
from g5k_testbed.lab.image.tiny import ROOT_LABEL, guest_file, install_late_modules
from g5k_testbed.lab.layout import CACHE_DIR
from g5k_testbed.lab.procs import run

CMDLINE = f"console=ttyS0 root=LABEL={ROOT_LABEL} rw panic=-1 quiet"
ROOT_SIZE = "2G"
SUITE = "bookworm"
# kmod (insmod): the seed's and the late modules are loaded by the guest itself (minbase lacks it).
INCLUDE = ("systemd-sysv", "udev", "dbus", "kmod", "openssh-server", "iproute2", "netbase",
           "systemd-resolved", "iputils-ping", "less", "procps")
GUEST_FILES = ("seed-lib.sh", "seed-parse.sh", "debian-seed-early.sh", "debian-seed-late.sh")

SEED_UNIT = """[Unit]
Description=vm5k: apply the cloud-init NoCloud seed (host name, keys, files)
DefaultDependencies=no
After=local-fs.target systemd-remount-fs.service
Before=network-pre.target systemd-networkd.service systemd-resolved.service ssh.service sysinit.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/lib/vm5k/seed-early
StandardOutput=journal+console

[Install]
WantedBy=sysinit.target
"""
READY_UNIT = """[Unit]
Description=vm5k: readiness markers, then the seed's runcmd
After=ssh.service network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/lib/vm5k/seed-late
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""
NETWORK = """[Match]
Name=en* eth*

[Network]
DHCP=ipv4

[DHCPv4]
ClientIdentifier=mac
SendHostname=yes
UseDomains=yes
"""
SSHD = "UseDNS no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\n"


def mirror() -> str:
    """The Debian mirror apt already uses (deb822 or one-line sources), else deb.debian.org."""
    for path in [*sorted(Path("/etc/apt").glob("sources.list.d/*.sources")), Path("/etc/apt/sources.list")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
            if "debian" in match.group(1) and "security" not in match.group(1):
                return match.group(1)
        for match in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", text, re.M):
            return match.group(1)
    return "http://deb.debian.org/debian"


def fingerprint(tiny_key: str) -> str:
    digest = hashlib.sha256(f"debian/2\n{tiny_key}\n{' '.join(INCLUDE)}\n".encode())
    for text in (SEED_UNIT, READY_UNIT, NETWORK, SSHD):
        digest.update(text.encode())
    for name in GUEST_FILES:
        digest.update(name.encode() + hashlib.sha256(guest_file(name)).digest())
    return digest.hexdigest()[:16]


def _write(root: Path, relative: str, text: str | bytes, mode: int = 0o644) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)


def customise(root: Path, kernel: Kernel) -> None:
    """Seed units, DHCP on every Ethernet, no host keys nor machine id of the builder, quiet timers."""
    install_late_modules(root, kernel)
    _write(root, "usr/lib/vm5k/seed-lib.sh", guest_file("seed-lib.sh"))
    _write(root, "usr/lib/vm5k/seed-parse", guest_file("seed-parse.sh"), 0o755)
    _write(root, "usr/lib/vm5k/seed-early", guest_file("debian-seed-early.sh"), 0o755)
    _write(root, "usr/lib/vm5k/seed-late", guest_file("debian-seed-late.sh"), 0o755)
    _write(root, "etc/systemd/system/vm5k-seed.service", SEED_UNIT)
    _write(root, "etc/systemd/system/vm5k-ready.service", READY_UNIT)
    _write(root, "etc/systemd/network/20-vm5k-dhcp.network", NETWORK)
    _write(root, "etc/ssh/sshd_config.d/vm5k.conf", SSHD)
    _write(root, "etc/hostname", "vm5k-guest\n")
    _write(root, "etc/hosts", "127.0.0.1\tlocalhost\n")
    run(["systemctl", f"--root={root}", "enable", "vm5k-seed.service", "vm5k-ready.service",
         "systemd-networkd.service", "systemd-resolved.service"])
    run(["systemctl", f"--root={root}", "mask", "apt-daily.timer", "apt-daily-upgrade.timer",
         "e2scrub_all.timer", "fstrim.timer", "e2scrub_reap.service"], check=False)
    resolv = root / "etc" / "resolv.conf"
    if resolv.exists() or resolv.is_symlink():
        resolv.unlink()
    resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc" / "machine-id").write_text("")
    (root / "var" / "lib" / "dbus" / "machine-id").unlink(missing_ok=True)
    for folder in ("var/lib/apt/lists", "var/cache/apt", "usr/share/doc", "usr/share/man",
                   "usr/share/locale"):
        target = root / folder
        if target.exists():
            shutil.rmtree(target)
            target.mkdir(parents=True)
    (root / "var" / "lib" / "apt" / "lists" / "partial").mkdir(parents=True, exist_ok=True)


def build_disk(work: Path, kernel: Kernel, progress: Callable[[str], None]) -> None:
    """debootstrap (packages cached), customise, ext4 from the tree, qcow2: `work/disk.qcow2`."""
    tree = work / "tree"
    cache = CACHE_DIR / "debootstrap"
    cache.mkdir(parents=True, exist_ok=True)
    progress(f"debootstrap {SUITE} minbase from {mirror()} (about a minute)")
    run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", f"--cache-dir={cache}",
         SUITE, str(tree), mirror()], timeout=1800)
    customise(tree, kernel)
    raw = work / "disk.raw"
    run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-b", "4096", "-m", "0", "-E", "root_owner=0:0",
         "-d", str(tree), str(raw), ROOT_SIZE], timeout=900)
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(work / "disk.qcow2")], timeout=900)
    raw.unlink()
    run(["rm", "-rf", "--one-file-system", str(tree)])
