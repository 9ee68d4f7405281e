"""Make a host a hypervisor, idempotently: packages, libvirt running, ``/dev/kvm`` usable, the run's folders.

Why it is shaped like this:

- packages: only what is missing is installed, and the package indexes are refreshed only when something
  must be downloaded, so a rerun costs one ``dpkg-query`` and works on hosts without network access when
  everything is there already (the testbed's nodes, a Grid'5000 environment with libvirt baked in);
- libvirt: started through systemd where it is the init system, by hand (``virtlogd -d``, ``libvirtd -d``)
  where there is none. A daemon counts as running only if its pid file names a live process with the
  right name: a zombie (``Z`` in ``/proc/PID/stat``) is dead, whatever ``kill -0`` says;
- ``/dev/kvm`` gets group ``kvm`` and mode 0660: without it libvirt's QEMU user cannot open it, throws its
  capability cache away at every call and ``virsh create`` takes 70 s instead of 1 s;
- the run's folders are made world-traversable (QEMU runs as ``libvirt-qemu`` on Debian).

>>> packages_for(("htop",), service=True)[-3:]
['genisoimage', 'dnsmasq-base', 'htop']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from vm5k.errors import UsageError
from vm5k.hypervisor.daemons import ALIVE_FUNCTION
from vm5k.hypervisor.layout import HostLayout

#: A Debian package as apt-get takes it: ``name``, ``name:arch``, ``name=version`` (no option, no glob).
#: The one definition: ``--host-packages`` is checked against it, and so is what goes on apt-get's line.
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]*(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:-]+)?")
MAX_PACKAGE_NAME = 200

#: What every host needs (Debian names): libvirt's daemon and virsh, QEMU, qemu-img, an ISO writer.
BASE_PACKAGES = ("libvirt-daemon-system", "libvirt-clients", "qemu-system-x86", "qemu-utils", "genisoimage")
#: What the service node needs on top (the binary only: no system service that would bind port 53).
SERVICE_PACKAGES = ("dnsmasq-base",)
#: Commands that must exist once the packages are there (checked on hosts without dpkg too).
REQUIRED_COMMANDS = ("virsh", "qemu-img", "qemu-system-x86_64", "ip")
SERVICE_COMMANDS = ("dnsmasq",)

#: $1: "1" to upgrade every package; $2: the apt log file; $3...: the packages.
#: Prints "installed: ..." when it installed some.
PACKAGES_SCRIPT = r"""
set -u
export DEBIAN_FRONTEND=noninteractive
upgrade=$1; apt_log=$2; shift 2
if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "not a Debian host (no dpkg-query): install by hand: $*" >&2
    exit 20
fi
missing=""
for p in "$@"; do
    case "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" in
        ii*) ;;
        *) missing="$missing $p" ;;
    esac
done
apt_opts="-y -q -o DPkg::Lock::Timeout=300"
apt_opts="$apt_opts -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
if [ -n "$missing" ] || [ "$upgrade" = 1 ]; then
    apt-get $apt_opts update >>"$apt_log" 2>&1 || {
        tail -n 3 "$apt_log" >&2; echo "apt-get update failed" >&2; exit 21; }
fi
if [ "$upgrade" = 1 ]; then
    apt-get $apt_opts dist-upgrade >>"$apt_log" 2>&1 || {
        tail -n 3 "$apt_log" >&2; echo "apt-get dist-upgrade failed" >&2; exit 22; }
    echo "upgraded"
fi
if [ -n "$missing" ]; then
    apt-get $apt_opts install --no-install-recommends $missing >>"$apt_log" 2>&1 || {
        tail -n 3 "$apt_log" >&2; echo "apt-get install$missing failed" >&2; exit 23; }
    echo "installed:$missing"
fi
"""

#: $1...: commands that must exist. Prints the missing ones on stderr and fails.
COMMANDS_SCRIPT = r"""
missing=""
for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing="$missing $c"; done
if ! command -v genisoimage >/dev/null 2>&1 && ! command -v mkisofs >/dev/null 2>&1 \
        && ! command -v xorriso >/dev/null 2>&1; then missing="$missing genisoimage"; fi
