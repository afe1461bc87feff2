"""Connections: a bounded pool for commands, and one dedicated connection for the
blocking ``XREADGROUP``, so that ``CLIENT UNBLOCK`` (sent on the pool) can end its wait.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.utils import HIREDIS_AVAILABLE

from loafer_core.errors import ProviderError
from loafer_redis._resp import read_reply
from loafer_redis._url import mask_url

__all__ = ["BlockingReader", "open_client"]


def open_client(
    url: str,
    *,
    socket_timeout: float,
    connect_timeout: float,
    max_connections: int,
    options: Mapping[str, Any] | None = None,
) -> redis.asyncio.Redis:
    """A client over a bounded pool (a caller waits up to ``socket_timeout`` for a free
    connection); bytes in and out; no retries of our own calls by redis-py (the
    dispatcher retries with backoff, and a retried script could run twice)."""
    try:
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            decode_responses=False,
            **dict(options or {}),
        )
    except (ValueError, TypeError) as exc:
        from loafer_core.errors import ConfigurationError

        raise ConfigurationError(
            f"Redis URL {mask_url(url)} or its options are not valid: {type(exc).__name__}"
        ) from None
    return redis.asyncio.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))


class BlockingReader:
    """One connection that sends ``XREADGROUP ... BLOCK``, knowing its ``CLIENT ID``.

    Only the reader task uses it, one command at a time. A failed or cancelled read
    drops the connection (its reply could no longer be matched); the next read
    connects again and learns the new id.
    """

    def __init__(self, client: redis.asyncio.Redis, *, socket_timeout: float) -> None:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        kwargs["socket_timeout"] = None  # each read sets its own deadline
        kwargs["protocol"] = 2  # no push messages: replies only (see _resp)
        if "maint_notifications_config" in kwargs:  # redis-py 7+: pushes need RESP3
            from redis.maint_notifications import MaintNotificationsConfig

            kwargs["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
            kwargs.pop("maint_notifications_pool_handler", None)
        self._connection_class = pool.connection_class
        #: redis-py parses in Python (no hiredis): read the replies with _resp instead
        self._python_parser = not HIREDIS_AVAILABLE
        self._kwargs = kwargs
        self._socket_timeout = socket_timeout
        self._connection: Any = None
        #: the server's id of the connection, while connected (for ``CLIENT UNBLOCK``)
        self.client_id: int | None = None
        #: true while an ``XREADGROUP`` is waiting for its reply
        self.reading = False

    async def _connect(self) -> Any:
        connection = self._connection
        if connection is not None and connection.is_connected and self.client_id is not None:
            return connection
        await self.disconnect()
        connection = self._connection_class(**self._kwargs)
        self._connection = connection
        async with asyncio.timeout(self._socket_timeout * 2):
            await connection.connect()  # type: ignore[no-untyped-call]
            await connection.send_command("CLIENT", "ID")
            self.client_id = int(await connection.read_response())
        return connection

    async def read(self, args: tuple[Any, ...], block: float) -> Any:
        """Send one blocking read; its reply within ``block`` plus ``socket_timeout``."""
        connection = await self._connect()
        done = False
        try:
            self.reading = True
            async with asyncio.timeout(block + self._socket_timeout):
                await connection.send_command(*args)
                stream = getattr(connection, "_reader", None)
                if self._python_parser and isinstance(stream, asyncio.StreamReader):
                    reply = await read_reply(stream)  # one pass per reply, not per line
                else:
                    reply = await connection.read_response()  # hiredis: C, faster still
            done = True
            return reply
        except redis.exceptions.ResponseError:
            done = True  # the connection is still in step: keep it
            raise
        finally:
            self.reading = False
            if not done:
                await self.disconnect()

    async def disconnect(self) -> None:
        """Drop the connection (nothing is waiting on it afterwards)."""
        connection, self._connection = self._connection, None
        self.client_id = None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)


def provider_error(what: str, url: str) -> ProviderError:
    """A ProviderError saying ``what`` failed at the masked URL."""
    return ProviderError(f"Redis at {mask_url(url)}: {what}")
