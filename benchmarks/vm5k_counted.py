"""Run the `vm5k` command (`vm5k.cli.main`, the same code as the installed script) and count what it asks
of the outside world: SSH connections, SSH sessions (remote commands and copies), direct-tcpip channels
(VM probes), HTTP requests. Used by benchmarks/scale.py.

    python benchmarks/vm5k_counted.py COUNTS.json [--profile FILE.prof] -- <vm5k arguments>

Why a launcher and not the debug log: vm5k logs its connections but not each command, and the HTTP client
logs requests only at debug level on its own logger. Counting handlers read the asyncssh and urllib3 log
records (asyncssh puts a "[conn=N, chan=M]" context before its messages: a substring test, no
formatting); the counts are written when
the command ends, in total and per step (with the CPU the process and its children used in the step: the
run record's step_begun/step_done are wrapped to take the snapshots).
"""

from __future__ import annotations

import atexit
import cProfile
import json
import logging
import os
import sys
from collections import Counter

#: (logger, message format as the library writes it) → what it counts.
MESSAGES = {
    "Connected to SSH server at": "ssh_connections",
    "Requesting new SSH session": "ssh_sessions",
    "Opening direct TCP connection to %s": "ssh_tunnels",
    '%s://%s:%s "%s %s %s" %s %s': "http_requests",
}


class Counting(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.msg if isinstance(record.msg, str) else ""
        if message.endswith("%s %s") and record.args and isinstance(record.args, tuple):
            message += str(record.args[0])  # asyncssh: logger.info("%s %s", "Opening SSH connection to", ...)
        for start, name in MESSAGES.items():
            if start in message:
                self.counts[name] += 1
                return


def counting(*loggers: tuple[str, int]) -> Counting:
    """A `Counting` handler attached to each (logger, level), which then keeps its records to itself."""
    handler = Counting()
    for name, level in loggers:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    return handler


def main() -> int:
    counts_file = sys.argv[1]
    rest = sys.argv[2:]
    profile = None
    if rest[:1] == ["--profile"]:
        profile, rest = rest[1], rest[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    # asyncssh logs connections at info; its connection/channel loggers are children of "asyncssh"
    handler = counting(("asyncssh", logging.INFO), ("urllib3.connectionpool", logging.DEBUG))

    from vm5k import runstate
    from vm5k.cli import main as vm5k_main

    steps: dict[str, dict[str, float]] = {}
    begun, done = runstate.RunRecord.step_begun, runstate.RunRecord.step_done

    def snapshot() -> dict[str, float]:
        times = os.times()  # this process and its waited-for children (ProxyCommands, ssh-keygen)
        return {"cpu_s": times.user + times.system + times.children_user + times.children_system,
                **{key: float(value) for key, value in handler.counts.items()}}

    def step_begun(record: runstate.RunRecord, name: str) -> None:
        steps[name] = {f"start_{key}": value for key, value in snapshot().items()}
        begun(record, name)

    def step_done(record: runstate.RunRecord, name: str, seconds: float) -> None:
        done(record, name, seconds)
        now, start = snapshot(), steps.get(name, {})
        steps[name] = {key: round(value - start.get(f"start_{key}", 0.0), 3) for key, value in now.items()}

    runstate.RunRecord.step_begun = step_begun  # type: ignore[method-assign]
    runstate.RunRecord.step_done = step_done  # type: ignore[method-assign]

    def write() -> None:
        with open(counts_file, "w") as stream:
            json.dump({"total": dict(handler.counts), "steps": steps}, stream)

    atexit.register(write)

    if profile is None:
        return vm5k_main(rest)
    # the SSH work runs on the run's event loop, in its own thread: profiled apart (<file>.loop.prof)
    from vm5k import loop

    serve = loop.LoopThread._serve

    def profiled_serve(self: loop.LoopThread) -> None:
        looped = cProfile.Profile()
        # the API keeps the run's loop open until the process ends: its profile is written at exit
        atexit.register(looped.dump_stats, f"{profile}.loop.prof")
        looped.runcall(serve, self)

    loop.LoopThread._serve = profiled_serve  # type: ignore[method-assign]
    profiler = cProfile.Profile()
    try:
        return profiler.runcall(vm5k_main, rest)
    finally:
        profiler.dump_stats(profile)


if __name__ == "__main__":
    sys.exit(main())
