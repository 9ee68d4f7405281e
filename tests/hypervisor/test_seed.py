"""The cloud-init seed: valid YAML that says exactly what it should, whatever the key's comment holds."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vm5k.errors import UsageError
from vm5k.hypervisor.seed import meta_data, user_data

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOsomething alice@frontend"


def test_meta_data_names_the_instance_per_run() -> None:
    assert yaml.safe_load(meta_data("r1", "vm-1")) == {"instance-id": "vm5k-r1-vm-1",
                                                        "local-hostname": "vm-1"}
    assert yaml.safe_load(meta_data("r2", "vm-1"))["instance-id"] != "vm5k-r1-vm-1"


def test_user_data_kavlan_mode_has_hostname_and_key_only() -> None:
    text = user_data("vm-1", KEY)
    assert text.startswith("#cloud-config\n")
    data = yaml.safe_load(text)
    assert data["hostname"] == "vm-1"
    assert data["ssh_authorized_keys"] == [KEY]
    assert data["disable_root"] is False
    assert "resolv_conf" not in data and "manage_resolv_conf" not in data


def test_user_data_subnet_mode_points_the_resolver_at_the_service_node() -> None:
    data = yaml.safe_load(user_data("vm-1", KEY, nameservers=["10.158.3.254"], domain="r1.vm5k"))
    assert data["manage_resolv_conf"] is True
    assert data["resolv_conf"] == {"nameservers": ["10.158.3.254"], "searchdomains": ["r1.vm5k"]}
    assert data["fqdn"] == "vm-1.r1.vm5k"


@pytest.mark.parametrize("key", [
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ== bob@x",
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY= c",
    "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29t= d",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOx key: with #: yaml 'specials' & \"quotes\" {x} [y]",
])
def test_any_key_type_and_any_comment_round_trip(key: str) -> None:
    assert yaml.safe_load(user_data("vm-1", key))["ssh_authorized_keys"] == [key]


@pytest.mark.parametrize("key", ["", "not a key", "ssh-ed25519 AAAA\nruncmd: [reboot]",
                                 "ssh-ed25519 AA AA\r\nx"])
def test_malformed_keys_are_refused(key: str) -> None:
    with pytest.raises(UsageError):
        user_data("vm-1", key)


@pytest.mark.parametrize("vm_id", ["vm-1\nruncmd: [reboot]", "vm 1", "$(reboot)", ""])
def test_hostile_vm_ids_never_reach_the_seed(vm_id: str) -> None:
    with pytest.raises(UsageError):
        user_data(vm_id, KEY)
    with pytest.raises(UsageError):
        meta_data("r1", vm_id)


def test_seed_iso_is_labelled_cidata(tmp_path: Path) -> None:
    """The ISO the hosts build (same command as PREPARE_SCRIPT) carries the NoCloud label and both files."""
    if shutil.which("genisoimage") is None or shutil.which("isoinfo") is None:
        pytest.skip("genisoimage is needed")
    (tmp_path / "meta-data").write_text(meta_data("r1", "vm-1"))
    (tmp_path / "user-data").write_text(user_data("vm-1", KEY))
    iso = tmp_path / "seed.iso"
    subprocess.run(["genisoimage", "-quiet", "-output", str(iso), "-volid", "cidata", "-joliet", "-rock",
                    str(tmp_path / "meta-data"), str(tmp_path / "user-data")], check=True)
    info = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True,
                          check=True).stdout
    assert "Volume id: cidata" in info
    listing = subprocess.run(["isoinfo", "-R", "-f", "-i", str(iso)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert sorted(listing) == ["/meta-data", "/user-data"]