if [ -n "$missing" ]; then echo "missing commands:$missing" >&2; exit 24; fi
"""

#: Starts libvirt if it does not run; fixes /dev/kvm; waits until qemu:///system answers.
LIBVIRT_SCRIPT = ALIVE_FUNCTION + r"""
set -u
if [ ! -e /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
    modprobe kvm_intel 2>/dev/null || modprobe kvm_amd 2>/dev/null || true
fi
if [ -e /dev/kvm ] && getent group kvm >/dev/null; then
    if [ "$(stat -c %G:%a /dev/kvm)" != "kvm:660" ]; then
        chgrp kvm /dev/kvm && chmod 660 /dev/kvm && echo "fixed /dev/kvm"
    fi
fi
if [ -d /run/systemd/system ]; then
    systemctl start libvirtd.service 2>/dev/null || systemctl start virtqemud.service 2>/dev/null || true
else
    if ! alive /run/virtlogd.pid virtlogd; then virtlogd -d && echo "started virtlogd"; fi
    if ! alive /run/libvirtd.pid libvirtd; then
        rm -f /run/libvirtd.pid; libvirtd -d && echo "started libvirtd"
    fi
fi
i=0
until virsh -c qemu:///system uri >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -ge 240 ]; then echo "libvirt does not answer on qemu:///system after 120 s" >&2; exit 25; fi
    sleep 0.5
done
"""

#: $1...: folders to create, each made world-traversable (0755).
FOLDERS_SCRIPT = r"""
set -eu
for d in "$@"; do mkdir -p -- "$d"; chmod 0755 -- "$d"; done
"""


def is_package_name(name: object) -> bool:
    """Whether `name` is one Debian package name apt-get takes (see `PACKAGE_NAME`).

    >>> is_package_name("qemu-utils"), is_package_name("a b")
    (True, False)
    """
    return isinstance(name, str) and bool(PACKAGE_NAME.fullmatch(name)) and len(name) <= MAX_PACKAGE_NAME


def check_package(name: str) -> str:
    """A Debian package name that can go on an apt-get command line.

    >>> check_package("htop"), check_package("libvirt-daemon:amd64=9.0.0-4")
    ('htop', 'libvirt-daemon:amd64=9.0.0-4')
    >>> check_package("--allow-unauthenticated")
    Traceback (most recent call last):
    ...
    vm5k.errors.UsageError: invalid package name '--allow-unauthenticated'
    """
    if not is_package_name(name):
        raise UsageError(f"invalid package name {name!r}")
    return name


def packages_for(extra: Iterable[str], *, service: bool) -> list[str]:
    """The Debian packages a host needs: the base set, dnsmasq on the service node, then the user's."""
    wanted = list(BASE_PACKAGES) + (list(SERVICE_PACKAGES) if service else [])
    for name in extra:
        if name not in wanted:
            wanted.append(name)
    return wanted


def packages_command(packages: Sequence[str], upgrade: bool, layout: HostLayout) -> list[str]:
    """Install what is missing of `packages` (refreshing indexes only then); upgrade all when asked.

    >>> packages_command(["qemu-utils"], False, HostLayout("r1"))[3:]
    ['vm5k-packages', '0', '/tmp/vm5k/runs/r1/host/apt.log', 'qemu-utils']
    """
    return ["sh", "-c", PACKAGES_SCRIPT, "vm5k-packages", "1" if upgrade else "0",
            f"{layout.host_changes_dir}/apt.log", *packages]


def commands_command(service: bool) -> list[str]:
    """Check that the commands vm5k calls exist (also on hosts that are not Debian)."""
    return ["sh", "-c", COMMANDS_SCRIPT, "vm5k-commands", *REQUIRED_COMMANDS,
            *(SERVICE_COMMANDS if service else ())]


def libvirt_command() -> list[str]:
    """Start libvirt where it does not run, fix ``/dev/kvm``, wait until it answers."""
    return ["sh", "-c", LIBVIRT_SCRIPT, "vm5k-libvirt"]


def folders_command(layout: HostLayout) -> list[str]:
    """Create vm5k's folders on a host: base, runs, the run's folders, the image cache."""
    folders = [layout.base, layout.runs_dir, *layout.run_folders(), layout.images_dir, layout.host_facts_dir]
    return ["sh", "-c", FOLDERS_SCRIPT, "vm5k-folders", *folders]
