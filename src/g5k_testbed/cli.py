"""Command line of the testbed (placeholder until the API lands)."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("vm5k-testbed: not implemented yet", file=sys.stderr)
    return 2
