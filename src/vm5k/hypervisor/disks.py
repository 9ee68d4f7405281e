"""The files of each VM on a host, made in one round trip: seed ISO, disk, domain XML.

Why one round trip per host: a host with 30 VMs would otherwise take 90 SSH commands. The frontend packs
every VM's small files (``meta-data``, ``user-data``, domain XML) into one tar archive, sends it, and one
script per host unpacks it and, for each VM given as positional arguments, writes the seed ISO and the disk:

- a copy-on-write overlay ``qemu-img create -f qcow2 -F <fmt> -b <base> <disk> <hdd>G`` (always with the
  backing format: QEMU >= 6.1 refuses overlays without it), never smaller than the base image (QEMU would
  accept it and the guest would see a truncated disk);
- or, with ``real_file``, a full copy (``qemu-img convert``) grown to ``<hdd>G``.

With ``-l all`` every host gets every VM's disk and seed (migrations need them at the destination); only the
VM's own host defines the domain.

``--vm-clean-disks`` (`clean_command`) removes, before anything is created, the disks of vm5k runs that have
no libvirt domain left on the host (old runs' leftovers filling ``/tmp``) and this run's disks of VMs that
are not running. It never touches the image cache, nor a disk that a defined domain may use.

>>> entry = VmFiles("vm-1", "/c/base.qcow2", "qcow2", 10, False)
>>> prepare_command(HostLayout("r1"), "/tmp/vm5k/runs/r1/prepare.tar", [entry])[6:]
['vm-1', '/c/base.qcow2', 'qcow2', '10', '0']
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from vm5k.hypervisor.layout import DOMAIN_PREFIX, HostLayout
from vm5k.topology import validate_id

#: $1 run folder, $2 tar archive to unpack there (removed after), then 5 arguments per VM:
#: id, base image, base format, size in GiB, "1" for a full copy. Prints "ok <vm>" or "ko <vm> <why>".
PREPARE_SCRIPT = r"""
set -u
run=$1 tar=$2
shift 2
if [ -f "$tar" ]; then
    tar -xf "$tar" -C "$run" --no-same-owner --no-overwrite-dir || { echo "cannot unpack $tar" >&2; exit 70; }
    rm -f -- "$tar"
fi
if command -v genisoimage >/dev/null 2>&1; then mkiso=genisoimage
elif command -v mkisofs >/dev/null 2>&1; then mkiso=mkisofs
else mkiso="xorriso -as mkisofs"; fi
while [ $# -ge 5 ]; do
    vm=$1 base=$2 fmt=$3 size=$4 copy=$5
    shift 5
    disk="$run/disks/$vm.qcow2" seed="$run/seeds/$vm" iso="$run/seeds/$vm.iso"
    err="$run/disks/$vm.err"
    if [ -f "$seed/user-data" ]; then
        chmod 0755 "$seed"
        if ! $mkiso -quiet -output "$iso.tmp" -volid cidata -joliet -rock \
                "$seed/meta-data" "$seed/user-data" 2>"$err"; then
            echo "ko $vm seed: $(tail -n 1 "$err")"; continue
        fi
        chmod 0644 "$iso.tmp" && mv -f "$iso.tmp" "$iso"
    fi
    if [ ! -f "$base" ]; then echo "ko $vm base image $base is missing"; continue; fi
    vsize=$(qemu-img info -U --output=json "$base" 2>/dev/null \
        | sed -n 's/.*"virtual-size": *\([0-9]*\).*/\1/p' | head -n 1)
    want=$((size * 1073741824))
    rm -f -- "$disk" "$disk.tmp"
    if [ "$copy" = 1 ]; then
        if qemu-img convert -f "$fmt" -O qcow2 "$base" "$disk.tmp" 2>"$err" \
                && { [ -z "$vsize" ] || [ "$want" -le "$vsize" ] \
                     || qemu-img resize -q "$disk.tmp" "$want" 2>>"$err"; } \
                && mv -f "$disk.tmp" "$disk"; then
            echo "ok $vm"
        else
            echo "ko $vm disk copy: $(tail -n 1 "$err")"
        fi
    else
        if [ -n "$vsize" ] && [ "$want" -lt "$vsize" ]; then sizearg=""; else sizearg="$want"; fi
        if qemu-img create -q -f qcow2 -F "$fmt" -b "$base" "$disk" $sizearg 2>"$err"; then
            echo "ok $vm"
        else
            echo "ko $vm disk: $(tail -n 1 "$err")"
        fi
    fi
    rm -f -- "$err"
done
"""

#: $1 run folder, $2 libvirt domain prefix of the run, $3 runs folder, $4 vm5k's domain prefix ("vm5k_"),
#: then the ids of this run's VMs to keep (running ones). Prints what it removed.
CLEAN_SCRIPT = r"""
set -u
run=$1 prefix=$2 runs=$3 all_prefix=$4
shift 4
domains=$(virsh -c qemu:///system list --all --name 2>/dev/null)
for old in "$runs"/*/; do
    old=${old%/}
    id=${old##*/}
    [ "$old" = "$run" ] && continue
    [ -d "$old/disks" ] || continue
    used=0
    for d in $domains; do case "$d" in "$all_prefix$id"_*) used=1 ;; esac; done
    if [ "$used" = 0 ]; then rm -rf -- "$old/disks" && echo "removed disks of run $id"; fi
