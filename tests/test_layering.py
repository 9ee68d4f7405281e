"""The layering rules of docs/architecture.md, checked on the source tree itself.

- vm5k never imports g5k_testbed, and g5k_testbed never imports vm5k: they meet over HTTP and SSH only.
- The pure core (request, topology, placement, addresses, and Grid'5000's planner
  platforms/grid5000/planning) imports nothing that does I/O.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PURE_CORE = ("request", "topology", "placement", "platforms/grid5000/planning", "addresses")
IO_MODULES = {
    "subprocess", "socket", "asyncio", "asyncssh", "requests", "grid5000", "http", "urllib",
    "shutil", "tempfile", "ssl", "select", "selectors", "multiprocessing", "threading",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def python_files(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize(("package", "forbidden"), [("vm5k", "g5k_testbed"), ("g5k_testbed", "vm5k")])
def test_vm5k_and_testbed_never_import_each_other(package: str, forbidden: str) -> None:
    files = python_files(package)
    assert files, f"no source files found for {package}"
    offenders = [
        str(path.relative_to(SRC))
        for path in files
        if any(name == forbidden or name.startswith(forbidden + ".") for name in imported_modules(path))
    ]
    assert offenders == []


def pure_core_files(name: str) -> list[Path]:
    """The files of a pure-core module: ``vm5k/<name>.py``, or every file of the package ``vm5k/<name>/``.

    `name` may be a path below ``vm5k/`` (``platforms/grid5000/planning``).
    """
    module = SRC / "vm5k" / f"{name}.py"
    return [module] if module.exists() else sorted((SRC / "vm5k" / name).rglob("*.py"))


@pytest.mark.parametrize("name", PURE_CORE)
def test_pure_core_does_no_io(name: str) -> None:
    files = pure_core_files(name)
    assert files, f"vm5k/{name} is missing"
    for path in files:
        roots = {module.split(".")[0] for module in imported_modules(path)}
        io = roots & IO_MODULES
        assert io == set(), f"{path.relative_to(SRC)} imports I/O modules {io}"
