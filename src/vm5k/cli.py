"""Command line of vm5k (placeholder until the core lands)."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("vm5k: not implemented yet", file=sys.stderr)
    return 2


def max_vms_main(argv: list[str] | None = None) -> int:
    print("vm5k_max_vms: not implemented yet", file=sys.stderr)
    return 2
