"""The guests' cloud-init seed reader (a POSIX awk program) against PyYAML, on the awks the guests run.

The tiny guest runs it with busybox awk, the debian guest with mawk; both must read back exactly what
PyYAML wrote, in the styles PyYAML and hand-written cloud-configs use.
"""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PARSER = Path(str(resources.files("g5k_testbed.lab.image").joinpath("guest", "seed-parse.sh")))


def awk_dirs(tmp: Path) -> dict[str, Path]:
    """PATH folders whose `awk` is each awk available here (mawk or gawk as installed, busybox awk)."""
    found: dict[str, Path] = {}
    system = shutil.which("awk")
    if system:
        found["system"] = Path(system).parent
    busybox = shutil.which("busybox")
    if busybox:
        folder = tmp / "busybox-awk"
        folder.mkdir(exist_ok=True)
        link = folder / "awk"
        if not link.exists():
            link.symlink_to(busybox)
        found["busybox"] = folder
    return found


def flatten(value: Any, path: str = "") -> list[tuple[str, str]]:
    """The reader's output for a Python value (paths joined with dots, empty containers as "")."""
    if isinstance(value, dict):
        if not value:
            return [(path, "")]
        return [item for key, sub in value.items() for item in flatten(sub, f"{path}.{key}" if path else key)]
    if isinstance(value, list):
        if not value:
            return [(path, "")]
        return [item for index, sub in enumerate(value)
                for item in flatten(sub, f"{path}.{index}" if path else str(index))]
    return [(path, "" if value is None else value)]


def unescape(text: str) -> str:
    out, index = [], 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            nxt = text[index + 1]
            out.append({"n": "\n", "t": "\t", "\\": "\\"}.get(nxt, "\\" + nxt))
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def parse(document: str, awk_dir: Path, tmp: Path) -> list[tuple[str, str]]:
    source = tmp / "doc.yaml"
    source.write_text(document, encoding="utf-8")
    env = {"PATH": f"{awk_dir}:/usr/bin:/bin", "LC_ALL": "C"}
    proc = subprocess.run(["sh", str(PARSER), str(source)], capture_output=True, env=env, check=True)
    lines = proc.stdout.decode("utf-8").split("\n")
    assert lines[-1] == ""
    return [(line.split("\t", 1)[0], unescape(line.split("\t", 1)[1])) for line in lines[:-1]]


class LiteralDumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, the way cloud-configs are usually written by hand."""


def _literal(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data and not data.startswith((" ", "\n")) and " \n" not in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


LiteralDumper.add_representer(str, _literal)

DUMPS = {
    "default": lambda doc: yaml.safe_dump(doc, sort_keys=False),
    "narrow": lambda doc: yaml.safe_dump(doc, sort_keys=False, width=24),
    "double": lambda doc: yaml.safe_dump(doc, sort_keys=False, default_style='"'),
    "single": lambda doc: yaml.dump(doc, Dumper=yaml.SafeDumper, sort_keys=False, default_style="'"),
    "literal": lambda doc: yaml.dump(doc, Dumper=LiteralDumper, sort_keys=False),
    "indented": lambda doc: yaml.safe_dump(doc, sort_keys=False, indent=4),
}

keys = st.from_regex(r"[a-z][a-z0-9_-]{0,11}", fullmatch=True)
tricky = st.sampled_from(["\n", "#", ": ", "- ", "'", '"', "\\", "  ", "é€", " #x", "|"])
pieces = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x24F, exclude_characters="\x7f"),
                 max_size=8) | tricky
texts = st.lists(pieces, max_size=6).map("".join)
values = st.recursive(texts, lambda inner: st.lists(inner, min_size=1, max_size=4)
                      | st.dictionaries(keys, inner, min_size=1, max_size=4), max_leaves=12)
documents = st.dictionaries(keys, values, min_size=1, max_size=5)


@pytest.fixture(scope="module")
def awks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    found = awk_dirs(tmp_path_factory.mktemp("awk"))
    assert found, "no awk on this machine"
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents, style=st.sampled_from(sorted(DUMPS)))
def test_reads_back_what_pyyaml_writes(doc: dict[str, Any], style: str, awks: dict[str, Path],
                                       tmp_path: Path) -> None:
    text = DUMPS[style](doc)
    assert yaml.safe_load(text) == doc  # the document really is what we think it is
    for name, folder in awks.items():
        assert parse(text, folder, tmp_path) == flatten(doc), f"{name} awk, {style} style:\n{text}"


HAND_WRITTEN = """#cloud-config
# a comment
---
hostname: vm-1   # trailing comment
fqdn: "vm-1.rennes.grid5000.fr"
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK alice@frontend
  - 'ssh-rsa AAAAB3 it''s bob'
write_files:
  - path: /etc/motd
    permissions: '0644'
    content: |
      Welcome
        indented line
      # not a comment inside a block

  - path: /root/folded
    content: >-
      one
      two

      three
  - {path: /tmp/flow, content: "a\\tb"}
bootcmd:
  - [sh, -c, 'echo "boot" > /run/x']
runcmd:
  - echo
    continued plain
  - - touch
    - /tmp/done
resolv_conf:
  nameservers: [10.0.0.1, "10.0.0.2"]
"""

EXPECTED = [
    ("hostname", "vm-1"), ("fqdn", "vm-1.rennes.grid5000.fr"),
    ("ssh_authorized_keys.0", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK alice@frontend"),
    ("ssh_authorized_keys.1", "ssh-rsa AAAAB3 it's bob"),
    ("write_files.0.path", "/etc/motd"), ("write_files.0.permissions", "0644"),
    ("write_files.0.content", "Welcome\n  indented line\n# not a comment inside a block\n"),
    ("write_files.1.path", "/root/folded"), ("write_files.1.content", "one two\nthree"),
    ("write_files.2.path", "/tmp/flow"), ("write_files.2.content", "a\tb"),
    ("bootcmd.0.0", "sh"), ("bootcmd.0.1", "-c"), ("bootcmd.0.2", 'echo "boot" > /run/x'),
    ("runcmd.0", "echo continued plain"), ("runcmd.1.0", "touch"), ("runcmd.1.1", "/tmp/done"),
    ("resolv_conf.nameservers.0", "10.0.0.1"), ("resolv_conf.nameservers.1", "10.0.0.2"),
]


def test_hand_written_cloud_config(awks: dict[str, Path], tmp_path: Path) -> None:
    assert flatten(yaml.safe_load(HAND_WRITTEN)) == EXPECTED
    for name, folder in awks.items():
        assert parse(HAND_WRITTEN, folder, tmp_path) == EXPECTED, name


def test_json_meta_data(awks: dict[str, Path], tmp_path: Path) -> None:
    document = '{"instance-id": "vm5k-1", "local-hostname": "vm-1", "public-keys": ["k1", "k2"]}\n'
    expected = [("instance-id", "vm5k-1"), ("local-hostname", "vm-1"), ("public-keys.0", "k1"),
                ("public-keys.1", "k2")]
    for name, folder in awks.items():
        assert parse(document, folder, tmp_path) == expected, name
