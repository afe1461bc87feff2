"""The transactional outbox: publish a message in the caller's own database transaction.

A handler (or a web request) that writes to PostgreSQL and must also tell a broker
writes the message into the outbox table **in the same transaction** as its own rows::

    outbox = Outbox()

    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO orders ...")
        await outbox.publish(conn, "orders", {"id": 7}, key="customer-42")
    # committed: the order and its message; rolled back: neither

:meth:`Outbox.publish` never commits: the message exists exactly when the caller's
transaction commits. A relay (:func:`loafer_postgres.relay.relay_route`), an ordinary
route whose provider reads the outbox table, forwards each row to the publisher its
``destination`` names and deletes the row only once that broker confirmed it.

It takes an asyncpg connection that is inside a transaction (one that is not is refused:
each statement would commit on its own), or a SQLAlchemy ``AsyncSession`` /
``AsyncConnection`` (its transaction, begun by the session if none is: SQLAlchemy's
"autobegin"; it commits with the session's ``commit()``). SQLAlchemy is recognised by the
object's type and never imported here.

The row: ``queue`` the outbox's ``name``, ``destination`` the relay's target name,
``key`` the ordering key (rows of one key are relayed one at a time, in order), ``body``
the encoded body (bytes as given, ``str`` as UTF-8, a typed object as JSON with its type
header, anything else as JSON: as the bundled publishers encode bodies), ``headers`` a
JSON object of strings, with the message's id under :data:`MESSAGE_ID_HEADER` (a fresh
UUID unless ``message_id=`` is given), ``available_at`` the transaction's start plus
``delay``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from loafer_core.errors import ConfigurationError
from loafer_core.kit import check_delay
from loafer_core.typed import TYPE_HEADER, encode
from loafer_postgres.schema import DEFAULT_OUTBOX_TABLE, check_identifier

__all__ = ["MESSAGE_ID_HEADER", "Outbox"]

MESSAGE_ID_HEADER = "loafer-message-id"
"""The header every outbox row carries: the message's id, the same in every copy the
relay may publish (a consumer deduplicates on it: ``Inbox(message_id=MESSAGE_ID_HEADER)``)."""


_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
_LOCK_NAMED = "SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"


def _encode_body(body: Any, type_header: str | None) -> tuple[bytes, dict[str, str]]:
    """The body's bytes, and the headers its encoding adds (a typed object's type)."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), {}
    if isinstance(body, str):
        return body.encode("utf-8"), {}
    encoded = encode(body, header=type_header)
    if encoded is not None:
        return encoded.body, {k: str(v) for k, v in (encoded.headers or {}).items()}
    try:
        return json.dumps(body).encode("utf-8"), {}
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"Outbox.publish: cannot encode a {type(body).__name__} body as JSON ({exc}); "
            "pass bytes, str, a typed object or a JSON-serialisable object"
        ) from None


def _header_value(name: Any, value: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"Outbox.publish: header names are non-empty str, got {name!r}")
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    raise ConfigurationError(
        f"Outbox.publish: header {name!r} is a {type(value).__name__}; outbox headers hold "
        "str (int, float, bool and UTF-8 bytes are written as text)"
    )


def _delay(value: float | None, at: datetime | None = None) -> float:
    """Seconds before the relay may forward the row (``delay`` or an aware ``at``)."""
    scheduled = check_delay(value, at, what="Outbox.publish")
    return 0.0 if scheduled is None else scheduled.delay


def _text(what: str, value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"Outbox.publish({what}=...): expected a non-empty str, got {value!r}"
        )
    return value


def _is_sqlalchemy(target: Any) -> bool:
    """An ``AsyncSession`` or ``AsyncConnection`` of SQLAlchemy (by its type: not imported)."""
    return any(
        cls.__module__.startswith("sqlalchemy.")
        and cls.__name__ in ("AsyncSession", "AsyncConnection")
        for cls in type(target).__mro__
    )


def _is_asyncpg(target: Any) -> bool:
    return (
        any(
            cls.__module__.startswith("asyncpg.") and cls.__name__ == "Connection"
            for cls in type(target).__mro__
        )
        or type(target).__name__ == "PoolConnectionProxy"
    )


