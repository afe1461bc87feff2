"""The inbox: a message's id recorded in the same transaction as its handler's writes.

:class:`Inbox` is a middleware for a route of ANY broker. For each delivery it:

1. takes a connection from its pool and opens a transaction (or, given
   ``sessions=async_sessionmaker``, a new SQLAlchemy ``AsyncSession``);
2. inserts ``(consumer, message_id)`` into the inbox table (``ON CONFLICT DO NOTHING``).
   Nothing inserted means the id was recorded by a transaction that **committed**: the
   message was handled; it is settled with ``on_duplicate`` (ACCEPT) and the handler does
   not run (:attr:`Inbox.skipped` counts them). A delivery with the same id being handled
   right now, in this process or another, holds the row's lock: this insert waits until
   that transaction ends, then finds the row (it committed: skipped) or inserts it (it
   rolled back: handled again);
3. runs the route, the handler given that connection: :meth:`Inbox.connection` (or
   :func:`current_connection`; :meth:`Inbox.session` for a session) inside the handler
   returns it, in its transaction. Write
   with it (an :class:`~loafer_postgres.outbox.Outbox` too: ``outbox.publish(
   inbox.connection(), ...)``) and never commit it yourself;
4. **commits only if the route's outcome is ACCEPT** (the handler succeeded, and the
   publishes it forwarded were confirmed). Any other outcome (RETRY, REJECT, RELEASE), an
   exception or a cancellation rolls the transaction back: the handler's writes and the
   record are undone together, so the redelivery is handled again. A REJECT is rolled
   back too, on purpose: a message replayed from the dead letters must be handled, and a
   rejected message whose settlement was lost must reach the dead letters again (had it
   been recorded, its redelivery would be skipped, i.e. ACCEPTED and removed). A commit
   that fails turns the ACCEPT into the route's RETRY; if the commit did happen (the
   connection was lost during its reply), the redelivery is skipped.

So a message's database effects happen once: a redelivered message whose transaction
committed is skipped, one whose transaction rolled back is handled again (a process
killed mid-handler never committed). What is outside that transaction is not covered:
a forwarded publish, an HTTP call, another database. A publish confirmed and then rolled
back (a kill before the commit) is made again: publish through the outbox instead.

Which id: the broker's message id by default (``delivery.message_id``; RabbitMQ's is the
``message_id`` property the producer set, Redis's the entry id); ``message_id="name"``
reads a header (the producer's id, such as
:data:`~loafer_postgres.outbox.MESSAGE_ID_HEADER` written by the outbox); or a function
of the delivery. A delivery without an id is an error of the message (RETRIED, REJECTED
past ``max_attempts``): it is never handled without the guard.

Ids are kept until you delete them (``DELETE FROM loafer_inbox WHERE handled_at < ...``:
keep longer than the broker may redeliver). The handler must be an ``async`` function
(the connection belongs to the event loop).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.idempotency import from_header
from loafer_core.outcome import ACCEPT, Outcome, OutcomeKind
from loafer_core.provider import Delivery
from loafer_postgres.schema import DEFAULT_INBOX_TABLE, check_identifier

if TYPE_CHECKING:
    from loafer_core.context import RouteContext
    from loafer_core.middleware import Process

__all__ = ["Inbox", "current_connection"]

logger = logging.getLogger("loafer_postgres.inbox")

_current: contextvars.ContextVar[Any] = contextvars.ContextVar("loafer_inbox", default=None)

MessageId = Callable[[Delivery], "str | None"]


def current_connection() -> Any:
    """The asyncpg connection (or, for ``Inbox(sessions=...)``, the SQLAlchemy
    ``AsyncSession``), in its transaction, of the delivery the current handler handles
    under an :class:`Inbox`; ``RuntimeError`` outside one."""
    conn = _current.get()
    if conn is None:
        raise RuntimeError(
            "no inbox transaction here: Inbox.connection() is for the handlers of a route "
            "with middleware=[Inbox(...)] (async handlers: not in a thread)"
        )
    return conn


def _broker_id(delivery: Delivery) -> str | None:
    message_id = delivery.message_id
    return None if message_id is None or message_id == "" else str(message_id)


class Inbox:
    """Middleware recording each message's id in its handler's transaction (module docstring).

    Arguments:
        url: the PostgreSQL to open a pool on (at the manager's start; closed after the
            drain); or ``pool``: an asyncpg pool of yours (not opened nor closed here);
            or ``sessions``: a SQLAlchemy ``async_sessionmaker`` (each delivery gets a
            new ``AsyncSession``, in its transaction).
        consumer: the name the ids are recorded under (the same id on two consumers is two
            records); the route's name by default.
        message_id: ``None`` (the broker's id), a header name, or a function of the
            delivery returning the id.
        table: the inbox table (``loafer_inbox``, created by ``loafer postgres init``).
        schema: its schema (``public``).
        pool_size: the pool's maximum size when ``url`` is given: one connection per
            delivery being handled, so at least the route's ``max_concurrency``.
        on_duplicate: the outcome of a message already handled (ACCEPT).

    Counters: :attr:`handled` (committed), :attr:`skipped` (duplicates), :attr:`rolled_back`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        pool: Any = None,
        sessions: Any = None,
        consumer: str | None = None,
        message_id: str | MessageId | None = None,
        table: str = DEFAULT_INBOX_TABLE,
        schema: str = "public",
        pool_size: int = 10,
        on_duplicate: Outcome = ACCEPT,
    ) -> None:
        if sum(given is not None for given in (url, pool, sessions)) != 1:
            raise ConfigurationError(
                "Inbox: give one of url=... (a pool is opened), pool=... (an asyncpg pool) or "
                "sessions=... (a SQLAlchemy async_sessionmaker)"
            )
        if sessions is not None and not callable(sessions):
            raise ConfigurationError(
                f"Inbox(sessions=...): expected an async_sessionmaker, got {sessions!r}"
            )
        if url is not None and (not isinstance(url, str) or not url):
            raise ConfigurationError(f"Inbox(url=...): expected a PostgreSQL URL, got {url!r}")
        try:
            check_identifier(table)
            check_identifier(schema, "schema")
        except ValueError as exc:
            raise ConfigurationError(f"Inbox: {exc}") from None
        if consumer is not None and (not isinstance(consumer, str) or not consumer):
            raise ConfigurationError(f"Inbox(consumer=...): expected a name, got {consumer!r}")
        self.message_id = _message_id(message_id)
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigurationError(
                f"Inbox(pool_size=...): expected an int >= 1, got {pool_size!r}"
            )
        if not isinstance(on_duplicate, Outcome):
            raise ConfigurationError(
                f"Inbox(on_duplicate=...): expected an Outcome, got {on_duplicate!r}"
            )
        self._url = url
        self.pool: Any = pool
        self.sessions: Any = sessions
        self._own_pool = url is not None
        self.consumer = consumer
        self.table = table
        self.schema = schema
        self.pool_size = pool_size
        self.on_duplicate = on_duplicate
        self.handled = 0
        self.skipped = 0
        self.rolled_back = 0
        self._checked = False
        self._opening = asyncio.Lock()
        self._insert = (
            f'INSERT INTO "{schema}"."{table}" (consumer, message_id) VALUES ($1, $2) '
            "ON CONFLICT DO NOTHING RETURNING 1"
        )
        self._insert_named = self._insert.replace("$1", ":consumer").replace("$2", ":message_id")

    def __repr__(self) -> str:
        return f"Inbox(table={self.schema}.{self.table}, consumer={self.consumer!r})"

    @staticmethod
    def connection() -> Any:
        """The current delivery's connection, in its transaction (see
        :func:`current_connection`)."""
        return current_connection()

    @staticmethod
    def session() -> Any:
        """The current delivery's SQLAlchemy ``AsyncSession`` (an inbox given
        ``sessions=``), in its transaction: the same as :meth:`connection`."""
        return current_connection()

    # -- lifecycle (a manager service: started before the routes, closed after the drain) --

    @property
    def services(self) -> list[Any]:
        """Itself: the manager starts it (opens the pool, checks the table) and closes it."""
        return [self]

    async def start(self) -> None:
        """Open the pool (``url``) and check the inbox table exists: a missing table is a
        ``ConfigurationError`` naming ``loafer postgres init`` (the manager does not
        start); a server not reachable yet is logged, and the first delivery connects
        (its deliveries are RETRIED meanwhile)."""
        try:
            await self._ready()
        except ProviderError as exc:
            logger.warning("%s; the first delivery connects again", exc)

    async def _ready(self) -> Any:
        """The pool, opened and checked (once); ``ProviderError`` if the server cannot be
        reached."""
        if self._checked:
            return self.pool
        async with self._opening:
            if self.pool is None and self.sessions is None:
                self.pool = await self._open()
            if not self._checked:
                await self.verify()
                self._checked = True
        return self.pool

    async def _open(self) -> Any:
        import asyncpg

        try:
            return await asyncpg.create_pool(self._url, min_size=1, max_size=self.pool_size)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidCatalogNameError):
                raise ConfigurationError(
                    f"Inbox: PostgreSQL refused the connection ({type(exc).__name__}); check "
                    "the url's user, password and database"
                ) from None
            raise ProviderError(
                f"Inbox: cannot connect to PostgreSQL ({type(exc).__name__})"
            ) from None

    async def verify(self) -> None:
        """Check the inbox table exists (``loafer check``); opens the pool if needed."""
        name = f'"{self.schema}"."{self.table}"'
        if self.sessions is not None:
            found = await self._verify_with_session(name)
        else:
            if self.pool is None:
                self.pool = await self._open()
            async with self.pool.acquire() as conn:
                found = await conn.fetchval("SELECT to_regclass($1)", name)
        if found is None:
            raise ConfigurationError(
                f"Inbox: the table {self.schema}.{self.table} does not exist; create it with "
                f"`loafer postgres init --schema {self.schema}` (or loafer_postgres.schema."
                "create_schema in your migrations)"
            )

    async def _verify_with_session(self, name: str) -> Any:
        from sqlalchemy import text  # the caller's: it gave a sessionmaker

        try:
            async with self.sessions() as session:
                result = await session.execute(text("SELECT to_regclass(:name)"), {"name": name})
                return result.scalar()
        except Exception as exc:
            raise ProviderError(
                f"Inbox: cannot reach PostgreSQL through the sessions ({type(exc).__name__})"
            ) from None

    async def close(self) -> None:
        """Close the pool it opened (idempotent); a pool given to it is left open."""
        pool = self.pool
        self._checked = False
        if pool is not None and self._own_pool:
            self.pool = None
            await pool.close()

    # -- one delivery -----------------------------------------------------------------------

    async def __call__(
        self, delivery: Delivery, route: RouteContext, call_next: Process
    ) -> Outcome:
        """Record the id and run the route in one transaction (module docstring)."""
        try:
            message_id = self.message_id(delivery)
        except Exception as exc:
            return route.failed(
                exc,
                delivery,
                "route %r: could not take the inbox id of message %s",
                route.name,
                delivery.message_id,
            )
        if message_id is None:
            return route.failed(
                ValueError("the message has no id for the inbox"),
                delivery,
                "route %r: message %s has no inbox id (%s gave None); it is not handled "
                "without the inbox's guard: give Inbox(message_id=...) a header the "
                "producer sets",
                route.name,
                delivery.message_id,
                getattr(self.message_id, "__qualname__", self.message_id),
            )
        try:
            pool = self.pool if self._checked else await self._ready()
        except Exception as exc:  # not reachable (or the table gone): retried, never unguarded
            return route.failed(
                exc,
                delivery,
                "route %r: the inbox cannot reach PostgreSQL for message %s; it will be retried",
                route.name,
                delivery.message_id,
            )
        consumer = self.consumer if self.consumer is not None else route.name
        if self.sessions is not None:
            async with self.sessions() as session:
                unit: Any = _SessionUnit(session, self._insert_named)
                return await self._in_transaction(
                    unit, consumer, str(message_id), delivery, route, call_next
                )
        async with pool.acquire() as conn:
            return await self._in_transaction(
                _ConnectionUnit(conn, self._insert),
                consumer,
                str(message_id),
                delivery,
                route,
                call_next,
            )

    async def _in_transaction(
        self,
        unit: _ConnectionUnit | _SessionUnit,
        consumer: str,
        message_id: str,
        delivery: Delivery,
        route: RouteContext,
        call_next: Process,
    ) -> Outcome:
        committed = ran = False
        try:
            if not await unit.claim(consumer, message_id):
                self.skipped += 1
                logger.info(
                    "route %r: message %s skipped: its inbox id %r was handled and committed",
                    route.name,
                    delivery.message_id,
                    message_id,
                )
                return self.on_duplicate
            ran = True
            token = _current.set(unit.handle)
            try:
                outcome = await call_next(delivery)
            finally:
                _current.reset(token)
            if outcome.kind is not OutcomeKind.ACCEPT:
                return outcome
            try:
                await unit.commit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                return route.failed(
                    exc,
                    delivery,
                    "route %r: committing the inbox transaction of message %s failed; it "
                    "will be retried (if the commit did happen, the retry is skipped)",
                    route.name,
                    delivery.message_id,
                )
            committed = True
            self.handled += 1
            return outcome
        finally:
            if not committed:
                self.rolled_back += int(ran)
                await self._rollback(unit)

    async def _rollback(self, unit: _ConnectionUnit | _SessionUnit) -> None:
        try:
            await asyncio.shield(unit.rollback())
        except Exception:  # a connection lost: its transaction is gone with it
            logger.debug("inbox rollback failed", exc_info=True)


