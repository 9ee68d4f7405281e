"""Is a daemon alive? The shell function every host-side script uses, because hosts may have no init.

Why not ``kill -0``: without an init system that reaps orphans promptly (the testbed's nodes, some
containers), a killed daemon stays a zombie for a while, and ``kill -0`` succeeds on a zombie. A daemon is
alive only when its pid file names a process that is not a zombie (state ``Z``/``X`` in
``/proc/PID/stat``; the state comes after the command name, which may contain spaces and parentheses) and
whose name is the expected one (a recycled PID belongs to another program).

>>> "alive()" in ALIVE_FUNCTION
True
"""

from __future__ import annotations

#: ``alive PIDFILE NAME``: exit status 0 when the pid file names a live (non-zombie) process called NAME.
ALIVE_FUNCTION = r"""
alive() {
    [ -r "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null)
    case "$pid" in ''|*[!0-9]*) return 1 ;; esac
    [ -r "/proc/$pid/stat" ] || return 1
    state=$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
    case "$state" in Z|X|x) return 1 ;; esac
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}
"""


def alive_command(pid_file: str, name: str) -> list[str]:
    """The argument list that tells (exit status) whether the daemon of `pid_file` is alive."""
    return ["sh", "-c", ALIVE_FUNCTION + 'alive "$1" "$2"', "vm5k-alive", pid_file, name]
