"""The README's code map names every module and package of src/vm5k: a newcomer reads it to find things.

A module added or moved without its line in the map would otherwise go unnoticed.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def code_map() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## The code"):]


def test_every_module_of_vm5k_is_in_the_code_map() -> None:
    shown = code_map()
    package = ROOT / "src" / "vm5k"
    entries = [path.name + ("/" if path.is_dir() else "") for path in sorted(package.iterdir())
               if not path.name.startswith((".", "__"))]
    assert len(entries) > 10
    assert [entry for entry in entries if entry not in shown] == []


def test_the_code_map_points_to_the_architecture() -> None:
    assert "docs/architecture.md" in code_map()
    assert (ROOT / "docs" / "architecture.md").is_file()
