"""A bridge on the host's main interface, so that VMs sit on the hosts' network (as on Grid'5000).

Why in one step: the SSH session that configures the bridge runs over the very interface being enslaved.
The original vm5k rewrote ``/etc/network/interfaces`` and ran ``ifdown``/``ifup``, which cut every session
and needed minutes of nmap polling. Here one ``ip -batch`` (a single process, microseconds) does:

1. create the bridge with the interface's MAC address and MTU, STP off, up;
2. add the interface's IPv4 addresses to the bridge (both hold them for a moment);
3. enslave the interface;
4. move every non-kernel route of the interface (the default route first of all) onto the bridge;
5. remove the addresses from the interface.

The host keeps its address and MAC, so the session's packets keep flowing. The script runs detached
(``setsid``, output in a file, under ``flock``): if the SSH connection still drops, the change completes,
the runner reconnects and reruns the command, which finds the bridge in place. If the batch fails half way,
the interface gets its addresses and routes back and the host is reported KO with the reason.

Idempotent: when the default route already goes through a bridge (``br0``, or any other bridge the host's
environment made, as Grid'5000's standard environment does), that bridge is used as is. The bridge is a
host-level change shared by every run: destroy leaves it (a redeployment resets the host).

Known limit: IPv4 only (IPv6 addresses of the interface stop working once it is enslaved), and a DHCP
client still bound to the interface is not moved to the bridge.
"""

from __future__ import annotations

from vm5k.hypervisor.layout import HostLayout

#: $1: the bridge's name. Prints "bridge=<name>" (and "created" when it made one).
BRIDGE_SCRIPT = r"""
set -u
br=$1
dev=$(ip -o -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
if [ -z "$dev" ]; then echo "no IPv4 default route: cannot tell the main interface" >&2; exit 30; fi
if [ -d "/sys/class/net/$dev/bridge" ]; then echo "bridge=$dev"; exit 0; fi
if [ -e "/sys/class/net/$br" ] && [ ! -d "/sys/class/net/$br/bridge" ]; then
    echo "$br exists and is not a bridge" >&2; exit 31
fi
if [ -e "/sys/class/net/$br" ] && [ -n "$(ip -o -4 addr show dev "$br" scope global)" ]; then
    echo "$br exists with addresses of its own but does not carry the default route" >&2; exit 32
fi
mac=$(cat "/sys/class/net/$dev/address")
mtu=$(cat "/sys/class/net/$dev/mtu")
addrs=$(ip -o -4 addr show dev "$dev" scope global \
    | awk '{for (i = 1; i < NF; i++) if ($i == "inet") print $(i + 1)}')
routes=$(ip -4 route show dev "$dev" | grep -v ' proto kernel ' | sed 's/ linkdown//g; s/ *$//')
batch=$(mktemp)
undo=$(mktemp)
trap 'rm -f "$batch" "$undo"' EXIT
created=0
if [ ! -e "/sys/class/net/$br" ]; then
    echo "link add name $br address $mac mtu $mtu type bridge stp_state 0 forward_delay 0" >> "$batch"
    created=1
fi
echo "link set $br up" >> "$batch"
for a in $addrs; do echo "addr replace $a dev $br" >> "$batch"; done
echo "link set $dev master $br" >> "$batch"
printf '%s\n' "$routes" | grep '^default' \
    | while read -r r; do echo "route replace $r dev $br" >> "$batch"; done
printf '%s\n' "$routes" | grep -v '^default' | grep . \
    | while read -r r; do echo "route replace $r dev $br" >> "$batch"; done
for a in $addrs; do echo "addr del $a dev $dev" >> "$batch"; done
if ip -batch "$batch"; then
    [ "$created" = 1 ] && echo created
    echo "bridge=$br"
    exit 0
fi
echo "moving $dev onto $br failed; restoring $dev" >&2
echo "link set $dev nomaster" >> "$undo"
for a in $addrs; do echo "addr replace $a dev $dev" >> "$undo"; done
printf '%s\n' "$routes" | grep . | while read -r r; do echo "route replace $r dev $dev" >> "$undo"; done
for a in $addrs; do echo "addr del $a dev $br" >> "$undo"; done
[ "$created" = 1 ] && echo "link del $br" >> "$undo"
ip -force -batch "$undo" >&2
exit 33
"""

#: $1: bridge name, $2: folder for the lock and the output, $3: `BRIDGE_SCRIPT`.
LAUNCH_SCRIPT = r"""
set -u
out="$2/bridge.out"
setsid flock -w 120 "$2/bridge.lock" sh -c "$3" vm5k-bridge "$1" > "$out" 2>&1 < /dev/null &
wait $!
status=$?
cat "$out"
exit $status
"""


def bridge_command(bridge: str, layout: HostLayout) -> list[str]:
    """The argument list that puts the host's main interface on `bridge` (see the module docstring).

    >>> bridge_command("br0", HostLayout("r1"))[3:5]
    ['vm5k-bridge-launch', 'br0']
    """
    return ["sh", "-c", LAUNCH_SCRIPT, "vm5k-bridge-launch", bridge, layout.host_changes_dir, BRIDGE_SCRIPT]


def parse_bridge(stdout: str) -> tuple[str | None, bool]:
    """(bridge name, created) from the script's output.

    >>> parse_bridge("created\\nbridge=br0\\n")
    ('br0', True)
    """
    name = None
    created = False
    for line in stdout.splitlines():
        if line.startswith("bridge="):
            name = line.removeprefix("bridge=").strip() or None
        elif line.strip() == "created":
            created = True
    return name, created
