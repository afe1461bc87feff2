"""Handlers and error handlers: the user's code, adapted to one async calling convention.

A handler is any of:

- ``async def handler(content, metadata)``: awaited on the event loop;
- a plain function: run on threads of its route (up to ``max_concurrency``), with the
  caller's contextvars;
- an object with ``handle(content, metadata)`` (sync or async) and an optional sync
  ``stop()`` called once at shutdown;
- an object whose ``__call__`` is ``async``: awaited (Loafer 2.x ran it in a thread and
  acknowledged the message without running it);
- anything returning an awaitable: the awaitable is awaited.

An error handler is ``(exc_type, exc, message)``, sync or async, returning a ``bool``, an
:class:`~loafer_core.outcome.Outcome` or ``None``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import queue
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from loafer_core.errors import ConfigurationError

__all__ = [
    "ErrorHandler",
    "Handler",
    "HandlerObject",
    "InThreads",
    "adapt_error_handler",
    "adapt_handler",
]

Handler = Callable[[Any, Mapping[str, Any]], Any]
ErrorHandler = Callable[[type[BaseException], BaseException, Any], Any]
AsyncCall = Callable[..., Awaitable[Any]]


@runtime_checkable
class HandlerObject(Protocol):
    """A class-based handler: ``handle(content, metadata)``, optional ``stop()``."""

    def handle(self, content: Any, metadata: Mapping[str, Any]) -> Any:
        """Process one message; the return value is mapped to an outcome."""
        ...


def _is_async_callable(obj: Any) -> bool:
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(type(obj), "__call__", None)  # noqa: B004 - looking at the class
    return call is not None and inspect.iscoroutinefunction(call)


def _as_async(fn: Callable[..., Any]) -> AsyncCall:
    """Return a callable whose call is awaitable, whatever ``fn`` is.

    An async ``fn`` is returned as it is (callers await its result and, should that be
    awaitable again, await it too: see :func:`settle_result`). A sync ``fn`` is wrapped in
    an :class:`InThreads`, which runs it on threads of its own with the caller's contextvars.
    """
    if _is_async_callable(fn):
        return fn
    return InThreads(fn)


class InThreads:
    """Calls a sync function on daemon threads of its own, with the caller's contextvars.

    Up to ``max_workers`` threads (the route sets its ``max_concurrency``), started as
    needed. Daemon threads, not the event loop's default executor: a sync handler stuck
    for good, once cancelled by ``handler_timeout`` or a forced stop, cannot keep the
    process from exiting (the default executor is joined at exit). :meth:`close` lets
    the threads end without waiting for them.
    """

    def __init__(self, fn: Callable[..., Any], max_workers: int = 10) -> None:
        self.fn = fn
        self.max_workers = max_workers
        self._executor: _DaemonThreads | None = None

    async def __call__(self, *args: Any) -> Any:
        executor = self._executor
        if executor is None:
            executor = self._executor = _DaemonThreads(self.max_workers)
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        return await loop.run_in_executor(executor, functools.partial(context.run, self.fn, *args))

    def close(self) -> None:
        """Let the threads end once idle (a thread still running is not waited for)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)


class _DaemonThreads(concurrent.futures.Executor):
    """A minimal thread pool of daemon threads (see :class:`InThreads`)."""

    def __init__(self, max_workers: int) -> None:
        self._max_workers = max(1, max_workers)
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = 0
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._closed = False

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        if self._closed:
            raise RuntimeError("cannot run a handler after its threads were closed")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._work.put((future, fn, args, kwargs))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                if self._threads < self._max_workers:
                    self._threads += 1
                    threading.Thread(
                        target=self._run, name=f"loafer-handler-{self._threads}", daemon=True
                    ).start()
        return future

    def _run(self) -> None:
        work = self._work
        while True:
            item = work.get()
            if item is None:
                work.put(None)  # wake the next thread: they all end
                return
            future, fn, args, kwargs = item
            del item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                    del exc
                else:
                    future.set_result(result)
                    del result
            del future, fn, args, kwargs
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        self._work.put(None)


async def settle_result(result: Any) -> Any:
    """Await ``result`` for as long as it is awaitable (a handler may return an awaitable)."""
    while inspect.isawaitable(result):
        result = await result
    return result


def adapt_handler(handler: Any) -> tuple[AsyncCall, Callable[[], Any] | None, str]:
    """Return ``(call, stop, description)`` for any supported handler shape."""
    if handler is None:
        raise ConfigurationError("Route(handler=...): a handler is required")
    handle = getattr(handler, "handle", None)
    if handle is not None and callable(handle) and not inspect.isfunction(handler):
        stop = getattr(handler, "stop", None)
        if stop is not None and not callable(stop):
            raise ConfigurationError(
                f"Route(handler=...): {type(handler).__name__}.stop must be callable"
            )
        return _as_async(handle), stop, f"{type(handler).__name__}.handle"
    if not callable(handler):
        raise ConfigurationError(
            "Route(handler=...): expected a callable (content, metadata) or an object with "
            f"a handle(content, metadata) method, got {type(handler).__name__}"
        )
    name = getattr(handler, "__qualname__", None) or type(handler).__name__
    return _as_async(handler), None, str(name)


def adapt_error_handler(error_handler: Any) -> AsyncCall | None:
    """Return an async callable for an error handler (or None for the default)."""
    if error_handler is None:
        return None
    if not callable(error_handler):
        raise ConfigurationError(
            "Route(error_handler=...): expected a callable (exc_type, exc, message), "
            f"got {type(error_handler).__name__}"
        )
    return _as_async(error_handler)
