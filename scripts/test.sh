#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), then run the whole test suite: lint, unit, contract,
# integration (real VMs on a testbed the tests start and stop themselves) and end to end.
# Extra arguments go to pytest, e.g. scripts/test.sh -k placement
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
cd "$ROOT"
echo "test: ruff" >&2
.venv/bin/ruff check .
echo "test: pytest" >&2
exec .venv/bin/python -m pytest "$@"
