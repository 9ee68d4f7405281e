"""A blocking face for scripts: the same runners, driven by a private event loop.

Why: vm5k is async at its core (one loop, hundreds of hosts), but small scripts, examples and the
REPL want plain calls. Connections belong to the loop that opened them, so a `SyncRunner` keeps one
loop for its whole life and closes the runner (and its connections) with it.

>>> from vm5k.remote import LocalRunner
>>> with SyncRunner(LocalRunner) as local:
...     print(local.run(["frontend"], ["echo", "hello"])["frontend"].stdout.strip())
hello
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from vm5k.remote.results import Results
from vm5k.remote.runner import Runner

T = TypeVar("T")
R = TypeVar("R", bound=Runner)


class SyncRunner:
    """Wraps a runner created by ``factory`` (e.g. ``lambda: SshRunner(settings)``) in blocking calls."""

    def __init__(self, factory: Callable[[], Runner]) -> None:
        self._loop = asyncio.Runner()
        self._runner = self._loop.run(_create(factory))

    @property
    def runner(self) -> Runner:
        """The wrapped async runner (only usable through :meth:`call`)."""
        return self._runner

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run any coroutine of the wrapped runner on the private loop, e.g. a chain broadcast."""
        return self._loop.run(coroutine)

    def run(self, hosts: Iterable[str], command: Sequence[str], **options: Any) -> Results:
        return self.call(self._runner.run(hosts, command, **options))

    def run_each(self, commands: Mapping[str, Sequence[str]], **options: Any) -> Results:
        return self.call(self._runner.run_each(commands, **options))

    def put(self, hosts: Iterable[str], source: Path | bytes, dest: str, **options: Any) -> Results:
        return self.call(self._runner.put(hosts, source, dest, **options))

    def get(self, hosts: Iterable[str], source: str, dest: str | Path, **options: Any) -> Results:
        return self.call(self._runner.get(hosts, source, dest, **options))

    def write_text(self, hosts: Iterable[str], path: str, text: str, **options: Any) -> Results:
        return self.call(self._runner.write_text(hosts, path, text, **options))

    def sha256(self, hosts: Iterable[str], path: str, **options: Any) -> dict[str, str | None]:
        return self.call(self._runner.sha256(hosts, path, **options))

    def close(self) -> None:
        try:
            self._loop.run(self._runner.close())
        finally:
            self._loop.close()

    def __enter__(self) -> SyncRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _create(factory: Callable[[], R]) -> R:
    return factory()
