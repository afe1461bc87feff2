"""ACCEPTs coalesced into one DELETE: while one runs, the next ones gather."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

Send = Callable[[Sequence[tuple[int, object]]], Awaitable[None]]

logger = logging.getLogger("loafer_postgres")


class Coalescer:
    """:meth:`add` queues an entry; calls of ``send`` take them in batches: no linger, the
    first entry goes at once, those that arrive while a call runs go together in the next
    (at most ``max_batch`` per call). A failed call is tried again (``attempts`` in all,
    with a doubling pause from ``backoff``), then logged and given up (the rows stay
    leased: delivered again once the leases lapse)."""

    def __init__(
        self,
        send: Send,
        *,
        max_batch: int = 500,
        linger: float = 0.0,
        attempts: int = 4,
        backoff: float = 0.2,
    ) -> None:
        self._send = send
        self._linger = linger
        self._urgent = False
        self._hurry = asyncio.Event()
        self._max_batch = max_batch
        self._attempts = attempts
        self._backoff = backoff
        self._pending: list[tuple[tuple[int, object], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Entries queued and not yet sent (those of a running call not counted)."""
        return len(self._pending)

    def add(self, entry: tuple[int, object], *, urgent: bool = False) -> asyncio.Future[None]:
        """Queue ``entry``; the future is done when a call including it ended. An
        ``urgent`` entry (a keyed row: its key's next row waits for it) skips the linger."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((entry, future))
        if urgent:
            self._urgent = True
            self._hurry.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="loafer:postgres:accepts")
        return future

    async def _run(self) -> None:
        while self._pending:
            if self._linger and not self._urgent and len(self._pending) < self._max_batch:
                # let the ACCEPTs of the next moments join (an urgent one cuts it short)
                self._hurry.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger):
                        await self._hurry.wait()
            self._urgent = False
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                await self._send_with_retries([entry for entry, _ in batch])
            except asyncio.CancelledError:
                for _, future in (*batch, *self._pending):
                    future.cancel()
                self._pending = []
                raise
            except Exception as exc:
                logger.error(
                    "%d accepted rows could not be deleted (%s); they are delivered again "
                    "once their leases lapse",
                    len(batch),
                    exc,
                )
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _send_with_retries(self, entries: list[tuple[int, object]]) -> None:
        pause = self._backoff
        for attempt in range(1, self._attempts + 1):
            try:
                await self._send(entries)
                return
            except Exception as exc:
                if attempt == self._attempts:
                    raise
                logger.warning(
                    "deleting %d accepted rows failed (%s); trying again in %.1fs",
                    len(entries),
                    exc,
                    pause,
                )
                await asyncio.sleep(pause)
                pause *= 2

    async def flush(self) -> None:
        """Wait for the calls queued and running."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})
