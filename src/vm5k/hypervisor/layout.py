"""Where vm5k puts things on a host, and what it names them: one folder per run, one shared image cache.

Why one folder per run: two runs on the same hosts must never overwrite each other's disks, seeds, consoles
or dnsmasq files, and a run's destroy must find exactly its own files. Everything a run writes on a host
lives under ``<base>/runs/<run id>/`` (``base`` is ``/tmp/vm5k`` by default: on Grid'5000 ``/tmp`` is the
big local partition of a deployed node, on the testbed it is the node's private tmpfs):

    <base>/runs/<run>/                 the run's folder (removed by destroy)
        disks/<vm>.qcow2               the VM's disk (an overlay on the cached base image, or a full copy)
        seeds/<vm>/{meta-data,user-data}  the cloud-init NoCloud files, and seeds/<vm>.iso (label cidata)
        domains/<vm>.xml               the libvirt domain as defined
        console/<vm>.log               the VM's serial console (its last lines explain a KO)
        dnsmasq/                       the service node's dnsmasq: config, hosts, dhcp-hosts, leases, pid, log
        host/                          what this run changed on the host and must undo (resolver, routes)
    <base>/images/<sha256>/<name>      the shared cache of backing files, kernels and initrds, by content:
                                       never removed by ``--vm-clean-disks`` nor by a run's destroy
    <base>/host/                       facts remembered across runs: ``accel`` (the accelerator of this
                                       boot), ``canary.img`` (the boot sector that tells it)

libvirt domains are named ``vm5k_<run>_<vm>``: ``_`` cannot appear in a run or VM id (both match
``[A-Za-z0-9][A-Za-z0-9.-]*``), so a run's prefix never matches another run's domains.

>>> layout = HostLayout("r1")
>>> layout.disk("vm-1")
'/tmp/vm5k/runs/r1/disks/vm-1.qcow2'
>>> layout.domain_name("vm-1")
'vm5k_r1_vm-1'
>>> layout.vm_of_domain("vm5k_r1_vm-1"), layout.vm_of_domain("vm5k_r10_vm-1")
('vm-1', None)
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from vm5k.errors import UsageError
from vm5k.topology import validate_id

DEFAULT_BASE = "/tmp/vm5k"
DOMAIN_PREFIX = "vm5k_"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SAFE_BASE = re.compile(r"/[A-Za-z0-9._/+-]*")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def check_base(base: str) -> str:
    """An absolute folder made of safe characters, at least one level below ``/`` (it is removed by runs)."""
    norm = posixpath.normpath(base)
    system = ("/", "/tmp", "/var", "/root", "/home")
    if not _SAFE_BASE.fullmatch(base) or norm in system or ".." in base.split("/"):
        raise UsageError(f"invalid vm5k folder on hosts {base!r}: an absolute path of letters, digits, "
                         "'.', '_', '-', '+', below / and not a system folder")
    return norm


def cache_name(name: str) -> str:
    """A file name for the cache: the source's base name when it is safe, else a neutral one.

    >>> cache_name("debian12-x64-min.qcow2"), cache_name("my image;rm.qcow2")
    ('debian12-x64-min.qcow2', 'file')
    """
    base = posixpath.basename(name)
    return base if _FILE_NAME.fullmatch(base) and len(base) <= 128 else "file"


@dataclass(frozen=True)
class HostLayout:
    """The paths and names of one run on any host (the same on every host)."""

    run_id: str
    base: str = DEFAULT_BASE

    def __post_init__(self) -> None:
        validate_id(self.run_id, "run id")
        object.__setattr__(self, "base", check_base(self.base))

    # -- the run's folder ---------------------------------------------------------------------------
    @property
    def runs_dir(self) -> str:
        return f"{self.base}/runs"

    @property
    def run_dir(self) -> str:
        return f"{self.runs_dir}/{self.run_id}"

    @property
    def disks_dir(self) -> str:
        return f"{self.run_dir}/disks"

    @property
    def seeds_dir(self) -> str:
        return f"{self.run_dir}/seeds"

    @property
    def domains_dir(self) -> str:
        return f"{self.run_dir}/domains"

    @property
    def console_dir(self) -> str:
        return f"{self.run_dir}/console"

    @property
    def dnsmasq_dir(self) -> str:
        return f"{self.run_dir}/dnsmasq"

    @property
    def host_changes_dir(self) -> str:
        return f"{self.run_dir}/host"

    def run_folders(self) -> list[str]:
        """Every folder of the run, parents first (created world-traversable: QEMU runs as libvirt-qemu)."""
        return [self.run_dir, self.disks_dir, self.seeds_dir, self.domains_dir, self.console_dir,
                self.dnsmasq_dir, self.host_changes_dir]

    def disk(self, vm_id: str) -> str:
        return f"{self.disks_dir}/{validate_id(vm_id, 'VM id')}.qcow2"

    def seed_dir(self, vm_id: str) -> str:
        return f"{self.seeds_dir}/{validate_id(vm_id, 'VM id')}"

    def seed_iso(self, vm_id: str) -> str:
        return f"{self.seeds_dir}/{validate_id(vm_id, 'VM id')}.iso"

    def domain_xml(self, vm_id: str) -> str:
        return f"{self.domains_dir}/{validate_id(vm_id, 'VM id')}.xml"

    def console(self, vm_id: str) -> str:
        return f"{self.console_dir}/{validate_id(vm_id, 'VM id')}.log"

    # -- libvirt names ------------------------------------------------------------------------------
    @property
    def domain_prefix(self) -> str:
        return f"{DOMAIN_PREFIX}{self.run_id}_"

    def domain_name(self, vm_id: str) -> str:
        return f"{self.domain_prefix}{validate_id(vm_id, 'VM id')}"

    def vm_of_domain(self, name: str) -> str | None:
        """The VM id of one of this run's domains, None for any other domain."""
        if not name.startswith(self.domain_prefix):
            return None
        rest = name[len(self.domain_prefix):]
        try:
            return validate_id(rest, "VM id")
        except UsageError:
            return None

    # -- shared, kept across runs -------------------------------------------------------------------
    @property
    def images_dir(self) -> str:
        return f"{self.base}/images"

    def cached(self, sha256: str, name: str) -> str:
        """Where a file with this content lives in the shared cache."""
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a sha256 digest: {sha256!r}")
        return f"{self.images_dir}/{sha256}/{cache_name(name)}"

    @property
    def host_facts_dir(self) -> str:
        return f"{self.base}/host"

    @property
    def accel_memo(self) -> str:
        """The accelerator this boot of the host was found to run (read with the facts, written by accel)."""
        return f"{self.host_facts_dir}/accel"

    @property
    def canary_image(self) -> str:
        """The accelerator's canary boot sector."""
        return f"{self.host_facts_dir}/canary.img"
