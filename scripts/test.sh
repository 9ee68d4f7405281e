#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), then run the whole test suite: lint, types, unit, contract,
# integration (real VMs on a testbed the tests start and stop themselves) and end to end.
# Extra arguments go to pytest, e.g. scripts/test.sh -k placement
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh" --with-execo --with-enoslib
cd "$ROOT"
export VM5K_EXECO_PYTHON="$ROOT/.venv-execo/bin/python"  # execo's contract test against the testbed
export VM5K_ENOSLIB_PYTHON="$ROOT/.venv-enoslib/bin/python"  # EnOSlib's contract test against the testbed
echo "test: ruff" >&2
.venv/bin/ruff check --no-cache .
echo "test: mypy" >&2
.venv/bin/mypy  # all of src/, strictly (pyproject.toml [tool.mypy])
echo "test: pytest" >&2
exec .venv/bin/python -m pytest "$@"
