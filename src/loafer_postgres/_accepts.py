"""ACCEPTs coalesced into one DELETE: while one runs, the next ones gather."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

Send = Callable[[Sequence[tuple[int, object]]], Awaitable[None]]


class Coalescer:
    """``await add(entry)`` returns once a ``send`` that included it finished (raising
    its error). No linger: the first entry goes at once, those that arrive while a call
    runs go together in the next (at most ``max_batch`` per call)."""

    def __init__(self, send: Send, max_batch: int = 500) -> None:
        self._send = send
        self._max_batch = max_batch
        self._pending: list[tuple[tuple[int, object], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, entry: tuple[int, object]) -> asyncio.Future[None]:
        """Queue ``entry``; the future is done when its call is."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, future))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return future

    async def _run(self) -> None:
        while self._pending:
            batch, self._pending = (
                self._pending[: self._max_batch],
                self._pending[self._max_batch :],
            )
            try:
                await self._send([entry for entry, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    for _, future in self._pending:
                        future.cancel()
                    self._pending = []
                    raise
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def flush(self) -> None:
        """Wait for the calls queued and running."""
        task = self._task
        if task is not None:
            await asyncio.wait({task})
