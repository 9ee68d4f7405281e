"""The exceptions vm5k raises on purpose, and the exit status each one means.

Every module raises one of these instead of printing and exiting, so that the command line is the only
place that turns a failure into a message and an exit status, and library users get exceptions they can
catch. The message of a `Vm5kError` is a single line written for the user: it names the problem.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vm5k.topology import Topology

EXIT_OK = 0
EXIT_FAILURE = 1  # the deployment ran but did not fully succeed (KO hosts or VMs, platform refused, ...)
EXIT_USAGE = 2  # bad input: nothing was reserved, started or written remotely
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: the state was saved, the message says how to resume or destroy


class Vm5kError(Exception):
    """A failure vm5k explains to the user in one line."""

    exit_status = EXIT_FAILURE


class UsageError(Vm5kError):
    """Bad user input (options, template, topology file, resource grammar). Nothing was touched."""

    exit_status = EXIT_USAGE


class PlatformError(Vm5kError):
    """The platform (Grid'5000 API, OAR, Kadeploy, KaVLAN, SSH hosts) refused or failed."""


class RemoteError(Vm5kError):
    """A command or a copy on remote hosts failed; the message names the hosts."""


class DeploymentError(Vm5kError):
    """The deployment could not give what was asked (hosts or VMs KO, not enough capacity left), or a step
    of a run failed once the run had a record.

    `topology`: the state the failing step had reached, when it is more than the last one saved (the
    workflow saves it). `run`: the `vm5k.Run` whose step failed, set by the Python API, so that the caller
    can look at it, ``resume()`` it or ``destroy()`` it.
    """

    def __init__(self, message: str, *, topology: Topology | None = None, run: Any = None) -> None:
        super().__init__(message)
        self.topology = topology
        self.run = run


class Interrupted(Vm5kError):
    """Ctrl-C or SIGTERM stopped a run: its state is saved; `hint` says how to resume or destroy it."""

    exit_status = EXIT_INTERRUPTED

    def __init__(self, message: str, hint: str = "", *, run: Any = None) -> None:
        super().__init__(message)
        self.hint = hint
        self.run = run


def go_on_hint(outdir: object, resume: str = "continue it") -> str:
    """The two ways on from a run whose state is saved: resume it, or remove all of it.

    >>> print(go_on_hint("xp1"))
      continue it:   vm5k --resume xp1
      or remove all: vm5k --destroy xp1
    """
    return f"  {resume + ':':<15}vm5k --resume {outdir}\n  or remove all: vm5k --destroy {outdir}"
