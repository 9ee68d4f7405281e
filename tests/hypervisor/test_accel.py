"""The accelerator: decisions without a boot, and the canary boot sector really booting (under TCG here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vm5k.hypervisor.accel import (
    CANARY_EXIT_STATUS,
    CANARY_MARKER,
    Decision,
    canary_command,
    canary_image,
    canary_verdict,
    decide,
)
from vm5k.hypervisor.facts import HostFacts

REAL_KVM = HostFacts(kvm_dev=True, hw_virt=True, boot_id="boot-1")


@pytest.mark.parametrize("facts,reason", [
    (HostFacts(kvm_dev=False, hw_virt=True), "no /dev/kvm"),
    (HostFacts(kvm_dev=True, kvm_pvm=True, hw_virt=True), "PVM"),
    (HostFacts(kvm_dev=True, hw_virt=False), "no vmx/svm"),
])
def test_no_canary_when_kvm_cannot_be_hardware_kvm(facts: HostFacts, reason: str) -> None:
    decision = decide(facts)
    assert decision.accel == "tcg" and not decision.canary and reason in decision.reason


def test_canary_needed_then_remembered_for_this_boot_only() -> None:
    assert decide(REAL_KVM).canary
    assert decide(REAL_KVM, memo="boot-1 kvm canary booted in 0.8 s") == \
        Decision("kvm", "remembered: canary booted in 0.8 s")
    assert decide(REAL_KVM, memo="boot-1 tcg KVM canary failed").accel == "tcg"
    assert decide(REAL_KVM, memo="boot-0 tcg KVM canary failed").canary  # rebooted: probe again


def test_forced_accelerator_wins() -> None:
    assert decide(HostFacts(kvm_pvm=True), forced="kvm") == Decision("kvm", "forced to kvm")


def test_verdicts() -> None:
    assert canary_verdict(CANARY_EXIT_STATUS, CANARY_MARKER + "\n", 0.5).accel == "kvm"
    assert canary_verdict(124, "", 20.0).accel == "tcg"
    assert canary_verdict(1, "qemu: failed to initialize kvm", 0.1).accel == "tcg"


def test_canary_image_is_a_boot_sector() -> None:
    image = canary_image()
    assert len(image) == 512 and image[510:] == b"\x55\xaa" and CANARY_MARKER.encode() in image


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU is needed")
def test_canary_boots_and_exits_under_tcg(tmp_path: Path) -> None:
    """The same command as on hosts, with TCG instead of KVM (this machine's /dev/kvm is not hardware KVM)."""
    image = tmp_path / "canary.img"
    image.write_bytes(canary_image())
    argv = [arg if arg != "kvm" else "tcg" for arg in canary_command(str(image))]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert canary_verdict(result.returncode, result.stdout, 0.0).accel == "kvm"  # i.e. the canary answered
