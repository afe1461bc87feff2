"""Batch handlers: one call of your code for many messages, an outcome for each.

Wrap a function taking a list in :class:`Batch` and give it to a route as its handler::

    from loafer_core.batches import Batch

    async def save_all(orders: list[Order], metadata: list[Mapping[str, Any]]):
        await db.insert_many(orders)          # one round trip for the whole batch

    route = Route(provider, Batch(save_all, max_size=100, max_wait=0.5), max_concurrency=200)

The route fetches and translates each message as usual; the batch collects them until it
holds ``max_size`` or the first of them has waited ``max_wait`` seconds, then calls the
function once with the contents (and, if it takes a second parameter, their metadata,
in the same order). Each message is then settled with its own outcome. What the function
returns says them:

- ``None`` or ``True``: every message ACCEPTED; ``False``: every one RETRIED; an
  :class:`~loafer_core.outcome.Outcome`: that, for every one;
- a list (or tuple) as long as the batch: one result per message, in order (each
  ``True``/``None``/``False`` or an ``Outcome``);
- a mapping from positions in the batch to results: those messages so, every other one
  ACCEPTED (``{3: REJECT("no such customer")}``).

An exception the function raises (or a wrong result) is an error of every message of
the batch: each goes to the route's error handler (RETRIED by default, REJECTED past the
route's ``max_attempts``). A message signal it raises (``RejectMessage``...) settles
every one with its outcome.

Typed batches: a first parameter annotated ``list[Order]`` (a pydantic model, msgspec
Struct, dataclass or TypedDict) gets each content validated into ``Order`` *before* it
joins a batch: a message that does not validate goes to the error handler on its own and
the batch goes on without it.

What still holds: every message of a batch holds one of the route's ``max_concurrency``
slots while it waits and while the batch runs (so ``max_concurrency`` must be at least
``max_size``; twice that keeps fetching while a batch runs), its lease is extended as
for any message in flight, ``handler_timeout`` bounds each message's wait plus the
batch's run, and a drain waits for batches under way (a batch still filling is sent
within ``max_wait``, full or not). Batches run concurrently when the route holds more
than one batch's worth of messages. A message cut short while it waits (its
``handler_timeout``, a forced stop) leaves the batch before it is sent.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from loafer_core._checks import seconds, whole
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import Outcome
from loafer_core.typed import declared_type, type_converter

__all__ = ["Batch"]

_Waiter = asyncio.Future[Any]


class Batch:
    """A route handler running ``fn`` on batches of messages (see the module docstring).

    Arguments:
        fn: ``(contents)`` or ``(contents, metadata)``, async or sync (a sync function
            runs in a thread), returning what the module docstring says.
        max_size: the most messages in one batch (>= 1).
        max_wait: seconds the first message of a batch waits for the batch to fill.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        max_size: int = 100,
        max_wait: float = 1.0,
    ) -> None:
        if not callable(fn) or isinstance(fn, str | bytes):
            raise ConfigurationError(
                f"Batch(fn=...): expected a function taking a list, got {type(fn).__name__}"
            )
        self.fn = fn
        self.max_size: int = whole("Batch", "max_size", max_size, 1)
        self.max_wait: float = seconds("Batch", "max_wait", max_wait)
        self._call = _as_async(fn)
        self._with_metadata = _parameters(fn) >= 2
        self._convert = _element_converter(fn)
        self._contents: list[Any] = []
        self._metadata: list[Mapping[str, Any]] = []
        self._waiters: list[_Waiter] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()
        #: batches sent so far (for tests and metrics)
        self.batches = 0

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        return f"Batch({name}, max_size={self.max_size}, max_wait={self.max_wait:g})"

    @property
    def batch_size(self) -> int:
        """The most messages in one batch (the route checks its ``max_concurrency``)."""
        return self.max_size

    async def handle(self, content: Any, metadata: Mapping[str, Any]) -> Any:
        """One message's part: join the current batch and wait for its result."""
        if self._convert is not None:
            content = self._convert(content)  # an invalid one fails on its own
        waiter: _Waiter = asyncio.get_running_loop().create_future()
        self._contents.append(content)
        self._metadata.append(metadata)
        self._waiters.append(waiter)
        if len(self._waiters) >= self.max_size:
            self._send()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait, self._send)
        try:
            return await waiter
        except asyncio.CancelledError:
            # cut short (handler_timeout, a forced stop): leave a batch not yet sent; a
            # batch under way goes on for the others
            self._forget(waiter)
            raise

    def stop(self) -> None:
        """Called by the route when it stops: send what is waiting now."""
        if self._waiters:
            self._send()

    def _forget(self, waiter: _Waiter) -> None:
        for i, w in enumerate(self._waiters):
            if w is waiter:
                del self._waiters[i], self._contents[i], self._metadata[i]
                break
        if not self._waiters and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._waiters:
            return
        contents, metadata, waiters = self._contents, self._metadata, self._waiters
        self._contents, self._metadata, self._waiters = [], [], []
        self.batches += 1
        task = asyncio.get_running_loop().create_task(
            self._run(contents, metadata, waiters), name=f"loafer:batch:{self.batches}"
        )
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(
        self, contents: list[Any], metadata: list[Mapping[str, Any]], waiters: list[_Waiter]
    ) -> None:
        try:
            args = (contents, metadata) if self._with_metadata else (contents,)
            result = await self._call(*args)
            results = _spread(result, len(waiters))
        except (KeyboardInterrupt, SystemExit):
            raise
        except asyncio.CancelledError:
            for waiter in waiters:
                if not waiter.done():
                    waiter.cancel()
            raise
        except BaseException as exc:  # an error (or a signal) of every message
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for waiter, one in zip(waiters, results, strict=True):
            if not waiter.done():
                waiter.set_result(one)


def _spread(result: Any, size: int) -> list[Any]:
    """The batch function's result as one result per message."""
    if result is None or isinstance(result, bool | Outcome):
        return [result] * size
    if isinstance(result, Mapping):
        out: list[Any] = [True] * size
        for position, one in result.items():
            if isinstance(position, bool) or not isinstance(position, int):
                raise TypeError(f"batch result: a mapping's keys are positions, got {position!r}")
            if not -size <= position < size:
                raise IndexError(f"batch result: position {position} in a batch of {size}")
            out[position] = one
        return out
    if isinstance(result, Sequence) and not isinstance(result, str | bytes):
        if len(result) != size:
            raise ValueError(f"batch result: {len(result)} results for a batch of {size} messages")
        return list(result)
    raise TypeError(
        "batch result: expected None, a bool, an Outcome, a list of results (one per "
        f"message) or a mapping of positions to results, got {type(result).__name__}"
    )


def _as_async(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an async callable object
    ):
        return fn

    async def in_thread(*args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    return in_thread


def _parameters(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 2
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _element_converter(fn: Callable[..., Any]) -> Callable[[Any], Any] | None:
    """The converter of ``T`` when ``fn``'s first parameter is ``list[T]`` (or a
    ``Sequence[T]``) and ``T`` a type contents are validated into."""
    kind = declared_type(fn)
    if typing.get_origin(kind) in (list, Sequence, tuple):
        args = typing.get_args(kind)
        if args:
            return type_converter(args[0])
    return None
