"""Shared constants of the planner and the error it raises when no slot exists.

Part of the pure planner (see ``vm5k.platforms.grid5000.planning``): no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from vm5k.errors import PlatformError

Interval = tuple[int, int]
INFINITY = 1 << 62

SECURITY_MARGIN = 60  # seconds kept free after each job (OAR's own security time between jobs)
VMS_PER_SLASH22 = 1000  # a /22 has 1022 addresses; a few are kept spare
MAX_SLASH22 = 32  # beyond this many /22s on a site, ask for /16s (64 /22s each)
SLASH22_PER_SLASH16 = 64
UNUSABLE_STATES = frozenset({"absent", "dead", "suspected"})  # `hard` states never planned on
VLAN_ROUTED, VLAN_LOCAL, VLAN_GLOBAL = "kavlan", "kavlan-local", "kavlan-global"


class NoSlot(PlatformError):
    """No start time satisfies the request (resources that exist but can never be free together)."""


def few(names: Sequence[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
