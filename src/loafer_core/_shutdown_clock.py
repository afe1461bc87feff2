"""How long each broker call of a route's shutdown may still take."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any


class ShutdownClock:
    """The deadlines of one route's shutdown.

    Each broker call of the shutdown (stop_fetching, the final releases, the close) may
    take ``close_timeout``, or what is left of ``shutdown_timeout`` from the first stop()
    if less, but never under ``forced_grace``; once :attr:`now` is set (``stop(now=True)``),
    at most ``forced_grace``.
    """

    def __init__(self, close_timeout: float, forced_grace: float) -> None:
        self.close_timeout = close_timeout
        self.forced_grace = forced_grace
        #: set by ``stop(now=True)``: cut everything short
        self.now = asyncio.Event()
        #: the shutdown's deadline, from the first stop()
        self.shutdown_timeout: float | None = None
        self.stopped_at: float | None = None

    def stopped(self) -> None:
        """The first stop() starts the shutdown's deadline (later ones do not move it)."""
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()

    def drain_left(self, timeout: float | None) -> float | None:
        """What is left of ``timeout`` since the first stop() (None: no limit)."""
        if timeout is not None and self.stopped_at is not None:
            return max(0.0, self.stopped_at + timeout - time.monotonic())
        return timeout

    def time_left(self) -> float:
        """How long one broker call of the shutdown may take now."""
        limit = self.close_timeout
        if self.shutdown_timeout is not None and self.stopped_at is not None:
            left = self.stopped_at + self.shutdown_timeout - time.monotonic()
            limit = min(limit, left)
        return max(limit, self.forced_grace)

    async def bounded(self, aw: Awaitable[Any]) -> bool:
        """Await ``aw`` for up to :meth:`time_left`, and for at most ``forced_grace`` once
        :attr:`now` is set (a broker that hangs must not hold the shutdown); past that it
        is cancelled. True if it finished; its exception propagates."""
        task = asyncio.ensure_future(aw)
        limit = self.time_left()
        deadline = time.monotonic() + limit
        try:
            if not self.now.is_set():
                now = asyncio.ensure_future(self.now.wait())
                try:
                    await asyncio.wait(
                        {task, now}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    now.cancel()
            if not task.done():
                remaining = min(self.forced_grace, deadline - time.monotonic())
                if remaining > 0:
                    await asyncio.wait({task}, timeout=remaining)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=self.forced_grace)
        if not task.done() or task.cancelled():
            return False
        task.result()
        return True
