"""Fault matrix: a VM never answers SSH.

Two faithful ways a guest fails, each given to one VM of a run as its own backing file (next to a VM of the
default image that must not notice):

- ``silent``: the real image, booted with an init that does not exist. The kernel panics and the domain
  keeps running, silent: only the boot timeout (``--boot-timeout``) can tell;
- ``blank``: an empty disk. The guest's initrd finds no root filesystem, says so on the console and powers
  off: the domain stops by itself, which vm5k notices without waiting for the timeout.

Each is destroyed and created once more, then reported KO with the stage it reached and the tail of its
console; its domain is kept, stopped, for inspection, until ``--destroy``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from vm5k_driver import Runs, node_script, record, run_id, ssh_vm, state, vms_of

from lab_fixtures import LabTestbed

pytestmark = pytest.mark.integration

BOOT_TIMEOUT = 40  # seconds; a good tiny VM answers in 5-25 s under TCG on a loaded machine


def broken_image(folder: Path, default: str, name: str, cmdline: str | None) -> Path:
    """A backing file `name` in `folder` that boots the default image's kernel and initrd: an empty disk
    when `cmdline` is None, else a copy of the default image booted with `cmdline`."""
    folder.mkdir(parents=True)
    boot = json.loads(Path(f"{default}.boot.json").read_text())
    for key in ("kernel", "initrd"):
        (folder / boot[key]).symlink_to(Path(default).parent / boot[key])
    image = folder / name
    if cmdline is None:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "256M"], check=True)
    else:
        subprocess.run(["cp", default, str(image)], check=True)
    sidecar = {"kernel": boot["kernel"], "initrd": boot["initrd"], "cmdline": cmdline or boot["cmdline"]}
    Path(f"{image}.boot.json").write_text(json.dumps(sidecar))
    return image


def test_vms_that_never_answer_are_recreated_once_then_ko_with_their_console(
        testbed: LabTestbed, runs: Runs) -> None:
    images = runs.workdir / "images"
    silent = broken_image(images / "silent", testbed.image, "silent.qcow2",
                          "console=ttyS0 root=LABEL=vm5k-root rw init=/vm5k-no-such-init")
    blank = broken_image(images / "blank", testbed.image, "blank.qcow2", None)
    first, second = (node.split(".")[0] for node in testbed.nodes[:2])
    (runs.workdir / "topology.xml").write_text(f"""<vm5k><site id="rennes"><cluster id="paradoxe">
  <host id="{first}">
    <vm id="good" mem="256" hdd="2"/><vm id="silent" mem="256" hdd="2" backing_file="{silent}"/>
  </host>
  <host id="{second}"><vm id="blank" mem="256" hdd="2" backing_file="{blank}"/></host>
</cluster></site></vm5k>
""")
    out = runs.outdir()
    done = runs.run("-i", "topology.xml", "-w", "0:20:00", "--boot-timeout", str(BOOT_TIMEOUT),
                    "-o", str(out))

    assert done.returncode == 1, done.stderr[-3000:]
    vms = vms_of(out)
    assert vms["good"]["state"] == "OK" and ssh_vm(out, "good").stdout.strip() == "good"
    log = (out / "vm5k.log").read_text()
    silent_why, blank_why = vms["silent"]["reason"], vms["blank"]["reason"]
    assert vms["silent"]["state"] == vms["blank"]["state"] == "KO"
    assert silent_why.startswith(f"no SSH login after 2 attempts of {BOOT_TIMEOUT} s (reached running")
    assert "console: " in silent_why and "Kernel panic" in silent_why
    assert blank_why.startswith(f"no SSH login after 2 attempts of {BOOT_TIMEOUT} s (reached running: "
                                "domain shut off by itself)")
    assert "vm5k-initrd: root filesystem LABEL=vm5k-root not found" in blank_why
    for vm in ("silent", "blank"):
        assert f"{vm} did not come up (" in log and f"{vm} is KO: " in log
        assert f"VM {vm} (host {vms[vm]['host']}) is KO: no SSH login" in done.stderr
    attempts = {vm["id"]: vm["attempts"] for site in state(out)["sites"] for cluster in site["clusters"]
                for host in cluster["hosts"] for vm in host.get("vms", [])}
    assert attempts == {"good": 1, "silent": 2, "blank": 2}
    assert record(out)["status"] == "failed" and record(out)["message"] == "2 VMs KO"
    # the KO VMs are kept for inspection: defined, stopped, their console on the host
    run = run_id(out)
    for vm in ("silent", "blank"):
        node = vms[vm]["host"]
        listing = node_script(testbed, node, "virsh -q -c qemu:///system list --all").stdout
        line = next(line for line in listing.splitlines() if f"vm5k_{run}_{vm}" in line)
        assert "shut off" in line
        assert node_script(testbed, node, f"test -s /tmp/vm5k/runs/{run}/console/{vm}.log").returncode == 0
