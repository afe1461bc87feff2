"""One batcher for every plugin: gathers entries for a short linger or until a batch is
full, sends each batch with bounded concurrency, retries failed entries with backoff.

Entries added with :meth:`Batcher.add` are fire-and-forget (failures are retried, then
logged); :meth:`Batcher.submit` returns a future resolved when the entry's batch is done
(with the entry's error, if any). :meth:`Batcher.flush` waits for everything queued,
:meth:`Batcher.abort` gives up at once (for a bounded close).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Batcher", "Batching", "Failure", "SendBatch"]

E = TypeVar("E")

_logger = logging.getLogger("loafer_core.kit")


@dataclass(eq=False)
class Failure:
    """An entry of a batch call that failed; ``retry`` says whether to try it again;
    ``refused``: the broker refused the entry itself (too large, invalid), so its future
    fails with the batcher's ``refused_type`` (``PublishRefused`` for a publisher)."""

    reason: str
    retry: bool
    refused: bool = False


@dataclass(eq=False)
class _Item(Generic[E]):
    entry: E
    future: asyncio.Future[None] | None = None
    attempts: int = 0
    last_error: str | None = field(default=None)


SendBatch = Callable[[Sequence[E]], Awaitable[dict[int, Failure]]]
"""``send(entries)`` performs one batch call and returns, per index, the failures."""


