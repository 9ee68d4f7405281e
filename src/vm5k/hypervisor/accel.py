"""KVM or TCG, decided per host: up-front checks, then a canary boot, remembered for the host's boot.

Why not trust ``/dev/kvm``: on some machines (this project's CI among them) ``/dev/kvm`` is PVM, a software
nested virtualisation that opens fine but hangs unmodified guest kernels; on Grid'5000 a node may lack the
KVM module or have virtualisation disabled in its firmware. So, per host:

1. no ``/dev/kvm``, ``/sys/module/kvm_pvm`` present, or no ``vmx``/``svm`` CPU flag: KVM cannot be hardware
   KVM, the answer is TCG at once (no canary: under PVM the canary below would even pass);
2. otherwise boot a canary under KVM: a 512-byte boot sector of ours (no guest image needed) that prints a
   marker on the serial port and leaves QEMU through the ``isa-debug-exit`` device. It proves that QEMU can
   open ``/dev/kvm`` and run guest code with it (module loaded, permissions, firmware setting), in about a
   second; when it does not answer within the timeout, the host uses TCG.

TCG domains get a translation cache sized from their memory (``<tb-cache>``, a quarter of the guest's
memory within 32-512 MiB, `vm5k.hypervisor.domain.tb_cache_for`) instead of QEMU's 1 GiB default: RSS per
VM dropped from ~590 to ~300 MiB with a fixed 64 MiB, and to ~236 MiB for a 96 MiB guest with 32 MiB, at a
boot 0.3 s slower (measured with ``benchmarks/vms.py`` on the testbed).

The answer is written to ``<base>/host/accel`` with the host's boot id, so later runs on the same boot of
the host skip the canary; a redeployed or rebooted host probes again.

>>> decide(HostFacts(kvm_dev=True, kvm_pvm=True, hw_virt=False))
Decision(accel='tcg', reason='/dev/kvm is PVM (software nested virtualisation)', canary=False)
>>> decide(HostFacts(kvm_dev=True, hw_virt=True, boot_id="b1"), memo="b1 kvm canary booted in 0.4 s")
Decision(accel='kvm', reason='remembered: canary booted in 0.4 s', canary=False)
>>> decide(HostFacts(kvm_dev=True, hw_virt=True, boot_id="b2"), memo="b1 kvm canary booted").canary
True
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from vm5k.hypervisor.facts import HostFacts
from vm5k.hypervisor.layout import HostLayout
from vm5k.remote import Runner

log = logging.getLogger(__name__)

CANARY_MARKER = "vm5k-canary: ok"
#: QEMU's exit status when the guest writes 0x10 to the isa-debug-exit port: (0x10 << 1) | 1.
CANARY_EXIT_STATUS = 33
CANARY_TIMEOUT = 20
#: $1 memo file, $2 accelerator, $3 reason: remembered with the host's boot id.
MEMO_SCRIPT = 'printf "%s %s %s\\n" "$(cat /proc/sys/kernel/random/boot_id)" "$2" "$3" > "$1"'


def canary_image() -> bytes:
    """A bootable 512-byte disk image: print `CANARY_MARKER` on COM1, then exit QEMU with status 33.

    16-bit real mode code, loaded by the BIOS at 0x7c00::

        xor ax, ax; mov ds, ax; cld          ; DS = 0, forward string ops
        mov si, 0x7c1a; mov dx, 0x3f8        ; the message, COM1's data port
      next: lodsb; test al, al; jz done; out dx, al; jmp next
      done: mov al, 0x10; out 0xf4, al       ; isa-debug-exit: QEMU exits with (0x10 << 1) | 1
      halt: hlt; jmp halt

    >>> image = canary_image()
    >>> len(image), image[-2:]
    (512, b'U\\xaa')
    """
    code = bytes([
        0x31, 0xC0, 0x8E, 0xD8, 0xFC,  # xor ax,ax; mov ds,ax; cld
        0xBE, 0x1A, 0x7C,  # mov si, 0x7c1a (the message, 26 bytes in)
        0xBA, 0xF8, 0x03,  # mov dx, 0x3f8
        0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8,  # next: lodsb; test; jz done; out; jmp next
        0xB0, 0x10, 0xE6, 0xF4,  # done: mov al,0x10; out 0xf4,al
        0xF4, 0xEB, 0xFD,  # halt: hlt; jmp halt
    ])
    message = f"{CANARY_MARKER}\r\n".encode() + b"\0"
    body = code + message
    return body + bytes(510 - len(body)) + b"\x55\xaa"


def canary_command(image: str, timeout: int = CANARY_TIMEOUT) -> list[str]:
    """Boot the canary under KVM, its serial port on stdout, killed after `timeout` seconds.

    >>> canary_command("/tmp/vm5k/host/canary.img")[:4]
    ['timeout', '20', 'qemu-system-x86_64', '-machine']
    """
    return ["timeout", str(timeout), "qemu-system-x86_64", "-machine", "pc", "-accel", "kvm", "-m", "16",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-drive", f"file={image},format=raw,if=ide"]


@dataclass(frozen=True)
class Decision:
    """The accelerator of a host and why; `canary` is True while a canary boot is still needed."""

    accel: str
    reason: str
    canary: bool = False


def decide(facts: HostFacts, forced: str | None = None, memo: str | None = None) -> Decision:
    """The decision that needs no boot (see the module docstring); ``canary=True`` when one is needed."""
    if forced is not None:
        return Decision(forced, f"forced to {forced}")
    if not facts.kvm_dev:
        return Decision("tcg", "no /dev/kvm")
    if facts.kvm_pvm:
        return Decision("tcg", "/dev/kvm is PVM (software nested virtualisation)")
    if not facts.hw_virt:
        return Decision("tcg", "the CPU has no vmx/svm flag")
    memo = memo if memo is not None else facts.accel_memo
    parts = memo.split(None, 2) if memo else []
    if len(parts) >= 2 and facts.boot_id and parts[0] == facts.boot_id and parts[1] in ("kvm", "tcg"):
        return Decision(parts[1], "remembered: " + (parts[2].strip() if len(parts) > 2 else "earlier canary"))
    return Decision("kvm", "canary boot needed", canary=True)


def canary_verdict(exit_status: int | None, stdout: str, seconds: float) -> Decision:
    """The decision from a canary boot's outcome."""
    if exit_status == CANARY_EXIT_STATUS and CANARY_MARKER in stdout:
        return Decision("kvm", f"canary booted in {seconds:.1f} s")
    if exit_status == 124:
        return Decision("tcg", f"KVM canary did not answer within {CANARY_TIMEOUT} s")
    return Decision("tcg", f"KVM canary failed (exit status {exit_status})")


async def probe(runner: Runner, facts: Mapping[str, HostFacts], layout: HostLayout,
                forced: str | None = None) -> dict[str, Decision]:
    """The accelerator of each host: up-front checks, memo, then canary boots where still needed."""
    decisions = {host: decide(item, forced) for host, item in facts.items()}
    needing = [host for host, decision in decisions.items() if decision.canary]
    if not needing:
        return decisions
    log.info("KVM canary boot on %d host(s)", len(needing))
    put = await runner.put(needing, canary_image(), layout.canary_image, mode=0o644)
    for result in put.ko:
        decisions[result.host] = Decision("tcg", f"could not install the canary: {result.describe()}")
    booting = put.ok_hosts
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await runner.run(booting, canary_command(layout.canary_image), timeout=CANARY_TIMEOUT + 15)
    for result in results:
        seconds = result.duration or loop.time() - started
        decisions[result.host] = canary_verdict(result.exit_status, result.stdout, seconds)
    memos = {host: ["sh", "-c", MEMO_SCRIPT, "vm5k-accel-memo", layout.accel_memo, decisions[host].accel,
                    decisions[host].reason] for host in booting}
    await runner.run_each(memos, timeout=30)
    return decisions
