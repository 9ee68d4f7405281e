"""What a host is, asked of the host itself in one command: cores, memory, KVM, main interface, init system.

The ``hosts`` platform reads its hosts' capacity with the same command (`HostFacts.capacity`).

Why from the host and not from reference data: the testbed's nodes advertise real Grid'5000 hardware but
share this machine's two cores, and the ``hosts`` platform has no reference data at all. Waves of VM boots
are sized with ``nproc`` as the host reports it, capacity with ``/proc/meminfo`` (and the memory cgroup's
limit when the host is a container-like node), the accelerator with ``/dev/kvm`` and the CPU flags.

>>> facts = parse_facts("uid=0\\nnproc=2\\ncores=2\\nmem_kib=24000000\\nkvm_dev=1\\nkvm_pvm=1\\nhw_virt=0\\n"
...                     "default_dev=eth0\\naddress=172.16.0.5/20\\n")
>>> facts.nproc, facts.kvm_possible, facts.address
(2, False, '172.16.0.5')
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from vm5k.hypervisor.layout import HostLayout
from vm5k.remote import Results, Runner
from vm5k.topology import Capacity

#: Prints ``key=value`` lines; ``$1`` is the accelerator memo file (`HostLayout.accel_memo`).
FACTS_SCRIPT = r"""
echo "uid=$(id -u)"
echo "nproc=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
cores=$(lscpu -p=CORE,SOCKET 2>/dev/null | grep -v '^#' | sort -u | wc -l)
echo "cores=$cores"
echo "mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
cg=$(awk -F: '$2 == "memory" || $2 == "" {print $3; exit}' /proc/self/cgroup 2>/dev/null)
for f in "/sys/fs/cgroup/memory$cg/memory.limit_in_bytes" "/sys/fs/cgroup$cg/memory.max"; do
    if [ -r "$f" ]; then echo "mem_limit=$(cat "$f")"; break; fi
done
echo "boot_id=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)"
if [ -e /dev/kvm ]; then echo kvm_dev=1; else echo kvm_dev=0; fi
if [ -e /sys/module/kvm_pvm ]; then echo kvm_pvm=1; else echo kvm_pvm=0; fi
if grep -qwE 'vmx|svm' /proc/cpuinfo; then echo hw_virt=1; else echo hw_virt=0; fi
awk -F': *' '/^model name/ && !m {print "cpu_model=" $2; m=1} /^flags/ && !f {print "cpu_flags=" $2; f=1}' \
    /proc/cpuinfo 2>/dev/null
if [ -d /run/systemd/system ]; then echo systemd=1; else echo systemd=0; fi
dev=$(ip -o -4 route show default 2>/dev/null \
    | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
echo "default_dev=$dev"
if [ -n "$dev" ]; then
    echo "address=$(ip -o -4 addr show dev "$dev" scope global | awk '{print $4; exit}')"
    if [ -d "/sys/class/net/$dev/bridge" ]; then echo default_is_bridge=1; fi
fi
if command -v apt-get >/dev/null 2>&1; then echo apt=1; else echo apt=0; fi
if [ -f "$1" ]; then echo "accel_memo=$(head -c 300 "$1" | tr '\n' ' ')"; fi
"""


@dataclass(frozen=True)
class HostFacts:
    """A host as it describes itself (see the module docstring)."""

    uid: int = -1
    nproc: int = 1
    cores: int = 1
    mem_kib: int = 0
    mem_limit: int | None = None  # bytes, from the memory cgroup, when lower than the RAM
    boot_id: str = ""
    kvm_dev: bool = False
    kvm_pvm: bool = False
    hw_virt: bool = False
    systemd: bool = False
    default_dev: str = ""
    address: str = ""  # the main interface's IPv4 address
    prefixlen: int = 0
    default_is_bridge: bool = False
    apt: bool = False
    accel_memo: str = ""
    cpu_model: str = ""  # /proc/cpuinfo's model name and flags: what a KVM guest's CPU is made of
    cpu_flags: str = ""

    @property
    def ram_bytes(self) -> int:
        ram = self.mem_kib * 1024
        return min(ram, self.mem_limit) if self.mem_limit else ram

    @property
    def capacity(self) -> Capacity:
        """What the host offers VMs: every host runs VMs (KVM where it works, TCG elsewhere: the hypervisor
        step decides per host), so it is always `virtual`.

        >>> parse_facts("mem_kib=2048\\nmem_limit=1048576\\nnproc=4\\ncores=2\\n").capacity
        Capacity(ram=1048576, cores=2, threads=4, virtual=True)
        """
        return Capacity(ram=self.ram_bytes, cores=min(self.cores, self.nproc), threads=self.nproc,
                        virtual=True)

    @property
    def kvm_possible(self) -> bool:
        """False when KVM cannot be hardware KVM (no /dev/kvm, PVM, or no vmx/svm): no canary needed."""
        return self.kvm_dev and self.hw_virt and not self.kvm_pvm

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _int(value: str, default: int) -> int:
    try:
        return int(value.strip())
    except ValueError:
        return default


def parse_facts(text: str) -> HostFacts:
    """Read `FACTS_SCRIPT`'s output (unknown keys and garbage lines are ignored)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    address, prefixlen = "", 0
    if values.get("address"):
        try:
            iface = ipaddress.IPv4Interface(values["address"])
            address, prefixlen = str(iface.ip), iface.network.prefixlen
        except ValueError:
            pass
    nproc = max(1, _int(values.get("nproc", "1"), 1))
    limit = _int(values.get("mem_limit", ""), 0)
    mem_kib = _int(values.get("mem_kib", "0"), 0)
    return HostFacts(
        uid=_int(values.get("uid", "-1"), -1),
        nproc=nproc,
        cores=max(1, _int(values.get("cores", ""), nproc) or nproc),
        mem_kib=mem_kib,
        mem_limit=limit if 0 < limit < mem_kib * 1024 else None,
        boot_id=values.get("boot_id", ""),
        kvm_dev=values.get("kvm_dev") == "1",
        kvm_pvm=values.get("kvm_pvm") == "1",
        hw_virt=values.get("hw_virt") == "1",
        systemd=values.get("systemd") == "1",
        default_dev=values.get("default_dev", ""),
        address=address,
        prefixlen=prefixlen,
        default_is_bridge=values.get("default_is_bridge") == "1",
        apt=values.get("apt") == "1",
        accel_memo=values.get("accel_memo", ""),
        cpu_model=values.get("cpu_model", ""),
        cpu_flags=" ".join(sorted(values.get("cpu_flags", "").split())),
    )


def facts_command(layout: HostLayout | None = None) -> list[str]:
    """The argument list that prints a host's facts (with the accelerator's memo of `layout`, if given)."""
    return ["sh", "-c", FACTS_SCRIPT, "vm5k-facts", layout.accel_memo if layout is not None else ""]


async def gather_facts(runner: Runner, hosts: Iterable[str], layout: HostLayout,
                       timeout: float = 60) -> tuple[dict[str, HostFacts], Results]:
    """Facts of every host that answered, and the raw results (for the ones that did not)."""
    results = await runner.run(list(hosts), facts_command(layout), timeout=timeout)
    return {result.host: parse_facts(result.stdout) for result in results.ok}, results
