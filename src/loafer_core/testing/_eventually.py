"""Await a condition nothing signals (a broker's state, a child process's file), bounded.

::

    await eventually(lambda: len(received) == 3, timeout=5)
    depth = await eventually(lambda: admin.depth(queue), what="a message in the queue")
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["eventually"]

T = TypeVar("T")

_NOTHING: Any = object()


@overload
async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str | None = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T],
    *,
    timeout: float = ...,
    interval: float = ...,
    what: str | None = ...,
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str | None = None,
) -> Any:
    """Call ``check`` (a plain or an async function, no arguments) until it returns a true
    value, and return that value; ``timeout`` bounds the whole wait, each call included.

    A call that raises :class:`AssertionError` counts as "not yet" (so ``check`` may be a
    block of asserts); any other exception is raised at once. Past ``timeout`` an
    :class:`AssertionError` names ``what`` (else ``check``) and what was last seen: the
    last value returned, the last assertion's message, or that the last call was still
    running. ``check`` is called at least once, then every ``interval`` seconds.
    """
    if timeout < 0 or interval < 0:
        raise ValueError(f"eventually: timeout and interval must be >= 0 ({timeout}, {interval})")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = _NOTHING
    failure: AssertionError | None = None
    running = False
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                remaining = deadline - loop.time()
                try:
                    # at least one answer, however short the timeout
                    async with asyncio.timeout(max(remaining, interval, 0.01)):
                        result = await result
                except TimeoutError:
                    running = True
                    break
        except AssertionError as exc:
            failure, last = exc, _NOTHING
        else:
            if result:
                return result
            failure, last = None, result
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        await asyncio.sleep(min(interval, remaining))
    raise AssertionError(_describe(check, what, timeout, last, failure, running))


def _describe(
    check: Callable[..., Any],
    what: str | None,
    timeout: float,
    last: Any,
    failure: AssertionError | None,
    running: bool,
) -> str:
    name = what or getattr(check, "__qualname__", None) or repr(check)
    message = f"not true within {timeout:g}s: {name}"
    seen: list[str] = []
    if failure is not None:
        seen.append(f"last check failed: {failure}" if str(failure) else "last check failed")
    elif last is not _NOTHING:
        seen.append(f"last seen: {last!r}")
    if running:
        seen.append("the last call was still running at the deadline")
    return "; ".join([message, *seen])