@dataclass(frozen=True, kw_only=True)
class Batching:
    """How a :class:`Batcher` gathers and sends.

    :param linger: seconds an entry waits for others to fill its batch.
    :param max_batch: entries per call at most (the broker's limit).
    :param attempts: tries of an entry before it is given up.
    :param backoff: the first retry's pause (doubling, with jitter), seconds.
    :param max_concurrent: calls in flight at once.
    :param max_weight: a call's payload limit (with the batcher's ``weigh``).
    """

    linger: float = 0.02
    max_batch: int = 10
    attempts: int = 4
    backoff: float = 0.2
    max_concurrent: int = 8
    max_weight: int = 256 * 1024

    def __post_init__(self) -> None:
        for name in ("max_batch", "attempts", "max_concurrent", "max_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Batching({name}=...): expected an int >= 1, got {value!r}")
        for name in ("linger", "backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"Batching({name}=...): expected seconds >= 0, got {value!r}")


_DEFAULT = Batching()


class Batcher(Generic[E]):
    """Gathers entries into batches of at most ``batching.max_batch``, flushed after
    ``batching.linger`` (:class:`Batching`).

    With ``weigh``, a batch also stays under ``max_weight`` (the call's payload limit;
    one entry heavier than that goes alone). ``send`` raising an exception fails the
    whole batch (retried with backoff like a
    retryable per-entry failure). After ``attempts`` tries an entry is given up: logged
    at ERROR on ``logger`` with ``describe(entry)`` (and its future, if any, gets the
    error). ``scrub`` turns an exception ``send`` raised into text safe to log (the
    plugin's masking: a client library's message may quote a credential); ``classify``
    says what such an exception means for the call's entries (``None``: retryable), so
    that a call the broker refuses for its content is not retried; a refused entry's
    future gets ``refused_type`` (else ``error_type``).
    """

    def __init__(
        self,
        name: str,
        send: SendBatch[E],
        *,
        describe: Callable[[E], str],
        batching: Batching = _DEFAULT,
        weigh: Callable[[E], int] | None = None,
        error_type: Callable[[str], Exception] = RuntimeError,
        refused_type: Callable[[str], Exception] | None = None,
        classify: Callable[[Exception], Failure | None] | None = None,
        logger: logging.Logger = _logger,
        scrub: Callable[[BaseException], str] = str,
    ) -> None:
        self.batching = batching
        linger, max_batch = batching.linger, batching.max_batch
        attempts, backoff = batching.attempts, batching.backoff
        max_concurrent, max_weight = batching.max_concurrent, batching.max_weight
        self._logger = logger
        self._scrub = scrub
        self._classify = classify
        self._refused_type = refused_type
        self.name = name
        self._send = send
        self._describe = describe
        self._linger = linger
        self._max_batch = max_batch
        self._attempts = attempts
        self._backoff = backoff
        self._semaphore = asyncio.Semaphore(max_concurrent)
        self._error_type = error_type
        self._weigh = weigh
        self._max_weight = max_weight
        self._weight = 0
        self._pending: list[_Item[E]] = []
        self._timer: asyncio.TimerHandle | None = None
        #: calls in flight (with their retries), and how many entries each carries
        self._tasks: dict[asyncio.Task[None], int] = {}

    @property
    def pending(self) -> int:
        """Entries waiting for a call or in a call still running."""
        return len(self._pending) + len(self._tasks)

    def add(self, entry: E) -> None:
        """Queue ``entry``; failures are retried, then logged."""
        self._queue(_Item(entry))

    def submit(self, entry: E) -> asyncio.Future[None]:
        """Queue ``entry``; the future resolves when it is done (or fails for good)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue(_Item(entry, future))
        return future

    def _queue(self, item: _Item[E]) -> None:
        if self._weigh is not None:
            weight = self._weigh(item.entry)
            if self._pending and self._weight + weight > self._max_weight:
                # the call's payload is limited too: send what is gathered first
                self._flush_all()
            self._weight += weight
        self._pending.append(item)
        if len(self._pending) >= self._max_batch:
            self._flush_full()
        if self._pending and self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._linger, self._on_timer)

    def _flush_full(self) -> None:
        while len(self._pending) >= self._max_batch:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._spawn(batch)
        if not self._pending and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        self._flush_all()

    def _flush_all(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            self._spawn(batch)

    def _spawn(self, batch: list[_Item[E]]) -> None:
        if self._weigh is not None:
            weigh = self._weigh
            self._weight = max(0, self._weight - sum(weigh(item.entry) for item in batch))
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks[task] = len(batch)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def flush(self) -> None:
        """Send everything queued now and wait until every call (and retry) is done."""
        while self._pending or self._tasks:
            self._flush_all()
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _run(self, batch: list[_Item[E]]) -> None:
        todo = batch
        while todo:
            for item in todo:
                item.attempts += 1
            async with self._semaphore:
                try:
                    failures = await self._send([item.entry for item in todo])
                except asyncio.CancelledError:
                    for item in todo:
                        self._finish(item, "cancelled")
                    raise
                except Exception as exc:
                    failure = self._classify(exc) if self._classify is not None else None
                    if failure is None:
                        failure = Failure(f"{type(exc).__name__}: {self._scrub(exc)}", True)
                    failures = dict.fromkeys(range(len(todo)), failure)
            retry: list[_Item[E]] = []
            for index, item in enumerate(todo):
                failure = failures.get(index)
                if failure is None:
                    self._finish(item, None)
                elif failure.retry and item.attempts < self._attempts:
                    item.last_error = failure.reason
                    retry.append(item)
                else:
                    self._logger.error(
                        "%s failed for %s after %d attempt(s): %s",
                        self.name,
                        self._describe(item.entry),
                        item.attempts,
                        failure.reason,
                    )
                    self._finish(item, failure.reason, refused=failure.refused)
            if retry:
                attempt = max(item.attempts for item in retry)
                delay = self._backoff * 2 ** (attempt - 1)
                await asyncio.sleep(delay * (0.5 + random.random()))
            todo = retry

    def _finish(self, item: _Item[E], error: str | None, *, refused: bool = False) -> None:
        future = item.future
        if future is None or future.done():
            return
        if error is None:
            future.set_result(None)
            return
        error_type = self._error_type
        if refused and self._refused_type is not None:
            error_type = self._refused_type
        future.set_exception(error_type(f"{self.name} failed: {error}"))

    def abort(self) -> tuple[int, list[asyncio.Task[None]]]:
        """Give up at once: drop what is queued (its futures fail) and cancel the calls in
        flight. Returns how many entries were not (or not surely) sent, and the cancelled
        tasks, for the caller to await."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        dropped = len(self._pending) + sum(self._tasks.values())
        for item in self._pending:
            self._finish(item, "closed before it was sent")
        self._pending.clear()
        self._weight = 0
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        return dropped, tasks
