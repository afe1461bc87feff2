"""Publishing to a PostgreSQL queue: one INSERT per message (its own transaction), or one
INSERT of a whole batch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sized
from datetime import datetime
from typing import Any, ClassVar

import asyncpg

from loafer_core import kit
from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.ext.otel import publish_span
from loafer_core.kit import check_delay, map_exceptions
from loafer_core.provider import Description, Support
from loafer_core.typed import encode
from loafer_postgres import _describe
from loafer_postgres._connection import close_pool, connect_options, open_pool
from loafer_postgres._sql import Statements
from loafer_postgres.errors import mask_url, protect, secrets_of, translate
from loafer_postgres.settings import PostgresPublisherSettings, settings_of

__all__ = ["PostgresPublisher", "encode_body"]

#: ``messaging.system`` of the spans.
SYSTEM = "postgresql"


def encode_body(body: Any, owner: str = "PostgresPublisher") -> bytes:
    """Bytes pass through; ``str`` is UTF-8 text; anything else is encoded as JSON
    (:func:`loafer_core.kit.encode_body`)."""
    return kit.encode_body(body, owner)


def _delay(delay: float | None, at: datetime | None) -> float:
    """Seconds the row waits (``available_at = now() + them``): 0 for none."""
    scheduled = check_delay(delay, at, what="PostgresPublisher")
    return 0.0 if scheduled is None else scheduled.delay


class PostgresPublisher:
    """Insert messages into a PostgreSQL queue table (``loafer postgres init`` creates it).

    ``publish`` returns once the row is committed (an INSERT in its own transaction);
    ``key=`` gives it an ordering key (rows of one key are consumed one at a time, in
    order), ``delay=`` (seconds) or ``at=`` (an aware datetime) makes it available
    only then (natively: the row's ``available_at``). A missing
    table is a ConfigurationError naming ``loafer postgres init``; a row the server
    refuses (a constraint, a trigger) a :class:`~loafer_core.errors.PublishRefused`; a
    lost connection a ProviderError (the row may or may not be committed).

    Takes one :class:`~loafer_postgres.settings.PostgresPublisherSettings`, or the same
    values as flat keywords: ``queue`` (also positional), ``url``, ``table``, ``schema``,
    ``pool_size``, ``timeout``, ``connect_timeout``, ``close_timeout``,
    ``connection_name``, ``tls``, ``connection_options``, ``type_header``. Typed objects
    are published as JSON with their type in ``type_header``
    (:func:`~loafer_core.typed.encode`); each publish is traced when the process uses
    OpenTelemetry.

    To write a message in *your own* transaction (with your other writes), use the
    outbox (``loafer_postgres.outbox``) instead.
    """

    settings_type = PostgresPublisherSettings
    #: Delayed publish (``delay=`` / ``at=``): native, the row's ``available_at``.
    delay_support: ClassVar[Support] = Support.NATIVE
    #: The longest delay a publish may ask for (None: no limit).
    max_delay: ClassVar[float | None] = None

    def __init__(
        self, settings: PostgresPublisherSettings | str | None = None, /, **options: Any
    ) -> None:
        self.settings = settings_of(
            PostgresPublisherSettings, "PostgresPublisher", settings, options
        )
        s = self.settings
        self.queue = s.queue
        self.type_header = s.type_header
        self._sql = Statements(s.schema, s.table)
        self._url = s.connection.url
        self._secrets = secrets_of(self._url, s.connection.options)
        self._where = f"PostgreSQL at {mask_url(self._url)}"
        self._options = connect_options(s.connection, "loafer:publisher", float(s.timeouts.connect))
        self._pool: Any = None
        self._lock = asyncio.Lock()
        self._closed = False

    def description(self) -> Description:
        """The table and queue, the server (no secret): see
        :class:`~loafer_core.provider.Describable`."""
        s = self.settings
        return _describe.publisher(mask_url(self._url), s.schema, s.table, s.queue)

    def __repr__(self) -> str:
        return (
            f"PostgresPublisher(queue={self.queue!r}, table={self._sql.qualified!r}, "
            f"url={mask_url(self._url)!r})"
        )

    async def __aenter__(self) -> PostgresPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _error(self, what: str) -> map_exceptions:
        return map_exceptions(
            lambda exc: translate(what, exc, self._where, self._secrets, table=self._sql.qualified),
            catch=(asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError),
        )

    async def start(self) -> None:
        """Open the pool and check the table exists (else the first publish does);
        after ``close()``, this opens it again."""
        self._closed = False
        await self._ensure_open()

    async def _ensure_open(self) -> Any:
        pool = self._pool
        if pool is not None:
            return pool
        async with self._lock:
            if self._closed:
                raise ProviderError(
                    f"PostgresPublisher to {self._sql.qualified}: closed (start() opens it again)"
                )
            if self._pool is None:
                protect(self._secrets)
                s = self.settings
                with self._error("connecting"):
                    pool = await open_pool(self._options, s.pool_size, float(s.timeouts.publish))
                try:
                    with self._error("checking the table"):
                        found = await pool.fetchval(
                            "SELECT to_regclass($1) IS NOT NULL", self._sql.qualified
                        )
                    if not found:
                        raise translate(
                            "checking the table",
                            asyncpg.UndefinedTableError("missing"),
                            self._where,
                            (),
                            table=self._sql.qualified,
                        )
                except BaseException:
                    await close_pool(pool, float(s.timeouts.close))
                    raise
                self._pool = pool
            return self._pool

    def _queue(self, queue: str | None) -> str:
        chosen = queue if queue is not None else self.queue
        if not chosen:
            raise ConfigurationError(
                "PostgresPublisher: no queue; pass queue=... to the publisher or to publish()"
            )
        return chosen

    def _encode(self, body: Any, headers: Mapping[str, Any] | None) -> tuple[bytes, str]:
        """The body's bytes and the headers as JSON text (a typed object's type header
        under the caller's ``headers``, which win)."""
        own = {str(k): str(v) for k, v in (headers or {}).items()}
        if type(body) is bytes:
            return body, json.dumps(own)
        encoded = encode(body, header=self.type_header)
        if encoded is None:
            return encode_body(body), json.dumps(own)
        return encoded.body, json.dumps({**dict(encoded.headers or {}), **own})

    async def publish(
        self,
        body: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        key: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        queue: str | None = None,
    ) -> None:
        """Insert one row and return once it is committed.

        ``body``: bytes, str (UTF-8), a typed object or a JSON-serialisable object.
        ``headers``: string values. ``key``: its ordering key. ``delay``: seconds before
        it may be consumed, or ``at``: an aware datetime (the row's ``available_at``,
        counted on the server's clock). ``queue``: another queue than the publisher's.
        """
        target = self._queue(queue)
        wait = _delay(delay, at)
        if key is not None and not isinstance(key, str):
            raise ConfigurationError(f"PostgresPublisher: key must be a str, got {key!r}")
        with publish_span(SYSTEM, target, headers) as sent:
            data, hdrs = self._encode(body, sent)
            pool = await self._ensure_open()
            with self._error(f"inserting into {self._sql.qualified}"):
                await pool.fetchval(self._sql.insert, target, data, hdrs, key, wait, None)

    async def publish_many(
        self,
        bodies: Iterable[Any],
        *,
        headers: Mapping[str, Any] | None = None,
        key: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        queue: str | None = None,
    ) -> int:
        """Insert many rows in one statement (one transaction: all or none), in order;
        return how many (``delay``/``at`` as :meth:`publish`, for every row)."""
        target = self._queue(queue)
        wait = _delay(delay, at)
        items = list(bodies)
        count = len(items) if isinstance(items, Sized) else None
        with publish_span(SYSTEM, target, headers, count=count) as sent:
            encoded = [self._encode(b, sent) for b in items]
            if not encoded:
                return 0
            pool = await self._ensure_open()
            with self._error(f"inserting {len(encoded)} rows into {self._sql.qualified}"):
                await pool.execute(
                    self._sql.insert_many,
                    target,
                    [d for d, _ in encoded],
                    [h for _, h in encoded],
                    [key] * len(encoded),
                    wait,
                )
            return len(encoded)

    async def close(self) -> None:
        """Close the pool, within ``close_timeout``. Idempotent."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await close_pool(pool, float(self.settings.timeouts.close))
