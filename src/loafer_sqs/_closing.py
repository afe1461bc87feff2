"""Closing within a bound, and releasing everything even when the bound cuts it short.

``close()`` of the provider and of the publishers first winds down (sends what is
queued) for at most its budget; then, whatever happened (done, out of time, or the
caller's own deadline cancelled it), it gives up what is left, cancels its tasks and
closes the client. That last part is short (no network round trip) and runs to its end
even if the caller is cancelled again meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from loafer_sqs.errors import mask

__all__ = ["CANCEL_GRACE", "DEFAULT_CLOSE_TIMEOUT", "budget", "release"]

logger = logging.getLogger("loafer_sqs")

#: Seconds ``close()`` may spend sending what is queued (settlements, publishes).
DEFAULT_CLOSE_TIMEOUT = 10.0
#: Seconds cancelled tasks get to end before the client is closed under them anyway.
CANCEL_GRACE = 1.0

#: releases still running after their close() was cancelled (kept until they end)
_releasing: set[asyncio.Task[None]] = set()


def budget(close_timeout: float, timeout: float | None) -> float:
    """The time a ``close(timeout)`` may take: the shorter of ``timeout`` (a deadline
    already past counts as 0) and the object's ``close_timeout``."""
    if timeout is None:
        return close_timeout
    return max(0.0, min(float(timeout), close_timeout))


async def release(
    tasks: Sequence[asyncio.Task[None]], stack: contextlib.AsyncExitStack | None, what: str
) -> None:
    """Wait (briefly) for the cancelled ``tasks`` to end, then close the client on
    ``stack``. Cancelling the caller does not stop it: it ends in the background."""
    task = asyncio.get_running_loop().create_task(_release(tasks, stack, what))
    _releasing.add(task)
    task.add_done_callback(_releasing.discard)
    await asyncio.shield(task)


async def _release(
    tasks: Sequence[asyncio.Task[None]], stack: contextlib.AsyncExitStack | None, what: str
) -> None:
    if tasks:
        await asyncio.wait(tasks, timeout=CANCEL_GRACE)
    if stack is not None:
        try:
            await stack.aclose()
        except Exception as exc:  # closing must not fail the shutdown
            logger.warning(
                "closing the %s client failed: %s: %s", what, type(exc).__name__, mask(exc)
            )
