"""Where a testbed keeps its files and how its kernel objects are named.

Every name a testbed creates carries its id (a short hash of its state folder's real path), so two
testbeds with different state folders never collide, and `down` finds exactly what `up` made:

    network namespaces  vtb-<id>-bb (backbone), vtb-<id>-<site> (site router, bridges, DNS/DHCP),
                        vtb-<id>-<node uid> (one per node)
    memory cgroup       <memory hierarchy>/vm5k-testbed/<id>/<node uid>   (cgroup v1 or v2)
    files               <state>/... (below)

Interface names only need to be unique inside their namespace, so bridges are plain `br-prod`,
`br-kavlan-<N>` inside the site namespaces.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from g5k_testbed.lab.errors import UsageError

DEFAULT_STATE_DIR = Path("/var/lib/vm5k-testbed/default")
CACHE_DIR = Path("/var/cache/vm5k-testbed")
VIRT_IMAGES = Path("/grid5000/virt-images")
DEFAULT_IMAGE_NAME = "debian12-x64-min"
CGROUP_FS = Path("/sys/fs/cgroup")

# Characters that would break an overlay mount option list or an SSH config line.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+@-]*$")


def memory_cgroup_root(cgroup_fs: Path = CGROUP_FS) -> Path | None:
    """Where the testbed makes its memory cgroups: the cgroup v1 memory controller's hierarchy (this
    machine, and systems booted with v1), or the unified v2 hierarchy when it has the memory controller
    (a stock Debian 12 with systemd); None when there is neither."""
    if (cgroup_fs / "memory" / "memory.limit_in_bytes").exists():
        return cgroup_fs / "memory"
    try:
        controllers = (cgroup_fs / "cgroup.controllers").read_text().split()
    except OSError:
        return None
    return cgroup_fs if "memory" in controllers else None


def testbed_id(state_dir: Path) -> str:
    """Six hex digits derived from the state folder's real path: stable, and short enough for names."""
    return hashlib.sha1(str(state_dir).encode()).hexdigest()[:6]


class Layout:
    """Paths and names of one testbed, derived from its state folder only.

    >>> layout = Layout(Path("/var/lib/vm5k-testbed/default"))
    >>> layout.node_netns("paradoxe-1").startswith("vtb-")
    True
    """

    def __init__(self, state_dir: Path | str) -> None:
        path = Path(os.path.realpath(os.path.abspath(str(state_dir))))
        if not _SAFE_PATH.match(str(path)):
            raise UsageError(f"state folder {str(state_dir)!r}: use only letters, digits and . _ - + @ /")
        if path == Path("/") or len(path.parts) < 3:
            raise UsageError(f"state folder {path}: choose a dedicated folder at least two levels deep")
        self.state_dir = path
        self.id = testbed_id(path)

    # ------------------------------------------------------------------ files
    @property
    def lab_json(self) -> Path:
        """The testbed's description (plan, API URL, image): its existence makes the API use the lab."""
        return self.state_dir / "lab.json"

    @property
    def runtime_json(self) -> Path:
        """Everything created so far (recorded before creation) and the live state of nodes."""
        return self.state_dir / "lab-runtime.json"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / ".lab.lock"

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def routing_ssh_config(self) -> Path:
        """How to reach each node, and nothing else: clients bring their own keys (`sshconf`)."""
        return self.state_dir / "ssh_config.routing"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def keys_dir(self) -> Path:
        """Testbed key and node host keys: kept across `down`/`up` so clients keep trusting the nodes."""
        return self.state_dir / "keys"

    @property
    def private_key(self) -> Path:
        return self.keys_dir / "id_ed25519"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    def site_dir(self, site: str) -> Path:
        return self.state_dir / "sites" / site

    def node_dir(self, uid: str) -> Path:
        return self.state_dir / "nodes" / uid

    # ------------------------------------------------------------------ kernel names
    @property
    def prefix(self) -> str:
        return f"vtb-{self.id}-"

    @property
    def backbone_netns(self) -> str:
        return f"{self.prefix}bb"

    def site_netns(self, site: str) -> str:
        return f"{self.prefix}{site}"

    def node_netns(self, uid: str) -> str:
        return f"{self.prefix}{uid}"

    @property
    def cgroup_dir(self) -> Path:
        return (memory_cgroup_root() or CGROUP_FS / "memory") / "vm5k-testbed" / self.id

    def node_cgroup(self, uid: str) -> Path:
        return self.cgroup_dir / uid


def interface_name(name: str) -> str:
    """A Linux interface name (at most 15 characters) for `name`, hashed when too long."""
    if len(name) <= 15 and re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        return name
    return "n" + hashlib.sha1(name.encode()).hexdigest()[:12]
