"""KVM or TCG for the VMs of this machine, decided once and remembered.

"/dev/kvm opens" is not enough: on this kind of machine /dev/kvm is PVM (software nested virtualisation)
and an unmodified guest kernel hangs under it. So:

1. no /dev/kvm, `/sys/module/kvm_pvm` present, or no `vmx`/`svm` CPU flag: KVM cannot be hardware KVM,
   the answer is TCG at once (no canary, no waiting);
2. otherwise boot a canary (the guest image's kernel and initrd with `vm5k.canary`: it prints a marker and
   powers off) under KVM with a timeout, and remember the answer for this kernel and CPU.

The testbed reports the answer (`status --json` → `accel`); vm5k decides per host by itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from g5k_testbed.lab.layout import CACHE_DIR

CANARY_MARKER = "vm5k-canary: ok"
CANARY_TIMEOUT = 30


def hardware_kvm_impossible() -> str | None:
    """Why KVM cannot be hardware KVM here, or None when only a canary can tell."""
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm"
    if os.path.exists("/sys/module/kvm_pvm"):
        return "/dev/kvm is PVM (software nested virtualisation, /sys/module/kvm_pvm)"
    with open("/proc/cpuinfo") as handle:
        flags = {flag for line in handle if line.startswith("flags")
                 for flag in line.split(":", 1)[1].split()}
    if not flags & {"vmx", "svm"}:
        return "the CPU has no vmx/svm flag"
    return None


def _machine_key() -> str:
    with open("/proc/cpuinfo") as handle:
        cpu = [line for line in handle.read().splitlines() if line.startswith(("model name", "flags"))][:2]
    return hashlib.sha256("\n".join([os.uname().release, *cpu]).encode()).hexdigest()[:16]


def canary_boots(image: Path, accel: str, timeout: float = CANARY_TIMEOUT) -> tuple[bool, float]:
    """Boot the image's kernel + initrd with `vm5k.canary` under `accel`; (marker seen, seconds)."""
    boot = json.loads(Path(f"{image}.boot.json").read_text())
    folder = image.parent
    with tempfile.TemporaryDirectory(prefix="vm5k-canary-") as tmp:
        serial = Path(tmp) / "serial.log"
        accel_arg = "kvm" if accel == "kvm" else "tcg,tb-size=64"
        argv = ["qemu-system-x86_64", "-machine", "q35", "-accel", accel_arg, "-m", "256", "-smp", "1",
                "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-serial", f"file:{serial}", "-kernel", str(folder / boot["kernel"]),
                "-initrd", str(folder / boot["initrd"]),
                "-append", "console=ttyS0 panic=-1 quiet vm5k.canary"]
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        seen = False
        try:
            while time.monotonic() - start < timeout:
                if serial.exists() and CANARY_MARKER in serial.read_text(errors="replace"):
                    seen = True
                    break
                if proc.poll() is not None:
                    seen = serial.exists() and CANARY_MARKER in serial.read_text(errors="replace")
                    break
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        return seen, time.monotonic() - start


def decide(image: Path | None, progress: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """{"accel": "kvm"|"tcg", "reason": ...}, from the up-front checks, the remembered answer, or a canary."""
    reason = hardware_kvm_impossible()
    if reason is not None:
        return {"accel": "tcg", "reason": reason, "canary": False}
    memory = CACHE_DIR / "accel.json"
    key = _machine_key()
    try:
        known = json.loads(memory.read_text())
    except (FileNotFoundError, ValueError):
        known = {}
    if key in known:
        remembered: dict[str, Any] = known[key]
        return remembered
    if image is None or not Path(f"{image}.boot.json").exists():
        return {"accel": "tcg", "reason": "no guest image to boot a KVM canary with", "canary": False}
    progress("KVM canary boot")
    ok, seconds = canary_boots(image, "kvm")
    answer = {"accel": "kvm" if ok else "tcg", "canary": True,
              "reason": f"KVM canary {'booted' if ok else 'failed'} in {seconds:.1f} s"}
    known[key] = answer
    memory.parent.mkdir(parents=True, exist_ok=True)
    memory.write_text(json.dumps(known, indent=1))
    return answer
