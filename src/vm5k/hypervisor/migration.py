"""Live migration of a run's VMs between its hosts: libvirt peer-to-peer over SSH, disks copied by QEMU.

What a migration needs, made before anything moves (none of it exists after a deployment):

- transport: the source's libvirtd connects to the destination's with libvirt's libssh2 transport
  (``qemu+libssh2://root@ADDRESS/system?keyfile=...&known_hosts=...&known_hosts_verify=normal``) using the
  run's *migration key* (made by the frontend, its private half in the run's folder on every host, its
  public half in root's ``authorized_keys`` of every host with the comment ``vm5k-migration-<run>``) and a
  ``known_hosts`` of the run's hosts' own keys (read through vm5k's SSH connections, which checked them):
  never a password, never host-key checking turned off. `destroy_run` removes both;
- memory: over TCP to the destination's address on the hosts' network (``--migrateuri tcp://ADDRESS``);
- disk: ``-l all`` gives blank overlays, not shared storage, so the overlay's data is always copied:
  QEMU's incremental storage copy (``--copy-storage-inc --migrate-disks vda``, NBD to the destination's
  address) onto an overlay made first at the destination with the same backing file and size;
- the rest the domain refers to is made at the destination first: the cloud-init seed (a read-only disk,
  not copied by QEMU), the run's folders (the console file's among them), the domain XML; the kernel and
  initrd of direct boot are in every host's image cache (checked).

Afterwards the domain is defined on the destination only (``--persistent --undefinesource``), the
source's files of the VM are removed (unless ``-l all``: every host keeps a blank overlay), and the VM is
waited for until it answers SSH through its new host.

>>> print(libvirt_uri("10.0.0.2", HostLayout("r1")))
qemu+libssh2://root@10.0.0.2/system?keyfile=/tmp/vm5k/runs/r1/migration/key&known_hosts=/tmp/vm5k/runs/r1/migration/known_hosts&known_hosts_verify=normal&sshauth=privkey
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass

import asyncssh

from vm5k.errors import RemoteError
from vm5k.hypervisor import lifecycle
from vm5k.hypervisor.disks import pack
from vm5k.hypervisor.layout import HostLayout
from vm5k.hypervisor.operations import FleetChange, remove_command
from vm5k.hypervisor.runtime import HostRuntime
from vm5k.hypervisor.settings import RunSettings
from vm5k.hypervisor.state import mark_vm_ko, meta, short
from vm5k.remote import TunnelRunner
from vm5k.topology import VM_OK, Topology

log = logging.getLogger(__name__)

KEY_COMMENT = "vm5k-migration-{run}"


def key_dir(layout: HostLayout) -> str:
    return f"{layout.run_dir}/migration"


def libvirt_uri(address: str, layout: HostLayout) -> str:
    """The destination's libvirt, as the source's libvirtd reaches it (see the module docstring)."""
    folder = key_dir(layout)
    return (f"qemu+libssh2://root@{address}/system?keyfile={folder}/key&known_hosts={folder}/known_hosts"
            "&known_hosts_verify=normal&sshauth=privkey")


def make_key(comment: str) -> tuple[bytes, str]:
    """A new migration key pair: the private key and the public line. ECDSA in PEM: libssh2 reads it with
    every crypto backend, and its signatures are accepted by current OpenSSH servers (libssh2 < 1.11 signs
    RSA with SHA-1 only, which OpenSSH >= 8.8 refuses)."""
    key = asyncssh.generate_private_key("ecdsa-sha2-nistp256", comment=comment)
    return key.export_private_key("pkcs1-pem"), key.export_public_key().decode().strip()


#: $1 key folder, $2 the public key line, $3 its comment; the private key on stdin. Installs the run's
#: migration key on a host (idempotent) and prints the host's own public keys ("<type> <base64>" lines)
#: for the others' known_hosts.
INSTALL_SCRIPT = r"""
set -eu
folder=$1 public=$2 comment=$3
mkdir -p "$folder" /root/.ssh
chmod 0700 "$folder" /root/.ssh
(umask 077; cat > "$folder/key.tmp") && mv -f "$folder/key.tmp" "$folder/key"
touch /root/.ssh/authorized_keys
f=/root/.ssh/authorized_keys
if ! grep -qxF -- "$public" "$f"; then  # a former key of the run is replaced
    { grep -vF -- "$comment" "$f" || true; printf '%s\n' "$public"; } > "$f.vm5k-tmp"
    cat "$f.vm5k-tmp" > "$f" && rm -f -- "$f.vm5k-tmp"
