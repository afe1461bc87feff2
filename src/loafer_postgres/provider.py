"""PostgreSQL as a queue: rows of a table leased with ``FOR UPDATE SKIP LOCKED``.

A fetch leases ready rows of the queue in one statement (attempt + 1, a lease until
``now() + lease``, a new lease UUID). Outcome mapping, each one statement (one
transaction) naming the lease (``WHERE id = $1 AND lease = $2``):

- ``ACCEPT`` -> the row is deleted (ACCEPTs arriving together go in one DELETE).
- ``RETRY(delay)`` -> ``available_at = now() + delay``, the lease cleared.
- ``REJECT(reason)`` -> the row moves to ``<table>_dead`` with the reason and its
  attempts (``dead_letters=False``: deleted, logged).
- ``RELEASE`` -> the lease cleared and the attempt given back.

Keyed rows: only the oldest row of a key still in the table can be leased, so a key's
rows are handled one at a time, in id order, across any number of consumers. An idle
consumer waits on LISTEN/NOTIFY (one connection), on the earliest delayed row or lapsing
lease, and claims at least every ``poll_interval`` (a notification can be missed while
the listening connection is down).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from loafer_core.errors import ConfigurationError, LoaferError, ProviderError
from loafer_core.kit import map_exceptions
from loafer_core.outcome import Outcome, OutcomeKind
from loafer_core.provider import Capabilities, Delivery, Description, Support
from loafer_core.translator import JSONTranslator
from loafer_postgres import _describe
from loafer_postgres._accepts import Coalescer
from loafer_postgres._connection import Listener, close_pool, connect_options, open_pool
from loafer_postgres._dead_letters import PostgresDeadLetters
from loafer_postgres._sql import Statements
from loafer_postgres.errors import mask_url, missing_table, protect, secrets_of, translate
from loafer_postgres.settings import PostgresSettings, settings_of

__all__ = ["PostgresProvider"]

logger = logging.getLogger("loafer_postgres")

#: Longest reject reason stored.
MAX_REASON = 2000
#: How long an ACCEPT of an unkeyed row waits for others to share its DELETE (seconds).
ACCEPT_LINGER = 0.002


class _Lease:
    """A delivery's settlement handle: the row and the lease it holds."""

    __slots__ = ("id", "lease")

    def __init__(self, row_id: int, lease: uuid.UUID) -> None:
        self.id = row_id
        self.lease = lease