done
for disk in "$run"/disks/*.qcow2; do
    [ -f "$disk" ] || continue
    vm=${disk##*/}; vm=${vm%.qcow2}
    keep=0
    for k in "$@"; do [ "$k" = "$vm" ] && keep=1; done
    [ "$keep" = 1 ] && continue
    rm -f -- "$disk" && echo "removed disk of $vm"
done
"""


@dataclass(frozen=True)
class VmFiles:
    """What the prepare script needs to know about one VM on one host."""

    vm_id: str
    base: str  # the cached base image on the host
    fmt: str  # its format
    size_gib: int
    full_copy: bool

    def args(self) -> list[str]:
        return [validate_id(self.vm_id, "VM id"), self.base, self.fmt, str(self.size_gib),
                "1" if self.full_copy else "0"]


def pack(files: Mapping[str, str | bytes]) -> bytes:
    """A tar archive (in memory) of relative path → content, every member a regular file (mode 0644).

    >>> data = pack({"seeds/vm-1/meta-data": "instance-id: x\\n"})
    >>> tarfile.open(fileobj=io.BytesIO(data)).getnames()
    ['seeds/vm-1/meta-data']
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in files.items():
            if name.startswith("/") or ".." in name.split("/"):
                raise ValueError(f"archive member outside the run folder: {name!r}")
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def prepare_command(layout: HostLayout, archive: str, entries: Iterable[VmFiles]) -> list[str]:
    """The argument list that unpacks `archive` and makes each VM's seed ISO and disk."""
    args: list[str] = []
    for entry in entries:
        args += entry.args()
    return ["sh", "-c", PREPARE_SCRIPT, "vm5k-prepare", layout.run_dir, archive, *args]


def parse_prepare(stdout: str) -> dict[str, str | None]:
    """VM id → None when its files are ready, else the reason.

    >>> parse_prepare("ok vm-1\\nko vm-2 disk: No space left on device\\n")
    {'vm-1': None, 'vm-2': 'disk: No space left on device'}
    """
    outcome: dict[str, str | None] = {}
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        vm, _, why = rest.partition(" ")
        if word == "ok" and vm:
            outcome[vm] = None
        elif word == "ko" and vm:
            outcome[vm] = why.strip() or "failed"
    return outcome


def clean_command(layout: HostLayout, keep: Iterable[str]) -> list[str]:
    """``--vm-clean-disks``: old runs' orphaned disks and this run's disks not in `keep` (see above)."""
    return ["sh", "-c", CLEAN_SCRIPT, "vm5k-clean", layout.run_dir, layout.domain_prefix, layout.runs_dir,
            DOMAIN_PREFIX, *(validate_id(vm, "VM id") for vm in keep)]
