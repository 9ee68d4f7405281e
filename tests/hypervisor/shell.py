"""Run a command builder's argument list the way the SSH layer does: joined with shlex, run by a shell.

sshd hands the command line to the user's shell, so a test that runs ``sh -c <shlex.join(argv)>`` locally
exercises exactly the quoting a remote host sees.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from vm5k.remote import command_line


def run_like_ssh(argv: Sequence[str], *, cwd: str | None = None, input: str | None = None,
                 netns: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    line = command_line(list(argv))
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run([*prefix, "sh", "-c", line], cwd=cwd, input=input, capture_output=True, text=True,
                          timeout=timeout, check=False)
