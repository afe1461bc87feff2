"""A delivery's settlement handle, and the coalescing of settlements into batches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batch", "Entry"]

T = TypeVar("T")

logger = logging.getLogger("loafer_redis")


class Entry:
    """``Delivery.token`` of a Redis delivery: the entry id, settled yet."""

    __slots__ = ("id", "settled")

    def __init__(self, entry_id: bytes) -> None:
        self.id = entry_id
        self.settled = False

    def __repr__(self) -> str:
        return f"Entry({self.id.decode()!r}, settled={self.settled})"


class Batch(Generic[T]):
    """Items added during one turn of the event loop are sent by one call of ``send``.

    :meth:`add` returns a future resolved when the item's batch was sent (or failed);
    callers that need not wait (acknowledgements) ignore it. ``send`` gets at most
    ``limit`` items per call.
    """

    def __init__(self, send: Callable[[Sequence[T]], Awaitable[None]], *, limit: int = 500) -> None:
        self._send = send
        self._limit = limit
        self._items: list[tuple[T, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._items.append((item, future))
        if self._task is None:
            self._task = loop.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        try:
            while self._items:
                batch, self._items = self._items[: self._limit], self._items[self._limit :]
                try:
                    await self._send([item for item, _ in batch])
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                            future.exception()  # retrieved: callers may not wait
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._task = None
            if self._items:  # cancelled with items queued: not sent
                for _, future in self._items:
                    if not future.done():
                        future.cancel()
                self._items = []

    async def flush(self) -> None:
        """Wait until everything added so far has been sent (or failed)."""
        task = self._task
        if task is not None:
            await asyncio.shield(task)
        elif self._items:
            self._task = asyncio.get_running_loop().create_task(self._flush())
            await asyncio.shield(self._task)

    def cancel(self) -> int:
        """Drop what is queued and stop sending; returns how many items were dropped."""
        dropped = len(self._items)
        task = self._task
        if task is not None:
            task.cancel()
        for _, future in self._items:
            if not future.done():
                future.cancel()
        self._items = []
        return dropped


class Acks:
    """Acknowledgements added during two turns of the event loop go out in one ``send``
    (at most ``limit`` ids per call; those added while it is sent go in the next one).
    Nobody waits for them: no future per id.

    ``held()``, when given, says another sender (the provider's reader, about to send
    a read) will :meth:`take` the queued ids: the batch is then left to it, and that
    sender calls :meth:`resume` if it goes without them. :meth:`flush` sends regardless.
    """

    def __init__(
        self,
        send: Callable[[Sequence[bytes]], Awaitable[None]],
        *,
        limit: int = 1000,
        held: Callable[[], bool] | None = None,
    ) -> None:
        self._send = send
        self._limit = limit
        self._held = held
        self._ids: list[bytes] = []
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, entry_id: bytes) -> None:
        self._ids.append(entry_id)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush())

    def add_many(self, ids: Sequence[bytes]) -> None:
        """Queue these again (another sender could not tell they were acknowledged)."""
        if ids:
            self._ids.extend(ids)
            self.resume()

    def take(self) -> list[bytes]:
        """Hand up to ``limit`` queued ids to another sender (they are its to send)."""
        ids = self._ids
        if len(ids) <= self._limit:
            self._ids = []
            return ids
        self._ids = ids[self._limit :]
        return ids[: self._limit]

    def resume(self) -> None:
        """Send what is queued (the other sender went without it)."""
        if self._ids and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self, force: bool = False) -> None:
        try:
            # one more turn of the loop: the settles of the turn after the first add (the
            # rest of a fetched batch, once the reader yielded to them) join this XACK
            await asyncio.sleep(0)
            if not force and self._held is not None and self._held():
                return  # they go with the reader's next read (or it calls resume())
            while self._ids:
                batch, self._ids = self._ids[: self._limit], self._ids[self._limit :]
                await self._send(batch)
        finally:
            self._task = None

    async def flush(self) -> None:
        """Wait until every id added so far has been sent (or given up)."""
        while self._ids or self._task is not None:
            task = self._task
            if task is None:
                task = self._task = asyncio.get_running_loop().create_task(self._flush(force=True))
            await asyncio.shield(task)

    def cancel(self) -> int:
        """Drop what is queued and stop sending; returns how many ids were dropped."""
        dropped = len(self._ids)
        self._ids = []
        if self._task is not None:
            self._task.cancel()
        return dropped