class _ConnectionUnit:
    """One delivery's transaction on an asyncpg connection."""

    __slots__ = ("handle", "insert", "transaction")

    def __init__(self, conn: Any, insert: str) -> None:
        self.handle, self.insert = conn, insert
        self.transaction: Any = None

    async def claim(self, consumer: str, message_id: str) -> bool:
        """Begin; record the id; False if it was recorded (and committed) already."""
        self.transaction = self.handle.transaction()
        await self.transaction.start()
        return await self.handle.fetchval(self.insert, consumer, message_id) is not None

    async def commit(self) -> None:
        await self.transaction.commit()

    async def rollback(self) -> None:
        if self.transaction is not None:
            await self.transaction.rollback()


class _SessionUnit:
    """One delivery's transaction in a SQLAlchemy ``AsyncSession`` (autobegun)."""

    __slots__ = ("handle", "insert")

    def __init__(self, session: Any, insert: str) -> None:
        self.handle, self.insert = session, insert

    async def claim(self, consumer: str, message_id: str) -> bool:
        from sqlalchemy import text

        params = {"consumer": consumer, "message_id": message_id}
        result = await self.handle.execute(text(self.insert), params)
        return result.first() is not None

    async def commit(self) -> None:
        await self.handle.commit()

    async def rollback(self) -> None:
        await self.handle.rollback()


def _message_id(value: str | MessageId | None) -> MessageId:
    if value is None:
        return _broker_id
    if isinstance(value, str):
        if not value:
            raise ConfigurationError("Inbox(message_id=...): an empty header name")
        return from_header(value)
    if callable(value):
        return value
    raise ConfigurationError(
        "Inbox(message_id=...): expected None (the broker's id), a header name or a function "
        f"of the delivery, got {type(value).__name__}"
    )
