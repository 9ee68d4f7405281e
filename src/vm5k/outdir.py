"""The run's folder: its name, and the one place that writes vm5k's output files into it.

Every file is written atomically (a temporary file in the same folder, flushed, then renamed over the
target), so a crash or Ctrl-C never leaves a half-written file that looks valid: readers see the old
version or the new one. Which file holds what is data (`OUTPUTS`), rendered by ``render.py`` and
``topology.py``.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from vm5k import render
from vm5k.errors import UsageError
from vm5k.topology import Topology

STATE_FILE = "topology.json"
INITIAL_XML = "initial_topo.xml"
FINAL_XML = "final_topo.xml"
SSH_CONFIG = "ssh_config"
INVENTORY = "inventory.yaml"
LOG_FILE = "vm5k.log"

# name -> renderer(topology, ssh settings, outdir); the lists, written after every step that changes them
OUTPUTS: dict[str, Callable[[Topology, render.SshConfigSettings | None, Path], str]] = {
    "hosts.list": lambda topo, ssh, out: render.hosts_list(topo),
    "vms.list": lambda topo, ssh, out: render.vms_list(topo),
    "vms.csv": lambda topo, ssh, out: render.vms_csv(topo),
    STATE_FILE: lambda topo, ssh, out: topo.to_json(),
    FINAL_XML: lambda topo, ssh, out: topo.to_xml(),
    INVENTORY: lambda topo, ssh, out: render.ansible_inventory(
        topo, ssh_config_path=str(out.resolve() / SSH_CONFIG) if ssh is not None else None),
    SSH_CONFIG: lambda topo, ssh, out: render.ssh_config(topo, ssh),
}


def default_outdir(now: datetime | None = None) -> str:
    """``vm5k_YYYYmmdd_HHMMSS_+zzzz`` in local time (the original's default outdir name)."""
    return (now or datetime.now().astimezone()).strftime("vm5k_%Y%m%d_%H%M%S_%z")


#: What the outdir's absolute path may hold. It is written into the outdir's ssh_config, and OpenSSH puts
#: the ``-F`` path of ``ssh -F OUTDIR/ssh_config vm-1`` into the shell command of the ProxyJump to the VM's
#: host without quoting it (and expands ``%`` tokens in it): spaces break that command, ``$( )`` or quotes
#: would run in it. So the path is refused up front, before anything is created.
SAFE_PATH = re.compile(r"[A-Za-z0-9._+/@,=:-]+")


def check_outdir_path(path: str | os.PathLike[str]) -> Path:
    """The outdir's absolute path, when every character of it is safe in an ssh_config (UsageError else).

    >>> check_outdir_path("/tmp/vm5k_20261125_120000_+0100").name
    'vm5k_20261125_120000_+0100'
    >>> check_outdir_path("/tmp/my xp")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    vm5k.errors.UsageError: -o: the outdir's path '/tmp/my xp' holds ' ': use letters, digits and ...
    """
    folder = Path(os.path.abspath(path))
    unsafe = sorted(set(SAFE_PATH.sub("", str(folder))))
    if unsafe:
        shown = " ".join(repr(char) for char in unsafe)
        raise UsageError(f"-o: the outdir's path {str(folder)!r} holds {shown}: use letters, digits and "
                         ". _ + / @ , = : - only (ssh -F OUTDIR/ssh_config hands it to a shell)")
    return folder


def make_outdir(path: str | os.PathLike[str]) -> Path:
    """Create the outdir (and its parents) if missing; return it (UsageError when it cannot be made, or
    when its path is not safe in an ssh_config: `check_outdir_path`)."""
    check_outdir_path(path)
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create the outdir {folder}: {error.strerror or error}") from None
    return folder


def write_atomic(path: str | os.PathLike[str], text: str | bytes, mode: int = 0o644) -> Path:
    """Write `text` to `path` through a temporary file and a rename, with the given permissions."""
    target = Path(path)
    data = text.encode() if isinstance(text, str) else text
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def write_state(outdir: str | os.PathLike[str], topology: Topology) -> Path:
    """Save topology.json (the state a resume starts from)."""
    return write_atomic(Path(outdir) / STATE_FILE, topology.to_json())


def read_state(outdir: str | os.PathLike[str]) -> Topology:
    """Load topology.json from an outdir (UsageError when it is missing or broken)."""
    path = Path(outdir) / STATE_FILE
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    return Topology.from_json(data)


def write_initial(outdir: str | os.PathLike[str], topology: Topology) -> list[Path]:
    """The planned topology: initial_topo.xml and topology.json."""
    return [write_atomic(Path(outdir) / INITIAL_XML, topology.to_xml()), write_state(outdir, topology)]


def write_outputs(outdir: str | os.PathLike[str], topology: Topology, *,
                  ssh: render.SshConfigSettings | None = None,
                  names: Iterable[str] | None = None) -> list[Path]:
    """Write the named outputs (all of `OUTPUTS` by default) into `outdir`; return their paths.

    Without `ssh` settings the ssh_config holds no key or known_hosts line and the inventory connects
    to VMs directly.
    """
    folder = Path(outdir)
    written = []
    for name in names if names is not None else OUTPUTS:
        written.append(write_atomic(folder / name, OUTPUTS[name](topology, ssh, folder)))
    return written
