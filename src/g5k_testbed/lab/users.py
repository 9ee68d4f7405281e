"""The testbed's user outside deploy jobs: Grid'5000's standard environment, NFS home and `sudo-g5k`.

On Grid'5000 a job that is not `deploy` gives its user the nodes as they are (the standard environment):
the user logs in as themself (never as root) on the nodes of their job only, their home is the same NFS
home on every node (where their SSH keys live), and `sudo-g5k` makes them root for the rest of the job;
a node where it was used is redeployed at the job's end. The testbed has one such user:

- `USER` (uid/gid `UID`) is defined in every node's base system (`/etc/passwd`, `group`, `shadow` of the
  machine plus that line), so the machine itself needs no account;
- its home is `<state>/home/<user>` on the machine, bind-mounted at `/home/<user>` on every node (the
  NFS home): a client puts its public key in `.ssh/authorized_keys` there, as a user does on a frontend;
- sshd hands its keys out only while the node is in a running job of that user (`/run/vm5k-testbed/
  oar-users`, written by the API's job hooks, like Grid'5000's pam_oar): outside such a job it is refused;
- `sudo-g5k CMD...` runs CMD as root through sudo (`/etc/sudoers.d/vm5k-testbed`) and leaves a trace
  (`SUDO_TRACE`) in the node's writable layer, which makes the job's end redeploy the node.
"""

from __future__ import annotations

import os
from pathlib import Path

from g5k_testbed.lab.layout import Layout

USER = "g5kuser"
UID = 20001
OAR_USERS = "/run/vm5k-testbed/oar-users"
#: sudo-g5k's trace in a node's writable layer (relative to the node's root).
SUDO_TRACE = Path("var/log/vm5k-testbed-sudo-g5k")
SUDO_ROOT = "/etc/vm5k-testbed/sudo-g5k-root"
KEYS_COMMAND = "/etc/vm5k-testbed/oar-authorized-keys"

SSHD_MATCH = f"""
# The testbed user gets in only on the nodes of its running jobs, with the keys of its shared home.
Match User {USER}
    AuthorizedKeysFile none
    AuthorizedKeysCommand {KEYS_COMMAND} %u
    AuthorizedKeysCommandUser root
"""

KEYS_SCRIPT = f"""#!/bin/sh
# sshd asks which keys let user $1 in: the ones of its home, while this node is in one of its jobs.
grep -qx "$1" {OAR_USERS} 2>/dev/null || exit 0
cat "/home/$1/.ssh/authorized_keys" 2>/dev/null
exit 0
"""

SUDO_ROOT_SCRIPT = f"""#!/bin/sh
# sudo-g5k's root side: remember that the job's user became root (the node is redeployed at the job's end).
mkdir -p /{SUDO_TRACE.parent}
echo "$(date +%s) $SUDO_USER: $*" >> /{SUDO_TRACE}
if [ $# -eq 0 ]; then exec /bin/bash -l; fi
exec "$@"
"""

SUDO_G5K = f"""#!/bin/sh
# sudo-g5k (vm5k-testbed): root for the rest of the job; the node is redeployed when the job ends.
exec sudo -n {SUDO_ROOT} "$@"
"""


def home(layout: Layout) -> Path:
    return layout.state_dir / "home" / USER


def ensure_home(layout: Layout) -> Path:
    """The shared home (created once per `up`; `down` removes it with the state folder)."""
    folder = home(layout)
    ssh = folder / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    (layout.state_dir / "home").chmod(0o755)
    for path, mode in ((folder, 0o755), (ssh, 0o700)):
        os.chown(path, UID, UID)
        path.chmod(mode)
    return folder


def _with_line(machine_file: str, line: str) -> str:
    text = Path(machine_file).read_text() if os.path.exists(machine_file) else ""
    kept = [entry for entry in text.splitlines() if entry.split(":", 1)[0] != USER]
    return "\n".join([*kept, line]) + "\n"


def write_base(etc: Path) -> None:
    """The user, sudo-g5k's root side and sshd's key lookup, in a node's base `/etc`."""
    entry = f"{USER}:x:{UID}:{UID}:testbed user:/home/{USER}:/bin/bash"
    (etc / "passwd").write_text(_with_line("/etc/passwd", entry))
    (etc / "group").write_text(_with_line("/etc/group", f"{USER}:x:{UID}:"))
    shadow = etc / "shadow"
    shadow.write_text(_with_line("/etc/shadow", f"{USER}:*:20000:0:99999:7:::"))
    shadow.chmod(0o640)
    sudoers = etc / "sudoers.d"
    sudoers.mkdir(exist_ok=True)
    rule = sudoers / "vm5k-testbed"
    rule.write_text(f"{USER} ALL=(root) NOPASSWD: {SUDO_ROOT}\n")
    rule.chmod(0o440)
    for name, text in ((KEYS_COMMAND, KEYS_SCRIPT), (SUDO_ROOT, SUDO_ROOT_SCRIPT)):
        script = etc / Path(name).relative_to("/etc")
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(text)
        script.chmod(0o755)


def write_tools(upper: Path) -> None:
    """`sudo-g5k` on the node's PATH, and root's `.ssh` (EnOSlib appends keys there through sudo-g5k)."""
    tool = upper / "usr" / "local" / "bin" / "sudo-g5k"
    tool.parent.mkdir(parents=True, exist_ok=True)
    tool.write_text(SUDO_G5K)
    tool.chmod(0o755)
    root_ssh = upper / "root" / ".ssh"
    root_ssh.mkdir(parents=True, exist_ok=True)
    root_ssh.chmod(0o700)


def sudo_used(upper: Path) -> bool:
    return (upper / SUDO_TRACE).exists()
