"""Opening the pool and the listening connection, with the settings' options."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from loafer_core.settings import Connection

logger = logging.getLogger("loafer_postgres")


def connect_options(connection: Connection, default_name: str, timeout: float) -> dict[str, Any]:
    """asyncpg's ``connect`` keywords for ``connection``: the DSN, the application name,
    TLS, the timeout, then the user's options (which win)."""
    options: dict[str, Any] = {
        "dsn": connection.url,
        "timeout": timeout,
        "server_settings": {"application_name": connection.name or default_name},
    }
    if connection.tls is not None:
        options["ssl"] = connection.tls
    extra = dict(connection.options)
    settings = extra.pop("server_settings", None)
    if isinstance(settings, dict):
        options["server_settings"] = {**options["server_settings"], **settings}
    options.update(extra)
    return options


async def open_pool(options: dict[str, Any], size: int, statement_timeout: float) -> Any:
    """An asyncpg pool of at most ``size`` connections (one opened now)."""
    return await asyncpg.create_pool(
        min_size=1, max_size=size, command_timeout=statement_timeout, **options
    )


async def close_pool(pool: Any, timeout: float) -> None:
    """Close ``pool`` gracefully within ``timeout``, else terminate it."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except (TimeoutError, Exception):  # a cancellation passes through
        pool.terminate()


class Listener:
    """One connection LISTENing on ``channel``: ``wake`` is set on each notification of
    ``payload`` (and whenever the connection is lost or opened again: a notification
    may have been missed). :meth:`ensure` reopens it, at most every ``pause`` seconds."""

    def __init__(self, options: dict[str, Any], channel: str, payload: str, pause: float) -> None:
        self._options = options
        self.channel = channel
        self.payload = payload
        self.pause = pause
        self.wake = asyncio.Event()
        self._conn: Any = None
        self._next_try = 0.0
        #: notifications received (tests and diagnosis)
        self.notifications = 0

    @property
    def connected(self) -> bool:
        """True while the listening connection is open."""
        conn = self._conn
        return conn is not None and not conn.is_closed()

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload == self.payload:
            self.notifications += 1
            self.wake.set()

    def _lost(self, conn: Any) -> None:
        if conn is self._conn:
            self._conn = None
            self.wake.set()

    async def ensure(self, on_error: Callable[[BaseException], None]) -> None:
        """Open the connection if it is not (unless tried less than ``pause`` ago)."""
        if self.connected:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_try:
            return
        self._next_try = loop.time() + self.pause
        conn = None
        try:
            conn = await asyncpg.connect(**self._options)
            conn.add_termination_listener(self._lost)
            await conn.add_listener(self.channel, self._notified)
        except asyncio.CancelledError:
            if conn is not None:
                conn.terminate()
            raise
        except Exception as exc:
            if conn is not None:
                conn.terminate()
            on_error(exc)
            return
        self._conn = conn
        self.wake.set()  # what was notified while we were not listening is not known

    async def close(self, timeout: float) -> None:
        """Stop listening and close the connection (terminated past ``timeout``)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), timeout)
        if not conn.is_closed():
            conn.terminate()
