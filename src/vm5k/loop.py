"""The event loop a run's coroutines live on: its own thread, so that vm5k works where a loop already runs.

Why a thread: the hypervisor steps and the SSH layer are coroutines, and their connections belong to the
loop that opened them, so one loop must live as long as the run (or the `vm5k.Run` object). Running it
with ``asyncio.run`` in the caller's thread fails inside Jupyter or any asyncio program ("cannot be called
from a running event loop"); a private loop in a daemon thread works everywhere, and the caller's thread
only waits for results.

Waiting is where interruptions are handled: Ctrl-C (KeyboardInterrupt in the waiting thread) cancels the
coroutine, waits until it has cleaned up (cancelled commands are killed, connections closed), then goes
on as KeyboardInterrupt; a `check` callback (the outdir's stop request, see `vm5k.ownership`) is called
while waiting and may raise to stop the coroutine the same way.

>>> import asyncio
>>> with LoopThread() as loop:
...     loop.run(asyncio.sleep(0, result="done"))
'done'
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: How often a waiting caller looks at its `check` callback (seconds).
CHECK_INTERVAL = 0.5


class LoopThread:
    """One event loop in a daemon thread; `run` submits a coroutine and waits for its result."""

    def __init__(self, check: Callable[[], None] | None = None) -> None:
        self.check = check
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="vm5k-loop", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def closed(self) -> bool:
        return self._loop.is_closed()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and return its result (or raise its exception).

        Ctrl-C, or an exception raised by the `check` callback, cancels the coroutine; once it has
        finished cleaning up, the interruption is raised here.
        """
        if self._loop.is_closed():
            coroutine.close()
            raise RuntimeError("the run's event loop is closed")
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("LoopThread.run called from its own loop: await the coroutine instead")
        task: concurrent.futures.Future[T] = concurrent.futures.Future()
        settled = threading.Event()

        async def tracked() -> None:
            try:
                task.set_result(await coroutine)
            except BaseException as error:
                if not task.cancelled():
                    task.set_exception(error)
            finally:
                settled.set()

        handle = asyncio.run_coroutine_threadsafe(tracked(), self._loop)
        try:
            while True:
                try:
                    return task.result(timeout=CHECK_INTERVAL)
                except concurrent.futures.TimeoutError:
                    if self.check is not None:
                        self.check()
        except BaseException:
            if not task.done():  # interrupted while waiting: stop the coroutine, let it clean up
                self._loop.call_soon_threadsafe(handle.cancel)
                settled.wait()
            raise

    async def run_async(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """`run` for async callers: awaits the result without blocking the caller's own loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    def close(self) -> None:
        """Stop the loop and its thread (after the owner has closed its connections)."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            # an async generator that will not end must not keep the caller waiting
            with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
                finishing = asyncio.run_coroutine_threadsafe(self._loop.shutdown_asyncgens(), self._loop)
                finishing.result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
