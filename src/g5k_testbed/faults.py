"""Fault injection: what real Grid'5000 sometimes does to its clients, on demand.

* `error_rate`: a fraction of API calls answered at once with one of `error_codes` (nothing executed);
* `lost_reply_rate`: a fraction of POSTs (and DELETEs) that are executed but whose reply is a 5xx
  (python-grid5000 does not retry POSTs: clients must look the job up before resubmitting);
* `latency` (every reply) and `slow_rate`/`slow_seconds` (some replies) delay answers;
* `ko_nodes`: deployments of these nodes come back KO; `dead_nodes`: OAR shows them `Dead`.

Off by default; set at start (`--faults FILE`, `--fail-rate`, ...) or at run time through the admin
endpoint `/_testbed/faults` (only when the server runs with `--admin`).
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

ERROR_TEXTS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Server Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class FaultConfig:
    error_rate: float = 0.0
    error_codes: list[int] = field(default_factory=lambda: [500, 502, 504])
    lost_reply_rate: float = 0.0
    latency: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 2.0
    ko_nodes: list[str] = field(default_factory=list)
    dead_nodes: list[str] = field(default_factory=list)
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultConfig:
        config = cls()
        config.update(data)
        return config

    def update(self, data: dict[str, Any]) -> None:
        """Apply a partial update; raises ValueError on an unknown key or a bad value."""
        for key, value in data.items():
            if key not in self.__dataclass_fields__:
                raise ValueError(f"unknown fault setting {key!r}")
            if key in ("error_rate", "lost_reply_rate", "slow_rate"):
                value = float(value)
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"{key} must be between 0 and 1")
            elif key in ("latency", "slow_seconds"):
                value = float(value)
                if value < 0:
                    raise ValueError(f"{key} must be >= 0")
            elif key == "error_codes":
                value = [int(code) for code in value]
                if not value or any(code < 500 or code > 599 for code in value):
                    raise ValueError("error_codes must be a non-empty list of 5xx codes")
            elif key in ("ko_nodes", "dead_nodes"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{key} must be a list of node FQDNs")
            elif key == "seed" and value is not None:
                value = int(value)
            setattr(self, key, value)


@dataclass
class Decision:
    delay: float = 0.0
    fail_before: int | None = None  # answer this status without executing
    fail_after: int | None = None  # execute, then answer this status (reply lost)


class FaultInjector:
    def __init__(self, config: FaultConfig | None = None) -> None:
        self.config = config or FaultConfig()
        self._lock = threading.Lock()
        self._random = random.Random(self.config.seed)
        self.injected = {"errors": 0, "lost_replies": 0, "slow": 0}  # what was done so far

    def reconfigure(self, data: dict[str, Any]) -> None:
        with self._lock:
            self.config.update(data)
            if "seed" in data:
                self._random = random.Random(self.config.seed)

    def decide(self, method: str) -> Decision:
        with self._lock:
            c, rnd = self.config, self._random
            decision = Decision(delay=c.latency)
            if c.slow_rate and rnd.random() < c.slow_rate:
                decision.delay += c.slow_seconds
                self.injected["slow"] += 1
            if c.error_rate and rnd.random() < c.error_rate:
                decision.fail_before = rnd.choice(c.error_codes)
                self.injected["errors"] += 1
            elif method in ("POST", "DELETE") and c.lost_reply_rate and rnd.random() < c.lost_reply_rate:
                decision.fail_after = rnd.choice(c.error_codes)
                self.injected["lost_replies"] += 1
            return decision
