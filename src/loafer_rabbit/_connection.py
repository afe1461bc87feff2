"""Opening and closing aio-pika's robust connection, safe to cancel at any point.

``aio_pika.connect_robust`` builds a ``RobustConnection`` and starts its reconnect loop
before it awaits the first connection; cancelled (or timed out) there, it returns no
connection to close, and the loop goes on reconnecting for good, swallowing the
cancellations meant to end it. So we build the connection ourselves (as
``connect_robust`` does), hold it while it connects, and close whatever we built when the
connect does not finish. Closes are bounded, and finish in the background (still
bounded) when the closer is itself cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from aio_pika.connection import make_url
from aiormq.exceptions import ConnectionClosed

from loafer_rabbit.errors import connect_error, scrub

__all__ = ["close_connection", "open_connection"]

logger = logging.getLogger("loafer_rabbit.connection")

#: Closes still running after their closer was cancelled (kept so they are not collected).
_closing: set[asyncio.Task[None]] = set()


async def open_connection(
    url: str,
    *,
    timeout: float,
    close_timeout: float,
    connection_name: str,
    ssl_context: ssl.SSLContext | None,
    options: Mapping[str, Any],
) -> AbstractRobustConnection:
    """Connect as ``aio_pika.connect_robust(url, timeout=..., **options)`` would; if the
    connect fails, times out or is cancelled, close the connection it built (stopping
    its reconnect loop) before the error or cancellation propagates. A failure is raised
    as our error (:func:`~loafer_rabbit.errors.connect_error`), without the password."""
    kwargs = dict(options)
    try:
        connection = aio_pika.RobustConnection(
            make_url(url, **kwargs),
            ssl_context=ssl_context,
            client_properties={"connection_name": connection_name},
            **kwargs,
        )
    except Exception as exc:
        raise connect_error(exc, url) from None
    try:
        await connection.connect(timeout=timeout)
    except BaseException as exc:
        await close_connection(connection, close_timeout, url)
        if isinstance(exc, Exception):
            raise connect_error(exc, url) from None
        raise
    return connection


async def close_connection(
    connection: AbstractRobustConnection, timeout: float, url: str = ""
) -> None:
    """Close ``connection`` (its reconnect loop first), waiting at most ``timeout``
    seconds. Never raises an error; cancelled, it returns at once and the close goes on
    in the background, bounded by ``timeout`` all the same."""
    task = asyncio.get_running_loop().create_task(
        _close(connection, timeout, url), name="loafer:rabbit:close"
    )
    _closing.add(task)
    task.add_done_callback(_closing.discard)
    await asyncio.shield(task)


async def _close(connection: AbstractRobustConnection, timeout: float, url: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            # Operations still waiting on it (a publish's confirm) fail with this, not
            # with aio-pika's default CancelledError, which would look like a cancellation
            # of their caller.
            await connection.close(ConnectionClosed(320, "closed by the client"))
    except TimeoutError:
        logger.warning(
            "closing the RabbitMQ connection took more than %ss: abandoned (the socket is "
            "closed when the broker or the OS gives up)",
            timeout,
        )
    except Exception as exc:
        logger.debug("error while closing a RabbitMQ connection: %s", scrub(str(exc), url))