fi
for pub in /etc/ssh/ssh_host_*_key.pub; do [ -f "$pub" ] && cut -d' ' -f1,2 "$pub"; done
"""

#: $1 the run's key comment: removes the run's line from root's authorized_keys (destroy).
UNINSTALL_SCRIPT = r"""
f=/root/.ssh/authorized_keys
[ -f "$f" ] || exit 0
grep -vF -- "$1" "$f" > "$f.vm5k-tmp" || true
cat "$f.vm5k-tmp" > "$f" && rm -f -- "$f.vm5k-tmp"
"""


def uninstall_command(run_id: str) -> list[str]:
    return ["sh", "-c", UNINSTALL_SCRIPT, "vm5k-migration-off", KEY_COMMENT.format(run=run_id)]


#: $1 disk, $2 seed ISO, $3 domain XML: the disk's virtual size in bytes, then both files in base64, one
#: per line (what the destination needs, read in one round trip).
READ_SCRIPT = r"""
set -eu
qemu-img info -U --output=json "$1" | sed -n 's/.*"virtual-size": *\([0-9]*\).*/\1/p' | head -n 1
base64 -w0 "$2"; echo
base64 -w0 "$3"; echo
"""

#: $1 folders (colon separated), $2 disk, $3 base, $4 base format, $5 size in bytes, $6 kernel, $7 initrd,
#: $8 the run folder; on stdin a tar of the seed ISO and the domain XML (paths relative to the run folder).
PREPARE_SCRIPT = r"""
set -eu
folders=$1 disk=$2 base=$3 fmt=$4 size=$5 kernel=$6 initrd=$7 run=$8
old=$IFS; IFS=:
for d in $folders; do mkdir -p "$d" && chmod 0755 "$d"; done
IFS=$old
[ -f "$base" ] || { echo "backing file $base is missing" >&2; exit 3; }
for f in "$kernel" "$initrd"; do
    [ -z "$f" ] || [ -f "$f" ] || { echo "boot file $f is missing" >&2; exit 3; }
done
tar -xf - -C "$run" --no-same-owner --no-overwrite-dir
rm -f -- "$disk"
qemu-img create -q -f qcow2 -F "$fmt" -b "$base" "$disk" "$size"
"""

#: $1 domain, $2 libvirt URI, $3 destination address. The live migration itself.
MIGRATE_SCRIPT = r"""
set -u
virsh -q -c qemu:///system migrate --live --p2p --persistent --undefinesource --copy-storage-inc \
    --migrate-disks vda --migrateuri "tcp://$3" --disks-uri "tcp://$3" "$1" "$2" 2>&1 | tr '\n' ' '
