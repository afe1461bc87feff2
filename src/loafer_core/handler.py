"""Handlers and error handlers: the user's code, adapted to one async calling convention.

A handler is any of:

- ``async def handler(content, metadata)``: awaited on the event loop;
- a plain function: run in the default thread pool, with the caller's contextvars;
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
import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from loafer_core.errors import ConfigurationError

__all__ = ["ErrorHandler", "Handler", "HandlerObject", "adapt_error_handler", "adapt_handler"]

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
    awaitable again, await it too: see :func:`settle_result`). A sync ``fn`` runs in the
    default thread pool; ``asyncio.to_thread`` copies the caller's contextvars into it.
    """
    if _is_async_callable(fn):
        return fn

    async def call_in_thread(*args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    return call_in_thread


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
