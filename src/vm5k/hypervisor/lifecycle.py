"""libvirt operations on a run's domains, as idempotent shell commands: define, start, list, destroy.

Why idempotent: the SSH layer reruns a command once when its connection drops, and ``--resume`` reruns a
whole step; defining an already defined domain updates it, starting a running one is a no-op here, and
destroying a missing one is not an error. Domains are persistent (``define`` + ``start``): a run's domains,
running or not, are listed with ``virsh list --all`` and only those with the run's prefix are ever touched.

>>> parse_states("vm5k_r1_vm-1 running\\nvm5k_r1_vm-2 shut off\\nother running\\n", HostLayout("r1"))
{'vm-1': 'running', 'vm-2': 'shut off'}
"""

from __future__ import annotations

from collections.abc import Iterable

from vm5k.hypervisor.layout import HostLayout
from vm5k.topology import validate_id

VIRSH = ("virsh", "-q", "-c", "qemu:///system")

#: $1 domain prefix; prints "<name> <state>" for each domain with that prefix (state may have spaces).
STATES_SCRIPT = r"""
set -u
prefix=$1
running=$(virsh -q -c qemu:///system list --name --state-running 2>/dev/null)
virsh -q -c qemu:///system list --all --name 2>/dev/null | while read -r d; do
    case "$d" in
        "$prefix"*)
            state="shut off"
            for r in $running; do [ "$r" = "$d" ] && state=running; done
            echo "$d $state" ;;
    esac
done
"""

#: Then pairs: domain name, XML file. Defines each domain and starts it unless it already runs.
#: Prints "ok <name>" or "ko <name> <why>".
START_SCRIPT = r"""
set -u
while [ $# -ge 2 ]; do
    name=$1 xml=$2
    shift 2
    if ! out=$(virsh -q -c qemu:///system define "$xml" 2>&1); then
        echo "ko $name define: $(printf '%s' "$out" | tail -n 1)"; continue
    fi
    if [ "$(virsh -q -c qemu:///system domstate "$name" 2>/dev/null)" = running ]; then
        echo "ok $name"; continue
    fi
    if out=$(virsh -q -c qemu:///system start "$name" 2>&1); then
        echo "ok $name"
    elif [ "$(virsh -q -c qemu:///system domstate "$name" 2>/dev/null)" = running ]; then
        echo "ok $name"
    else
        echo "ko $name start: $(printf '%s' "$out" | tr '\n' ' ' | tail -c 300)"
    fi
done
"""

#: Then domain names: stops and undefines each (no error when it is missing). Prints "gone <name>".
DESTROY_SCRIPT = r"""
set -u
for name in "$@"; do
    virsh -q -c qemu:///system destroy "$name" >/dev/null 2>&1
    virsh -q -c qemu:///system undefine "$name" >/dev/null 2>&1
    if virsh -q -c qemu:///system dominfo "$name" >/dev/null 2>&1; then
        echo "left $name"
    else
        echo "gone $name"
    fi
done
"""

#: Then domain names: stops each (keeping its definition and files, e.g. a KO VM left for inspection).
STOP_SCRIPT = r"""
for name in "$@"; do virsh -q -c qemu:///system destroy "$name" >/dev/null 2>&1; done
exit 0
"""

#: $1 domain prefix, $2 run folder. Stops and undefines every domain of the run, then removes its folder.
DESTROY_RUN_SCRIPT = r"""
set -u
prefix=$1 run=$2
mine=$(virsh -q -c qemu:///system list --all --name 2>/dev/null | while read -r d; do
    case "$d" in "$prefix"*) echo "$d" ;; esac
done)
left=0
for d in $mine; do
    virsh -q -c qemu:///system destroy "$d" >/dev/null 2>&1
    virsh -q -c qemu:///system undefine "$d" >/dev/null 2>&1
    if virsh -q -c qemu:///system dominfo "$d" >/dev/null 2>&1; then
        echo "cannot remove domain $d" >&2; left=1
    else
        echo "removed domain $d"
    fi
done
if [ "$left" = 0 ] && [ -d "$run" ]; then rm -rf -- "$run" && echo "removed $run"; fi
exit $left
"""

#: $1 console log, $2 number of lines. The last lines, control characters removed.
CONSOLE_TAIL_SCRIPT = r"""
[ -r "$1" ] && tail -n "$2" "$1" | tr -d '\000-\010\013-\037\177'
exit 0
"""


def states_command(layout: HostLayout) -> list[str]:
    """Print the state of each of the run's domains on a host."""
    return ["sh", "-c", STATES_SCRIPT, "vm5k-states", layout.domain_prefix]


def parse_states(stdout: str, layout: HostLayout) -> dict[str, str]:
    """VM id → libvirt state (``running``, ``shut off``) for the run's domains."""
    states: dict[str, str] = {}
    for line in stdout.splitlines():
        name, _, state = line.strip().partition(" ")
        vm = layout.vm_of_domain(name)
        if vm is not None:
            states[vm] = state.strip()
    return states


def start_command(layout: HostLayout, vm_ids: Iterable[str]) -> list[str]:
    """Define (from the run's domain XML files) and start these VMs."""
    args: list[str] = []
    for vm in vm_ids:
        args += [layout.domain_name(vm), layout.domain_xml(vm)]
    return ["sh", "-c", START_SCRIPT, "vm5k-start", *args]


def parse_outcome(stdout: str, layout: HostLayout) -> dict[str, str | None]:
    """VM id → None (ok) or the reason, from `START_SCRIPT`'s output."""
    outcome: dict[str, str | None] = {}
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        name, _, why = rest.partition(" ")
        vm = layout.vm_of_domain(name)
        if vm is None:
            continue
        outcome[vm] = None if word == "ok" else (why.strip() or "failed")
    return outcome


def destroy_command(layout: HostLayout, vm_ids: Iterable[str]) -> list[str]:
    """Stop and undefine these VMs' domains (their files stay: a recreate rewrites them)."""
    return ["sh", "-c", DESTROY_SCRIPT, "vm5k-destroy", *(layout.domain_name(vm) for vm in vm_ids)]


def stop_command(layout: HostLayout, vm_ids: Iterable[str]) -> list[str]:
    """Stop these VMs' domains, keeping their definitions and files."""
    return ["sh", "-c", STOP_SCRIPT, "vm5k-stop", *(layout.domain_name(vm) for vm in vm_ids)]


def destroy_run_command(layout: HostLayout) -> list[str]:
    """Remove every domain of the run and the run's folder from a host."""
    return ["sh", "-c", DESTROY_RUN_SCRIPT, "vm5k-destroy-run", layout.domain_prefix, layout.run_dir]


def console_tail_command(layout: HostLayout, vm_id: str, lines: int = 15) -> list[str]:
    """The last lines of a VM's serial console."""
    return ["sh", "-c", CONSOLE_TAIL_SCRIPT, "vm5k-console", layout.console(validate_id(vm_id, "VM id")),
            str(lines)]