status=$?
state=$(virsh -q -c qemu:///system domstate "$1" 2>/dev/null)
[ -z "$state" ] && echo "moved" && exit 0
echo "still here: $state"
exit 1
"""


@dataclass(frozen=True)
class Move:
    """One VM from one host to another."""

    vm: str
    source: str
    dest: str


class Migrations:
    """Migrates VMs of a topology (see the module docstring); `run` returns VM id → None or why not."""

    def __init__(self, topo: Topology, ssh: TunnelRunner, settings: RunSettings, key: bytes, public: str,
                 parallel: int = 2) -> None:
        self.topo = topo
        self.ssh = ssh
        self.settings = settings
        self.layout = settings.layout
        self.key = key
        self.public = public
        self.window = asyncio.Semaphore(max(1, parallel))
        self.host_keys: dict[str, list[str]] = {}

    async def _run(self, host: str, command: list[str], timeout: float = 120, input: bytes | None = None
                   ) -> str:
        result = (await self.ssh.run([host], command, timeout=timeout, input=input))[0]
        if not result.ok:
            raise RemoteError(f"{host}: {short(result.stderr or result.describe(), 400)}")
        return result.stdout

    async def install(self, hosts: list[str]) -> None:
        """The migration key on every host involved, and each source's known_hosts of the destinations."""
        comment = KEY_COMMENT.format(run=self.settings.run_id)
        folder = key_dir(self.layout)

        async def one(host: str) -> None:
            out = await self._run(host, ["sh", "-c", INSTALL_SCRIPT, "vm5k-migration-on", folder, self.public,
                                         comment], input=self.key)
            self.host_keys[host] = [line.strip() for line in out.splitlines() if line.strip()]

        await asyncio.gather(*(one(host) for host in hosts))
        lines = []
        for host in hosts:
            address = HostRuntime.of(self.topo.host(host)).address
            lines += [f"{address} {key}" for key in self.host_keys.get(host, [])]
        text = "".join(f"{line}\n" for line in lines)
        for host in hosts:
            written = (await self.ssh.write_text([host], f"{folder}/known_hosts", text, timeout=60))[0]
            if not written.ok:
                raise RemoteError(f"{host}: cannot write the migration known_hosts: {written.describe()}")

    async def run(self, moves: list[Move]) -> dict[str, str | None]:
        hosts = sorted({move.source for move in moves} | {move.dest for move in moves})
        try:
            await self.install(hosts)
        except RemoteError as error:
            return {move.vm: f"preparing the hosts: {error}" for move in moves}
        outcomes = await asyncio.gather(*(self.one(move) for move in moves))
        return {move.vm: why for move, why in zip(moves, outcomes, strict=True)}

    async def one(self, move: Move) -> str | None:
        async with self.window:
            try:
                await self._prepare(move)
            except RemoteError as error:
                await self._clean(move.dest, move.vm)
                return f"preparing {move.dest}: {error}"
            vm = self.topo.vm(move.vm)
            address = HostRuntime.of(self.topo.host(move.dest)).address
            script = ["sh", "-c", MIGRATE_SCRIPT, "vm5k-migrate", self.layout.domain_name(move.vm),
                      libvirt_uri(address, self.layout), address]
            log.info("%s: live migration from %s to %s begun", move.vm, move.source, move.dest)
            result = (await self.ssh.run([move.source], script, timeout=3600))[0]
            if not result.ok or "moved" not in result.stdout:
                await self._clean(move.dest, move.vm)
                return f"virsh migrate: {short(result.stdout or result.describe(), 500)}"
            log.info("%s migrated from %s to %s", move.vm, move.source, move.dest)
            self.topo.place(vm, move.dest)
            cleaning = None
            if self.settings.disk_location != "all":  # the source's copy goes while the VM is waited for
                cleaning = asyncio.ensure_future(
                    self.ssh.run([move.source], remove_command(self.layout, [move.vm]), timeout=120))
            waited = await FleetChange(self.topo, self.ssh, self.settings).wait_login(move.dest, vm)
            if cleaning is not None:
                await cleaning
            if waited is None:
                vm.state, vm.reason = VM_OK, None
            else:
                mark_vm_ko(vm, f"after its migration to {move.dest}: {waited}")
            return waited

    async def _prepare(self, move: Move) -> None:
        layout = self.layout
        vm = self.topo.vm(move.vm)
        image = meta(self.topo).get("images", {}).get(vm.backing_file or "")
        if image is None:
            raise RemoteError(f"the image {vm.backing_file} was not distributed")
        read = await self._run(move.source, ["sh", "-c", READ_SCRIPT, "vm5k-migration-read",
                                             layout.disk(move.vm), layout.seed_iso(move.vm),
                                             layout.domain_xml(move.vm)])
        size, seed, xml = ([*read.splitlines(), "", "", ""])[:3]
        if not size.strip().isdigit():
            raise RemoteError(f"cannot read the size of {layout.disk(move.vm)} on {move.source}")
        inside = len(layout.run_dir) + 1
        archive = pack({layout.seed_iso(move.vm)[inside:]: base64.b64decode(seed),
                        layout.domain_xml(move.vm)[inside:]: base64.b64decode(xml)})
        folders = ":".join([*layout.run_folders(), layout.seed_dir(move.vm)])
        await self._run(move.dest, ["sh", "-c", PREPARE_SCRIPT, "vm5k-migration-prepare", folders,
                                    layout.disk(move.vm), image["path"], image["format"], size.strip(),
                                    image.get("kernel") or "", image.get("initrd") or "", layout.run_dir],
                        input=archive)

    async def _clean(self, host: str, vm_id: str) -> None:
        """A failed migration leaves nothing at the destination (the VM runs on at the source)."""
        if self.settings.disk_location == "all":
            return
        try:
            await self.ssh.run([host], remove_command(self.layout, [vm_id]), timeout=120)
        except (RemoteError, OSError) as error:
            log.warning("cleaning %s after a failed migration of %s: %s", host, vm_id, error)



#: $1 domain: aborts its migration job if one runs, and waits until it has ended (at most 60 s).
ABORT_SCRIPT = r"""
virsh -q -c qemu:///system domjobabort "$1" >/dev/null 2>&1
i=0
while [ $i -lt 120 ] && virsh -q -c qemu:///system domjobinfo "$1" 2>/dev/null | grep -q Unbounded; do
    sleep 0.5; i=$((i + 1))
done
exit 0
"""


async def settle(topo: Topology, ssh: TunnelRunner, settings: RunSettings, move: Move) -> str:
    """After an interrupted migration: ask both hosts where the VM's domain runs (or sits paused), keep
    that one, remove the other; returns the host kept. Where both have it (a migration cut halfway, the
    source still running it), the source wins; where neither runs it, the host that still defines it (the
    source first) is kept and the VM is left for the VMs step to restart."""
    layout = settings.layout
    # a migration still going on (its virsh may outlive the vm5k that started it) is stopped first, so
    # that the hosts' answers below stay true
    await ssh.run([move.source], ["sh", "-c", ABORT_SCRIPT, "vm5k-migration-abort",
                                  layout.domain_name(move.vm)], timeout=120)
    states: dict[str, str] = {}
    for host in (move.source, move.dest):
        result = (await ssh.run([host], lifecycle.states_command(layout), timeout=60))[0]
        if not result.ok:
            raise RemoteError(f"{host}: {result.describe()}")
        states[host] = lifecycle.parse_states(result.stdout, layout).get(move.vm, "")
    alive = [host for host in (move.source, move.dest) if states[host] in ("running", "paused")]
    defined = [host for host in (move.source, move.dest) if states[host]]
    keep = (move.source if move.source in alive else alive[0]) if alive else \
        (defined[0] if defined else move.source)
    other = move.dest if keep == move.source else move.source
    if settings.disk_location == "all":
        command = lifecycle.destroy_command(layout, [move.vm])
    else:
        command = remove_command(layout, [move.vm])
    cleaned = (await ssh.run([other], command, timeout=120))[0]
    if not cleaned.ok:
        raise RemoteError(f"{other}: {cleaned.describe()}")
    vm = topo.vm(move.vm)
    if vm.host != keep:
        topo.place(vm, keep)
    if states[keep] == "paused":  # a migration stopped at its switch-over: the guest goes on here
        await ssh.run([keep], [*lifecycle.VIRSH, "resume", layout.domain_name(move.vm)], timeout=60)
    # KO until the VMs step (run next by the resume) has seen it answer on `keep`: started again there if
    # it does not run
    mark_vm_ko(vm, f"its migration was interrupted: to be checked on {keep}")
    log.info("interrupted migration of %s: it runs on %s (%s there, %s on %s)", move.vm, keep,
             states[keep] or "undefined", states[other] or "undefined", other)
    return keep
