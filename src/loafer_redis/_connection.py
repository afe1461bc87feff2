"""Connections: a bounded pool for commands, one dedicated connection for the blocking
``XREADGROUP``, so that ``CLIENT UNBLOCK`` (sent on the pool) can end its wait, and one
for the acknowledgements (``XACK``), the other hot command.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.utils import HIREDIS_AVAILABLE

from loafer_core.errors import ProviderError
from loafer_redis._resp import pack, read_replies
from loafer_redis.errors import mask_url

__all__ = ["BlockingReader", "DirectConnection", "open_client"]


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


class DirectConnection:
    """One connection of its own (outside the pool), used by one task at a time: the
    caller packs the command (:func:`loafer_redis._resp.pack`), a reply is read for it.

    Cheaper per call than redis-py's ``execute_command`` (no pool checkout, command
    packing, retry wrapper or per-call instrumentation): for the hot commands only
    (``XREADGROUP``, ``XACK``). A failed or cancelled call drops the connection (its
    reply could no longer be matched); the next call connects again.
    """

    def __init__(self, client: redis.asyncio.Redis, *, socket_timeout: float) -> None:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        kwargs["socket_timeout"] = None  # each call sets its own deadline
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
        self._buffer = bytearray()  # bytes read past a reply (the Python parser's)

    def _ready(self, connection: Any) -> bool:
        return connection is not None and bool(connection.is_connected)

    async def _connected(self, connection: Any) -> None:
        """Called once a new connection is up (before its first command)."""

    async def _connect(self) -> Any:
        connection = self._connection
        if self._ready(connection):
            return connection
        await self.disconnect()
        connection = self._connection_class(**self._kwargs)
        self._connection = connection
        async with asyncio.timeout(self._socket_timeout * 2):
            await connection.connect()  # type: ignore[no-untyped-call]
            await self._connected(connection)
        return connection

    async def _exchange(
        self,
        connection: Any,
        packed: bytes,
        replies: int,
        on_reply: Callable[[Any], None] | None,
    ) -> Any:
        """Send ``packed``; read ``replies`` replies (error replies as values), each but
        the last handed to ``on_reply`` as it comes; return the last."""
        await connection.send_packed_command(packed, check_health=False)
        stream = getattr(connection, "_reader", None)
        python = self._python_parser and isinstance(stream, asyncio.StreamReader)
        for left in range(replies - 1, -1, -1):
            if python and isinstance(stream, asyncio.StreamReader):  # one pass per reply
                (reply,) = await read_replies(stream, 1, self._buffer)
            else:
                try:
                    reply = await connection.read_response()  # hiredis: C, faster still
                except redis.exceptions.ResponseError as exc:
                    reply = exc
            if left and on_reply is not None:
                on_reply(reply)
        return reply

    async def call(
        self,
        packed: bytes,
        timeout: float,
        *,
        replies: int = 1,
        on_reply: Callable[[Any], None] | None = None,
    ) -> Any:
        """Send one packed command (or ``replies`` of them, pipelined: the replies before
        the last are handed to ``on_reply``, error replies as ``ResponseError`` values);
        the last one's reply within ``timeout`` seconds (an error reply is raised as
        ``ResponseError``, the connection kept)."""
        connection = await self._connect()
        done = False
        try:
            async with asyncio.timeout(timeout):
                reply = await self._exchange(connection, packed, replies, on_reply)
            done = True  # in step, even after an error reply
        finally:
            if not done:
                await self.disconnect()
        if isinstance(reply, redis.exceptions.ResponseError):
            raise reply
        return reply

    async def disconnect(self) -> None:
        """Drop the connection (nothing is waiting on it afterwards)."""
        connection, self._connection = self._connection, None
        self._buffer = bytearray()
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)


class BlockingReader(DirectConnection):
    """The connection that sends ``XREADGROUP ... BLOCK``, knowing its ``CLIENT ID``
    (for ``CLIENT UNBLOCK``). Only the reader task uses it, one command at a time."""

    def __init__(self, client: redis.asyncio.Redis, *, socket_timeout: float) -> None:
        super().__init__(client, socket_timeout=socket_timeout)
        #: the server's id of the connection, while connected (for ``CLIENT UNBLOCK``)
        self.client_id: int | None = None
        #: true while an ``XREADGROUP`` is waiting for its reply
        self.reading = False

    def _ready(self, connection: Any) -> bool:
        return super()._ready(connection) and self.client_id is not None

    async def _connected(self, connection: Any) -> None:
        await connection.send_command("CLIENT", "ID")
        self.client_id = int(await connection.read_response())

    async def read(
        self,
        args: tuple[Any, ...] | bytes,
        block: float,
        before: bytes = b"",
        on_before: Callable[[Any], None] | None = None,
    ) -> Any:
        """Send one blocking read (its arguments, or the command already packed), after
        the packed command ``before`` if given (pipelined: its reply is handed to
        ``on_before`` as soon as it comes); the read's reply within ``block`` plus
        ``socket_timeout``."""
        packed = args if isinstance(args, bytes) else pack(args)
        await self._connect()  # connected (and its id known) before it counts as reading
        self.reading = True
        try:
            return await self.call(
                before + packed,
                block + self._socket_timeout,
                replies=2 if before else 1,
                on_reply=on_before,
            )
        finally:
            self.reading = False

    async def disconnect(self) -> None:
        """Drop the connection (nothing is waiting on it afterwards)."""
        self.client_id = None
        await super().disconnect()


def provider_error(what: str, url: str) -> ProviderError:
    """A ProviderError saying ``what`` failed at the masked URL."""
    return ProviderError(f"Redis at {mask_url(url)}: {what}")
