"""``async def`` tasks: one event loop thread per worker process runs them all."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class EventLoopThread:
    """A daemon thread running an asyncio loop that jobs are submitted to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="dbqueue-asyncio", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(
        self,
        coro: Coroutine[Any, Any, T],
        done: Callable[[concurrent.futures.Future[T]], None] | None = None,
    ) -> concurrent.futures.Future[T]:
        """Schedule a coroutine; ``done`` is called (in the loop thread) when it ends."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        if done is not None:
            future.add_done_callback(done)
        return future

    def stop(self, timeout: float = 5.0) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)


def run_coroutine(awaitable: Awaitable[T]) -> T:
    """Run a coroutine to completion from sync code, even if this thread runs a loop already."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_wrap(awaitable))
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(_wrap(awaitable))
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


async def _wrap(awaitable: Awaitable[T]) -> T:
    return await awaitable
