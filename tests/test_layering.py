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


#: The only modules of vm5k that write to the terminal: the command line, and the display it opts into (the
#: logging handlers and the live progress that share the logger's console).
DISPLAY_MODULES = ("vm5k/cli.py", "vm5k/log.py")


def terminal_uses(path: Path) -> list[str]:
    """``print(...)``, ``sys.stdout``/``sys.stderr``, ``sys.exit`` and ``signal.signal`` in the code of a file
    (docstrings and comments do not count)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append(f"print() at line {node.lineno}")
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and (node.value.id, node.attr) in {("sys", "stdout"), ("sys", "stderr"), ("sys", "exit"),
                                                 ("signal", "signal")}):
            found.append(f"{node.value.id}.{node.attr} at line {node.lineno}")
    return found


def test_only_the_command_line_and_its_display_touch_the_terminal_and_signals() -> None:
    """A library user's process is theirs: vm5k's API never prints, exits or changes signal handlers."""
    offenders = {str(path.relative_to(SRC)): uses for path in python_files("vm5k")
                 if str(path.relative_to(SRC)) not in DISPLAY_MODULES and (uses := terminal_uses(path))}
    assert offenders == {}
    assert terminal_uses(SRC / "vm5k" / "cli.py"), "the check would not see what it looks for"