class PostgresProvider:
    """Consume a queue kept in a PostgreSQL table (``loafer postgres init`` creates it),
    at least once.

    Takes one :class:`~loafer_postgres.settings.PostgresSettings` (its docstring lists
    the settings), or the same values as flat keywords: ``PostgresProvider("jobs",
    url="postgresql://app@db/app", lease=60)``. The flat names: ``queue`` (also
    positional), ``url``, ``table``, ``schema``, ``lease``, ``poll_interval``,
    ``batch_size``, ``dead_letters``, ``listen``, ``pool_size``, ``wait`` (or
    ``poll_timeout``), ``statement_timeout``, ``connect_timeout``, ``close_timeout``,
    ``reconnect_wait``, ``connection_name``, ``tls``, ``connection_options``. A wrong
    value is a ConfigurationError naming it; the URL's password never appears in logs,
    errors or reprs.
    """

    default_translator = JSONTranslator()
    settings_type = PostgresSettings

    def __init__(self, settings: PostgresSettings | str | None = None, /, **options: Any) -> None:
        self.settings = settings_of(PostgresSettings, "PostgresProvider", settings, options)
        s = self.settings
        self.queue = s.queue
        self._sql = Statements(s.schema, s.table)
        self._url = s.connection.url
        self._secrets = secrets_of(self._url, s.connection.options)
        self._where = f"PostgreSQL at {mask_url(self._url)}"
        self._options = connect_options(
            s.connection, f"loafer:{s.queue}", float(s.timeouts.connect)
        )
        self._pool: Any = None
        self._listener: Listener | None = None
        self._accepts = Coalescer(self._delete, linger=ACCEPT_LINGER)
        self._buffer: list[Delivery] = []
        self._claiming: set[asyncio.Task[list[Delivery]]] = set()
        self._started = False
        self._closed = False
        #: claim statements run so far (how often the provider looked for rows)
        self.claims = 0

    # -- description ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server URL with its password and query values masked."""
        return mask_url(self._url)

    @property
    def address(self) -> str:
        """The queue's name (tracing's ``messaging.destination.name``)."""
        return self.queue

    def describe(self) -> str:
        """A short description for logs (no secrets)."""
        return f"postgres queue {self.queue!r} in {self._sql.qualified}"

    def description(self) -> Description:
        """The table, the queue and the server (no secret): see
        :class:`~loafer_core.provider.Describable`."""
        s = self.settings
        return _describe.provider(self.url, s.schema, s.table, s.queue, s.lease)

    def __repr__(self) -> str:
        return (
            f"PostgresProvider(queue={self.queue!r}, table={self._sql.qualified!r}, "
            f"url={self.url!r})"
        )

    @property
    def capabilities(self) -> Capabilities:
        """Everything native (each outcome is one transaction); dead letters unless
        ``dead_letters=False``."""
        return Capabilities(
            delayed_retry=Support.NATIVE,
            dead_letter=Support.NATIVE if self.settings.dead_letters else Support.NONE,
            attempt_count=Support.NATIVE,
            release_uncounted=Support.NATIVE,
            ordering_keys=Support.NATIVE,
            lease_extension=Support.NATIVE,
        )

    @property
    def lease_duration(self) -> float:
        """The lease a fetched row holds, seconds."""
        return float(self.settings.lease)

    # -- the edge -------------------------------------------------------------------------

    def _error(self, what: str) -> map_exceptions:
        return map_exceptions(
            lambda exc: translate(what, exc, self._where, self._secrets, table=self._sql.qualified),
            catch=(asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError),
        )

    def _pool_or_fail(self) -> Any:
        pool = self._pool
        if pool is None or self._closed:
            raise ProviderError(f"{self.describe()}: not started (or closed)")
        return pool

    async def _check_tables(self, conn: Any) -> None:
        table, dead = await conn.fetchrow(self._sql.exists, self._sql.qualified, self._sql.dead)
        if not table:
            raise missing_table(self._where, self._sql.qualified)
        if self.settings.dead_letters and not dead:
            raise missing_table(self._where, self._sql.dead)

    # -- start-up -------------------------------------------------------------------------

    async def verify(self) -> None:
        """Check the server and the tables as ``start`` would, on one short-lived
        connection, consuming nothing. ConfigurationError for what is wrong,
        ProviderError when the server cannot be reached."""
        protect(self._secrets)
        with self._error("checking the tables"):
            conn = await asyncpg.connect(**self._options)
            try:
                await self._check_tables(conn)
            finally:
                await conn.close(timeout=float(self.settings.timeouts.close))

    async def start(self, capacity: int) -> None:
        """Open the pool, check the tables, start listening. A failed start leaves
        nothing open (it may be called again)."""
        if self._closed:
            raise ProviderError(f"{self.describe()}: provider already closed")
        if self._started:
            return
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigurationError(
                f"PostgresProvider.start: capacity must be >= 1, got {capacity!r}"
            )
        protect(self._secrets)
        s = self.settings
        pool = None
        try:
            with self._error("connecting"):
                pool = await open_pool(self._options, s.pool_size, float(s.timeouts.publish))
                async with pool.acquire() as conn:
                    await self._check_tables(conn)
        except BaseException:
            if pool is not None:
                await close_pool(pool, float(s.timeouts.close))
            raise
        self._pool = pool
        if s.listen:
            self._listener = Listener(
                self._options, self._sql.channel, self.queue, float(s.timeouts.reconnect)
            )
            await self._listener.ensure(self._listen_failed)
        self._started = True
        logger.info("%s: consuming from %s (lease %ss)", self.describe(), self.url, s.lease)

    def _listen_failed(self, exc: BaseException) -> None:
        logger.warning(
            "%s: cannot LISTEN (%s); polling every %ss until it can",
            self.describe(),
            translate("listening", exc, self._where, self._secrets),
            self.settings.poll_interval,
        )

    # -- fetching -------------------------------------------------------------------------

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        """Lease up to ``max_messages`` ready rows (at most ``batch_size``); wait up to
        ``wait`` seconds for the first, woken by notifications."""
        if self._buffer:
            out, self._buffer = self._buffer[:max_messages], self._buffer[max_messages:]
            return out
        self._pool_or_fail()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(self.settings.timeouts.poll)
        limit = max(1, min(max_messages, self.settings.batch_size))
        while True:
            listener = self._listener
            if listener is not None:
                await listener.ensure(self._listen_failed)
                listener.wake.clear()  # before the claim: a notification during it counts
            out = await self._claim(limit)
            left = deadline - loop.time()
            if out or left <= 0:
                return out
            await self._idle(min(left, await self._due()), listener)
            if loop.time() >= deadline and not (listener is not None and listener.wake.is_set()):
                return []

    async def _due(self) -> float:
        """Seconds to wait at most: until the next delayed row or lapsing lease, at most
        ``poll_interval``."""
        poll = float(self.settings.poll_interval)
        with self._error("reading the next due row"):
            seconds = await self._pool_or_fail().fetchval(self._sql.due, self.queue)
        if seconds is None:
            return poll
        return max(0.01, min(poll, float(seconds) + 0.01))

    @staticmethod
    async def _idle(seconds: float, listener: Listener | None) -> None:
        if listener is None or not listener.connected:
            await asyncio.sleep(seconds)
            return
        try:
            async with asyncio.timeout(seconds):
                await listener.wake.wait()
        except TimeoutError:
            pass

    async def _claim(self, limit: int) -> list[Delivery]:
        """The claim statement, cancel-safe: run as a task of its own; cancelled, its
        rows (leased anyway) go to the buffer, handed out or released later."""
        task = asyncio.get_running_loop().create_task(self._run_claim(limit))
        self._claiming.add(task)
        task.add_done_callback(self._claiming.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._keep)
            raise

    def _keep(self, task: asyncio.Task[list[Delivery]]) -> None:
        if not task.cancelled() and task.exception() is None:
            self._buffer.extend(task.result())

    async def _run_claim(self, limit: int) -> list[Delivery]:
        self.claims += 1
        with self._error("leasing rows"):
            rows = await self._pool_or_fail().fetch(
                self._sql.claim, self.queue, limit, float(self.settings.lease)
            )
        return [self._delivery(row) for row in rows]

    def _delivery(self, row: Any) -> Delivery:
        text = row["headers"]
        headers: Any = {}
        if text and text != "{}":
            try:
                headers = json.loads(text)
            except ValueError:
                headers = {}
            if not isinstance(headers, dict):
                headers = {}
        message_id = str(row["id"])
        attempt = int(row["attempts"])
        return Delivery(
            raw=row["body"],
            body=row["body"],
            message_id=message_id,
            metadata={
                "message_id": message_id,
                "headers": headers,
                "attempt": attempt,
                "queue": self.queue,
                "key": row["key"],
                "destination": row["destination"],
                "table": self._sql.qualified,
                "created_at": row["created_at"],
            },
            attempt=attempt,
            ordering_key=row["key"],
            token=_Lease(int(row["id"]), row["lease"]),
        )

    # -- settling -------------------------------------------------------------------------

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Settle the row by its lease, in one statement; a repeat (or the late settle of
        a lapsed lease) changes nothing."""
        token = delivery.token
        if not isinstance(token, _Lease):
            raise ValueError(f"{self.describe()}: not a delivery of this provider: {delivery!r}")
        kind = outcome.kind
        if kind is OutcomeKind.ACCEPT:
            self._pool_or_fail()
            # queued: deleted by the next DELETE of accepted rows (close() flushes them);
            # the slot is free at once, the row stays leased until then
            self._accepts.add((token.id, token.lease), urgent=delivery.ordering_key is not None)
            return
        if kind is OutcomeKind.RETRY:
            args: tuple[Any, ...] = (float(outcome.delay or 0.0), self._sql.channel)
            sql, what = self._sql.retry, "retrying"
        elif kind is OutcomeKind.REJECT:
            reason = (outcome.reason or "rejected")[:MAX_REASON]
            if not self.settings.dead_letters:
                await self._drop(delivery, token, reason)
                return
            args, sql, what = (reason, self._sql.channel), self._sql.reject, "dead-lettering"
        else:
            await self._release([token])
            return
        with self._error(f"{what} row {token.id}"):
            await self._shielded(self._pool_or_fail().fetchval(sql, token.id, token.lease, *args))

    @staticmethod
    async def _shielded(awaitable: Any) -> Any:
        """``awaitable`` run to its end even if the settle is cancelled (its result is
        then dropped; the dispatcher sends the settle again, which finds nothing to do)."""
        future = asyncio.ensure_future(awaitable)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise

    async def _drop(self, delivery: Delivery, token: _Lease, reason: str) -> None:
        with self._error(f"deleting rejected row {token.id}"):
            attempts = await self._shielded(
                self._pool_or_fail().fetchval(
                    self._sql.drop, token.id, token.lease, self._sql.channel
                )
            )
        if attempts is not None:
            logger.warning(
                "%s: rejected row %s deleted (dead letters off) after %s attempts: %s",
                self.describe(),
                token.id,
                attempts,
                reason,
            )

    async def _delete(self, entries: Sequence[tuple[int, object]]) -> None:
        ids = [row_id for row_id, _ in entries]
        leases = [lease for _, lease in entries]
        with self._error(f"deleting {len(ids)} accepted rows"):
            await self._pool_or_fail().fetchval(
                self._sql.accept, ids, leases, self._sql.channel, self.queue
            )

    async def _release(self, tokens: Sequence[_Lease]) -> None:
        if not tokens:
            return
        ids = [t.id for t in tokens]
        leases = [t.lease for t in tokens]
        with self._error(f"releasing {len(ids)} rows"):
            await self._shielded(
                self._pool_or_fail().fetchval(
                    self._sql.release, ids, leases, self._sql.channel, self.queue
                )
            )

    async def extend_leases(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Hold the leases of ``deliveries`` ``seconds`` more (from now); a lease already
        settled or lost stays so."""
        tokens = [d.token for d in deliveries if isinstance(d.token, _Lease)]
        if not tokens:
            return
        seconds = min(float(seconds), self.lease_duration)
        with self._error("extending leases"):
            await self._pool_or_fail().execute(
                self._sql.extend, [t.id for t in tokens], [t.lease for t in tokens], seconds
            )

    # -- health and shutdown --------------------------------------------------------------

    def dead_letter_store(self) -> PostgresDeadLetters:
        """The queue's rows in ``<table>_dead``
        (:class:`~loafer_core.deadletters.HasDeadLetters`): a replay moves each row back
        in one transaction (exactly once). ConfigurationError with ``dead_letters=False``."""
        if not self.settings.dead_letters:
            raise ConfigurationError(
                f"{self.describe()}: dead letters are off (dead_letters=False): nothing to read"
            )
        return PostgresDeadLetters(self._options, self._sql, self.queue, self._secrets)

    async def health(self) -> bool:
        """True while started and the server answers (``SELECT 1``, within 5 s)."""
        pool = self._pool
        if not self._started or self._closed or pool is None:
            return False
        try:
            return bool(await pool.fetchval("SELECT 1", timeout=5.0) == 1)
        except Exception:  # a cancellation passes through
            return False

    async def backlog(self) -> int | None:
        """Rows of the queue ready now (one ``count(*)``); ``None`` when it cannot be
        read."""
        pool = self._pool
        if pool is None or self._closed:
            return None
        try:
            return int(await pool.fetchval(self._sql.backlog, self.queue, timeout=5.0))
        except Exception:  # a cancellation passes through
            logger.debug("%s: backlog not read", self.describe())
            return None

    async def stop_fetching(self) -> None:
        """A drain begins: give the rows fetched and not handed out back at once."""
        await self._give_back()

    async def _give_back(self) -> None:
        held, self._buffer = self._buffer, []
        if held:
            await self._release([d.token for d in held])
            logger.info("%s: gave back %d unhandled rows", self.describe(), len(held))

    async def close(self) -> None:
        """Wait for claims still running, give back what was not handed out, flush the
        ACCEPTs, stop listening, close the pool. Idempotent, bounded by
        ``close_timeout``."""
        if self._closed:
            return
        timeout = float(self.settings.timeouts.close)
        try:
            async with asyncio.timeout(timeout):
                if self._claiming:
                    await asyncio.wait(set(self._claiming))
                try:
                    if self._pool is not None:
                        await self._give_back()
                except LoaferError as exc:
                    logger.warning(
                        "%s: giving back rows at close failed (%s); they come back when "
                        "their leases lapse",
                        self.describe(),
                        exc,
                    )
                await self._accepts.flush()
        except TimeoutError:
            logger.warning(
                "%s: close took more than close_timeout (%ss); what was leased and not "
                "settled comes back when its lease lapses",
                self.describe(),
                timeout,
            )
        finally:
            self._closed = True
            listener, self._listener = self._listener, None
            if listener is not None:
                await listener.close(timeout)
            pool, self._pool = self._pool, None
            if pool is not None:
                await close_pool(pool, timeout)
