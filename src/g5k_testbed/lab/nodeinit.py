"""PID 1 of a node: builds the node's private filesystem, starts its daemons, reaps orphans.

Started by `lab.node` as

    nsenter --net=/run/netns/<node ns> unshare --mount --uts --ipc --pid --fork --kill-child \
        --propagation private -- python -m g5k_testbed.lab.nodeinit <init.json>

so it runs in the node's network namespace and in fresh mount, UTS, IPC and PID namespaces. It then
assembles a new root on a tmpfs and `pivot_root`s into it:

- every standard top-level folder of the machine (etc, var, usr, root, home, opt, srv, ...) is an overlay:
  the node's own writable layer on top of the machine's folder (and, for /etc, of the node's base layer:
  hostname, sshd config, host keys). Installed packages are therefore visible, and whatever the node's
  users write stays on that node until Kadeploy wipes it;
- /tmp, /run and /dev/shm are private tmpfs; /proc and /sys are the node's own;
- /grid5000 is shared (the frontend's NFS on Grid'5000), /dev is the machine's;
- anything else at the machine's top level (the repository, tooling) is simply absent.

Then it starts virtlogd, libvirtd and sshd, tells its launcher "ready" once sshd accepts connections, and
reaps every process that ends up orphaned in the node (this machine has no init system to do it).
Only the standard library is used, and everything is imported before the root changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

OVERLAID = ("bin", "boot", "etc", "home", "lib", "lib32", "lib64", "libx32", "media", "mnt", "opt",
            "root", "sbin", "srv", "usr", "var")
SHARED = ("grid5000",)
TMPFS = {"tmp": "mode=1777", "run": "mode=755"}
DAEMON_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
              "LANG": "C.UTF-8"}


def log(message: str) -> None:
    print(f"nodeinit[{os.environ.get('VTB_NODE', '?')}]: {message}", flush=True)


def sh(*argv: str) -> None:
    proc = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stdout.strip()}")


def build_root(config: dict[str, Any]) -> str:
    """Assemble the node's root at config['root'] (a tmpfs) and return it."""
    new_root = str(config["root"])
    sh("mount", "--make-rprivate", "/")
    sh("mount", "-t", "tmpfs", "-o", "mode=755,size=64m", "vtb-root", new_root)
    for entry in sorted(os.listdir("/")):
        source = os.path.join("/", entry)
        target = os.path.join(new_root, entry)
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        elif entry in OVERLAID and os.path.isdir(source):
            layer = config["layers"].get(entry, None)
            if layer is None:
                continue
            os.mkdir(target)
            lowers = ":".join([*layer["lower"], *([] if layer.get("replace") else [source])])
            sh("mount", "-t", "overlay", f"vtb-{entry}", "-o",
               f"lowerdir={lowers},upperdir={layer['upper']},workdir={layer['work']}", target)
        elif entry in SHARED and os.path.isdir(source):
            os.mkdir(target)
            sh("mount", "--rbind", source, target)
    for source, target in config.get("binds", []):  # shared folders (the users' NFS home)
        if os.path.isdir(source):
            inside = os.path.join(new_root, target.lstrip("/"))
            os.makedirs(inside, exist_ok=True)
            sh("mount", "--bind", source, inside)
    for entry, options in TMPFS.items():
        target = os.path.join(new_root, entry)
        os.makedirs(target, exist_ok=True)
        sh("mount", "-t", "tmpfs", "-o", f"{options},nosuid,nodev", f"vtb-{entry}", target)
    for entry in ("proc", "sys", "dev"):
        os.makedirs(os.path.join(new_root, entry), exist_ok=True)
    sh("mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", os.path.join(new_root, "proc"))
    sh("mount", "-t", "sysfs", "-o", "nosuid,nodev,noexec", "sysfs", os.path.join(new_root, "sys"))
    sh("mount", "--rbind", "/dev", os.path.join(new_root, "dev"))
    shm = os.path.join(new_root, "dev", "shm")
    sh("mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "vtb-shm", shm)
    for folder, mode in (("run/sshd", 0o755), ("run/lock", 0o1777), ("run/user", 0o755)):
        path = os.path.join(new_root, folder)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, mode)
    return new_root


def enter_root(new_root: str, hide: list[str]) -> None:
    old = os.path.join(new_root, ".old-root")
    os.mkdir(old)
    sh("pivot_root", new_root, old)
    os.chdir("/")
    sh("umount", "-l", "/.old-root")
    os.rmdir("/.old-root")
    for path in hide:  # the testbed's own files (keys, other nodes' layers) are not the node's business
        if os.path.isdir(path):
            sh("mount", "-t", "tmpfs", "-o", "ro,size=4k,mode=755", "vtb-hidden", path)


def start_daemons(daemons: list[list[str]]) -> None:
    for argv in daemons:
        try:
            subprocess.run(argv, env=DAEMON_ENV, stdin=subprocess.DEVNULL, check=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            log(f"{argv[0]} failed to start: {exc}")


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def shutdown(signum: int, frame: object) -> None:
    """Stop the node: every process of its PID namespace gets SIGTERM, then init leaves (the kernel kills
    what is left)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
    os._exit(0)


def reap_forever() -> None:
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(1)
        except InterruptedError:
            continue


def main(argv: list[str]) -> int:
    with open(argv[1]) as handle:
        config = json.load(handle)
    os.environ["VTB_NODE"] = config["hostname"]
    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    ready_fd = int(os.environ.get("VTB_READY_FD", "-1"))
    try:
        with open(os.path.join(config["cgroup"], "cgroup.procs"), "w") as handle:
            handle.write("0")  # this process, hence every process of the node, counts against its limit
        socket.sethostname(config["hostname"])
        enter_root(build_root(config), config.get("hide", []))
        start_daemons(config["daemons"])
        ok = wait_port(22, 30)
    except Exception as exc:  # the launcher reads the reason from this node's log
        log(f"failed: {exc}")
        ok = False
    if ready_fd >= 0:
        os.write(ready_fd, b"ready\n" if ok else b"failed\n")
        os.close(ready_fd)
    if not ok:
        return 1
    log("ready")
    reap_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
