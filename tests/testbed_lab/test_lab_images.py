"""The guest images: cached builds, the sidecar, the canary, and the `debian` flavour honouring the seed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from g5k_testbed.lab.accel import canary_boots, hardware_kvm_impossible
from g5k_testbed.lab.image.install import INSTALL_NAMES
from lab_fixtures import LabTestbed, create_vm, destroy_vm, prepare_bridge, serial, subnet_pairs, wait_ready

pytestmark = pytest.mark.integration

VIRT_IMAGES = Path("/grid5000/virt-images")


def image_command(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "g5k_testbed.cli", "image", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_the_default_image_is_cached_and_installed(lab_testbed: LabTestbed) -> None:
    start = time.monotonic()
    proc = image_command()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == lab_testbed.image == str(VIRT_IMAGES / "debian12-x64-min.qcow2")
    assert time.monotonic() - start < 60  # nothing rebuilt: only fingerprints were checked
    boot = json.loads(Path(f"{lab_testbed.image}.boot.json").read_text())
    assert boot["flavour"] == "tiny" and "root=LABEL=vm5k-root" in boot["cmdline"]
    info = subprocess.run(["qemu-img", "info", "--output=json", lab_testbed.image], capture_output=True,
                          text=True, check=True)
    assert json.loads(info.stdout)["format"] == "qcow2"


def test_the_canary_boots_the_image_kernel(lab_testbed: LabTestbed) -> None:
    assert hardware_kvm_impossible() is None or lab_testbed.refresh()["accel"] == "tcg"
    ok, seconds = canary_boots(Path(lab_testbed.image), "tcg", timeout=120)
    assert ok, f"no canary marker after {seconds:.0f} s"


@pytest.mark.slow
def test_the_debian_flavour_boots_and_honours_the_seed(lab_testbed: LabTestbed) -> None:
    name = INSTALL_NAMES["debian"]
    image = VIRT_IMAGES / f"{name}.qcow2"
    proc = image_command("--flavour", "debian")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(image)
    node = lab_testbed.nodes[0]
    site = lab_testbed.grid5000().sites["rennes"]
    job = site.jobs.create({"resources": "slash_22=1,walltime=0:30:00", "command": "sleep 3600"})
    vm = None
    try:
        while (job.refresh(), job.state)[1] != "running":
            time.sleep(0.5)
        ip, mac = subnet_pairs(job.resources_by_type["subnets"][0])[20]
        prepare_bridge(lab_testbed, node)
        extra = ("write_files:\n  - path: /etc/lab-seed\n    content: |\n      from the seed\n"
                 "runcmd:\n  - [sh, -c, 'echo ran > /root/runcmd-ran']\n")
        vm = create_vm(lab_testbed, node, "lab-debian", mac, ip, memory_mib=384, image=str(image),
                       user_data_extra=extra)
        wait_ready(lab_testbed, vm, timeout=400)
        assert "systemd" in lab_testbed.ssh_vm(vm, "cat /proc/1/comm").stdout
        assert lab_testbed.ssh_vm(vm, "hostname").stdout.strip() == "lab-debian"
        assert lab_testbed.ssh_vm(vm, "cat /etc/lab-seed").stdout == "from the seed\n"
        deadline = time.monotonic() + 60
        while lab_testbed.ssh_vm(vm, "cat /root/runcmd-ran", check=False).stdout.strip() != "ran":
            assert time.monotonic() < deadline, serial(lab_testbed, vm)[-2000:]
            time.sleep(1)
        assert f"ip={ip}" in serial(lab_testbed, vm)
    finally:
        if vm is not None:
            destroy_vm(lab_testbed, vm)
        job.delete()