class Outbox:
    """Writes messages into the outbox table in the caller's transaction (module docstring).

    Arguments:
        table: the outbox table (``loafer_outbox``; created by ``loafer postgres init``).
        schema: its schema (``public``).
        name: this outbox's name, the rows' ``queue`` column: the relay of that name reads
            them (several outboxes may share one table).
        type_header: the header naming a typed body's type (``None``: none).
        serialize_keys: take a transaction-scoped advisory lock on each key published
            (``pg_advisory_xact_lock``), so two transactions writing one key run one after
            the other: the key's rows then get their ids in commit order, and the relay's
            order per key is the commit order even with several writers per key. The
            cost: a second writer of a key waits for the first to commit; a transaction
            publishing several keys should publish them in one order (two taking the same
            keys in opposite orders deadlock, and PostgreSQL aborts one of them).

    No I/O here: the first :meth:`publish` finds a missing table (asyncpg's
    ``UndefinedTableError``, in the caller's transaction, which it aborts).
    """

    def __init__(
        self,
        *,
        table: str = DEFAULT_OUTBOX_TABLE,
        schema: str = "public",
        name: str = "default",
        type_header: str | None = TYPE_HEADER,
        serialize_keys: bool = False,
    ) -> None:
        try:
            check_identifier(table)
            check_identifier(schema, "schema")
        except ValueError as exc:
            raise ConfigurationError(f"Outbox: {exc}") from None
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"Outbox(name=...): expected a non-empty str, got {name!r}")
        self.table = table
        self.schema = schema
        self.name = name
        self.type_header = type_header
        if not isinstance(serialize_keys, bool):
            raise ConfigurationError(
                f"Outbox(serialize_keys=...): expected a bool, got {serialize_keys!r}"
            )
        self.serialize_keys = serialize_keys
        self._lock_prefix = f"loafer_outbox:{schema}.{table}/{name}/"
        columns = "(queue, destination, key, body, headers, available_at)"
        self._sql = (
            f'INSERT INTO "{schema}"."{table}" {columns} VALUES '
            "($1, $2, $3, $4, $5::jsonb, now() + make_interval(secs => $6))"
        )
        self._sql_named = (
            f'INSERT INTO "{schema}"."{table}" {columns} VALUES '
            "(:queue, :destination, :key, :body, CAST(:headers AS jsonb), "
            "now() + make_interval(secs => :delay))"
        )

    def __repr__(self) -> str:
        return f"Outbox(table={self.schema}.{self.table}, name={self.name!r})"

    def row(
        self,
        destination: str,
        body: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        key: str | None = None,
        delay: float | None = None,
        message_id: str | None = None,
        at: datetime | None = None,
    ) -> tuple[str, str, str | None, bytes, str, float]:
        """The values of the row :meth:`publish` inserts (queue, destination, key, body,
        headers as JSON, delay), checked; no I/O."""
        _text("destination", destination)
        _text("key", key, optional=True)
        data, added = _encode_body(body, self.type_header)
        written = {**added}
        for name, value in (headers or {}).items():
            written[name] = _header_value(name, value)
        if message_id is not None:
            written[MESSAGE_ID_HEADER] = str(_text("message_id", message_id))
        else:
            written.setdefault(MESSAGE_ID_HEADER, uuid.uuid4().hex)
        return (self.name, destination, key, data, json.dumps(written), _delay(delay, at))

    async def publish(
        self,
        conn_or_session: Any,
        destination: str,
        body: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        key: str | None = None,
        delay: float | None = None,
        message_id: str | None = None,
        at: datetime | None = None,
    ) -> str:
        """Write one message in the caller's transaction; return its message id.

        ``destination``: the name of the relay's publisher to forward it to; ``key``: its
        ordering key (rows of one key are relayed one at a time, in order); ``delay``:
        seconds before the relay may forward it, or ``at``: an aware datetime (the
        relay's publisher may delay it further: ``docs/scheduling.md``); ``message_id``:
        the id it carries in :data:`MESSAGE_ID_HEADER` (a new UUID by default). Never
        commits.
        """
        values = self.row(
            destination,
            body,
            headers=headers,
            key=key,
            delay=delay,
            message_id=message_id,
            at=at,
        )
        await self._insert(conn_or_session, [values])
        return str(json.loads(values[4])[MESSAGE_ID_HEADER])

    async def publish_many(
        self,
        conn_or_session: Any,
        destination: str,
        bodies: Iterable[Any],
        *,
        headers: Mapping[str, Any] | None = None,
        key: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
    ) -> list[str]:
        """Write many messages (the same ``destination``, ``headers``, ``key`` and
        ``delay``/``at``, in the order given) in the caller's transaction, in one round
        trip; return their ids."""
        wait = _delay(delay, at)
        rows = [
            self.row(destination, body, headers=headers, key=key, delay=wait) for body in bodies
        ]
        if rows:
            await self._insert(conn_or_session, rows)
        return [str(json.loads(r[4])[MESSAGE_ID_HEADER]) for r in rows]

    def _locks(self, rows: list[tuple[Any, ...]]) -> list[str]:
        """The advisory lock names of the rows' keys (``serialize_keys``), each once, in
        the order the rows name them."""
        if not self.serialize_keys:
            return []
        return list(dict.fromkeys(self._lock_prefix + r[2] for r in rows if r[2] is not None))

    async def _insert(self, target: Any, rows: list[tuple[Any, ...]]) -> None:
        locks = self._locks(rows)
        if _is_sqlalchemy(target):
            from sqlalchemy import text  # the caller's: imported only once it gave one

            names = ("queue", "destination", "key", "body", "headers", "delay")
            params = [dict(zip(names, r, strict=True)) for r in rows]
            for lock in locks:
                await target.execute(text(_LOCK_NAMED), {"name": lock})
            await target.execute(text(self._sql_named), params if len(params) > 1 else params[0])
            return
        if not _is_asyncpg(target):
            raise ConfigurationError(
                f"Outbox.publish: expected an asyncpg connection inside a transaction or a "
                f"SQLAlchemy AsyncSession/AsyncConnection, got {type(target).__name__} (a "
                "pool is not a transaction: acquire a connection and open one)"
            )
        if not target.is_in_transaction():
            raise ConfigurationError(
                "Outbox.publish: the asyncpg connection is not inside a transaction, so the "
                "message would be committed on its own, whatever happens to your writes; "
                "publish inside `async with conn.transaction():`"
            )
        for lock in locks:
            await target.execute(_LOCK, lock)
        if len(rows) == 1:
            await target.execute(self._sql, *rows[0])
        else:
            await target.executemany(self._sql, rows)
