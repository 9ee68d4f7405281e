"""A cloud-init NoCloud seed per VM: its name, the run's SSH key, and (subnet mode) its DNS server.

Why a seed instead of editing the image (the original mounted the base image with qemu-nbd to append keys):
the base image stays untouched and shared, every VM gets its own identity, and the same mechanism works on
every cloud image Grid'5000 ships. The seed is an ISO 9660 volume labelled ``cidata`` holding:

- ``meta-data``: ``instance-id`` (run and VM, so cloud-init treats a new run as a new instance) and
  ``local-hostname``;
- ``user-data``: ``#cloud-config`` with ``hostname``, ``fqdn`` when the run has a DNS domain, root's
  ``ssh_authorized_keys`` (the run's key, any key type) and, in subnet mode only, ``manage_resolv_conf`` /
  ``resolv_conf`` pointing the VM at the service node. In KaVLAN mode nothing else: vm5k's DHCP hands out the
  address, the router and the DNS server.

Both are written with PyYAML's ``safe_dump``: whatever a key comment or a name contains, it is quoted data.

>>> print(meta_data("r1", "vm-1"), end="")
instance-id: vm5k-r1-vm-1
local-hostname: vm-1
>>> print(user_data("vm-1", "ssh-ed25519 AAAAC3Nz k", nameservers=["10.0.0.2"]), end="")
#cloud-config
hostname: vm-1
preserve_hostname: false
disable_root: false
ssh_pwauth: false
ssh_authorized_keys:
- ssh-ed25519 AAAAC3Nz k
manage_resolv_conf: true
resolv_conf:
  nameservers:
  - 10.0.0.2
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from vm5k.hypervisor.settings import check_public_key
from vm5k.topology import validate_id

SEED_LABEL = "cidata"


def _dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=False, width=4096)


def meta_data(run_id: str, vm_id: str) -> str:
    """NoCloud ``meta-data``: a per-run instance id and the VM's hostname."""
    return _dump({"instance-id": f"vm5k-{validate_id(run_id, 'run id')}-{validate_id(vm_id, 'VM id')}",
                  "local-hostname": vm_id})


def user_data(vm_id: str, public_key: str, *, nameservers: Sequence[str] = (),
              domain: str | None = None) -> str:
    """NoCloud ``user-data`` (``#cloud-config``): hostname, root's key, and DNS servers when given."""
    data: dict[str, Any] = {"hostname": validate_id(vm_id, "VM id")}
    if domain:
        data["fqdn"] = f"{vm_id}.{validate_id(domain, 'DNS domain')}"
    data["preserve_hostname"] = False
    data["disable_root"] = False
    data["ssh_pwauth"] = False
    data["ssh_authorized_keys"] = [check_public_key(public_key)]
    if nameservers:
        resolv: dict[str, Any] = {"nameservers": list(nameservers)}
        if domain:
            resolv["searchdomains"] = [domain]
        data["manage_resolv_conf"] = True
        data["resolv_conf"] = resolv
    return "#cloud-config\n" + _dump(data)


#: $1: seed folder (holding meta-data and user-data), $2: the ISO to write. Uses whichever ISO writer exists.
ISO_SCRIPT = r"""
set -u
dir=$1 iso=$2
tmp="$iso.vm5k-tmp"
if command -v genisoimage >/dev/null 2>&1; then mk=genisoimage
elif command -v mkisofs >/dev/null 2>&1; then mk=mkisofs
elif command -v xorriso >/dev/null 2>&1; then mk="xorriso -as mkisofs"
else echo "no ISO writer (genisoimage, mkisofs or xorriso)" >&2; exit 50; fi
$mk -quiet -output "$tmp" -volid cidata -joliet -rock "$dir/meta-data" "$dir/user-data" || exit 51
chmod 0644 "$tmp" && mv -f "$tmp" "$iso"
"""
