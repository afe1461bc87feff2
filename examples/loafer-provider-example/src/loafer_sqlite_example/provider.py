"""``SQLiteProvider``: a queue in a SQLite table, with leases, delayed retries and
dead-lettering (the worked example of ``docs/writing-a-provider.md``).

sqlite3 blocks, so every call runs in a thread (:func:`asyncio.to_thread`) and the
connection is used by one call at a time. A thread cannot be cancelled: a ``fetch``
cancelled while its claim runs leaves the claim to finish, and what it leased goes to a
buffer (handed out by the next ``fetch``, released by ``stop_fetching`` or ``close``).
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from loafer_core import (
    Capabilities,
    ConfigurationError,
    Delivery,
    Outcome,
    OutcomeKind,
    ProviderError,
    Support,
)
from loafer_core.kit import Description, map_exceptions
from loafer_core.policy import check_number
from loafer_sqlite_example import store

__all__ = ["SQLiteProvider"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Lease:
    """A delivery's token: the message's row and the lease it holds."""

    id: int
    lease: str


class SQLiteProvider:
    """Consumes ``queue`` from the SQLite file ``path`` (made with
    :func:`~loafer_sqlite_example.store.create_queue`).

    :param lease: seconds a fetched message stays leased (extended by the dispatcher
        while its handler runs); unsettled past it, it is delivered again.
    :param wait: how long one ``fetch`` waits for a message (seconds).
    :param poll_interval: how often a waiting ``fetch`` looks again (seconds).

    Deliveries: ``raw`` and ``body`` are the stored bytes; ``metadata`` holds
    ``message_id``, ``headers``, ``attempt`` and ``queue``.
    """

    def __init__(
        self,
        queue: str,
        *,
        path: str,
        lease: float = 30.0,
        wait: float = 5.0,
        poll_interval: float = 0.1,
    ) -> None:
        if not isinstance(queue, str) or not queue:
            raise ConfigurationError(f"SQLiteProvider(queue=...): expected a name, got {queue!r}")
        if not isinstance(path, str | os.PathLike) or not str(path):
            raise ConfigurationError(f"SQLiteProvider(path=...): expected a file, got {path!r}")
        check_number("SQLiteProvider", "lease", lease, minimum=0.001)
        check_number("SQLiteProvider", "wait", wait, minimum=0)
        check_number("SQLiteProvider", "poll_interval", poll_interval, minimum=0.001)
        self.queue = queue
        self.path = str(path)
        self.lease = float(lease)
        self.wait = float(wait)
        self.poll_interval = float(poll_interval)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one call at a time on the connection
        self._calls: set[asyncio.Future[Any]] = set()  # running in threads
        self._buffer: list[Delivery] = []  # leased by a cancelled fetch, not handed out

    def __repr__(self) -> str:
        return f"SQLiteProvider(queue={self.queue!r}, path={self.path!r})"

    def describe(self) -> str:
        """A short description for logs and ``loafer check``."""
        return f"sqlite-example:{Path(self.path).name}#{self.queue}"

    def description(self) -> Description:
        """What ``loafer asyncapi`` and tracing show of it (``Describable``): the queue and
        the database file's name; no server (a local file), no AsyncAPI bindings (none
        exist for SQLite), loafer's own ``x-loafer-sqlite`` field on the operation."""
        database = Path(self.path).name
        return Description(
            kind="sqlite-example",
            system="sqlite",
            destination=self.queue,
            address=f"file:{database}",
            summary=f"SQLite queue {self.queue!r} in {database}",
            extensions={"x-loafer-sqlite": {"database": database}},
        )

    #: All done by the database itself, each in the settling statement or transaction
    #: (NATIVE). The same whatever the options: a class attribute, so that ``loafer
    #: providers`` shows them without building a provider.
    capabilities: Capabilities = Capabilities(
        delayed_retry=Support.NATIVE,
        dead_letter=Support.NATIVE,
        attempt_count=Support.NATIVE,
        release_uncounted=Support.NATIVE,
        lease_extension=Support.NATIVE,
    )

    @property
    def lease_duration(self) -> float:
        """Seconds a delivery stays leased after fetch or extension."""
        return self.lease

    # -- running sqlite3 in threads ----------------------------------------------------------

    def _locked(self, conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            return fn(conn, *args)

    def _submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run ``fn(conn, *args)`` in a thread; the future is tracked until it ends (close
        waits for it) and its error is read even if nobody awaits it any more."""
        conn = self._conn
        if conn is None:
            raise ProviderError(f"{self!r} is not started")
        call = asyncio.ensure_future(asyncio.to_thread(self._locked, conn, fn, *args))
        self._calls.add(call)
        call.add_done_callback(self._done)
        return call

    def _done(self, call: asyncio.Future[Any]) -> None:
        self._calls.discard(call)
        if not call.cancelled():
            call.exception()  # seen: a cancelled caller may not be there to read it

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` in a thread. Cancelled, the call still finishes (a thread
        cannot be stopped): every statement is safe to have run (settlements name their
        lease), except a claim, which :meth:`fetch` handles."""
        with map_exceptions(self._error, catch=sqlite3.Error):
            return await asyncio.shield(self._submit(fn, *args))

    def _error(self, exc: Exception) -> Exception:
        """sqlite3's error in loafer-core's terms (the edge's table)."""
        if isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc):
            return ConfigurationError(
                f"{self.describe()}: the queue tables are missing from {self.path}; create "
                f"them with loafer_sqlite_example.create_queue({self.path!r}, {self.queue!r})"
            )
        # busy or locked database, I/O error: transient, the dispatcher retries
        return ProviderError(f"{self.describe()}: {type(exc).__name__}: {exc}")

    # -- the contract --------------------------------------------------------------------------

    async def start(self, capacity: int) -> None:
        """Open the file and check the queue exists (``ConfigurationError`` if not). A
        start that failed leaves nothing open: it may be called again, or ``close``."""
        if self._conn is None:
            self._conn = await self._check()

    async def verify(self) -> None:
        """``loafer check``: the queue exists; nothing is taken, nothing left open."""
        conn = await self._check()
        await asyncio.to_thread(conn.close)

    async def _check(self) -> sqlite3.Connection:
        """A connection to the file, once the queue is known to be there in it."""

        def check() -> tuple[sqlite3.Connection, bool]:
            if not os.path.exists(self.path):
                raise FileNotFoundError(self.path)
            conn = store.connect(self.path, create=False)
            try:
                return conn, store.queue_exists(conn, self.queue)
            except BaseException:
                conn.close()
                raise

        create = f"loafer_sqlite_example.create_queue({self.path!r}, {self.queue!r})"
        try:
            conn, exists = await asyncio.to_thread(check)
        except FileNotFoundError:
            raise ConfigurationError(
                f"{self.describe()}: no database file {self.path}; create it with {create}"
            ) from None
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        if not exists:
            await asyncio.to_thread(conn.close)
            raise ConfigurationError(
                f"{self.describe()}: no queue {self.queue!r} in {self.path}; create it with "
                f"{create}"
            )
        return conn

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        """Up to ``max_messages`` deliveries, polling up to ``wait`` seconds for the first."""
        if max_messages <= 0:
            return []
        if self._buffer:  # leased by a fetch that was cancelled: hand those out first
            out, self._buffer = self._buffer[:max_messages], self._buffer[max_messages:]
            return out
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while True:
            out = await self._claim(max_messages)
            left = deadline - loop.time()
            if out or left <= 0:
                return out
            await asyncio.sleep(min(self.poll_interval, left))  # polling: SQLite cannot push

    async def _claim(self, max_messages: int) -> list[Delivery]:
        claiming = self._submit(store.claim, self.queue, max_messages, self.lease)
        try:
            claimed = await asyncio.shield(claiming)
        except asyncio.CancelledError:
            # The claim runs on in its thread and commits: keep what it leases.
            claiming.add_done_callback(self._keep)
            raise
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return [self._delivery(c) for c in claimed]

    def _keep(self, claiming: asyncio.Future[list[store.Claimed]]) -> None:
        if not claiming.cancelled() and claiming.exception() is None:
            self._buffer.extend(self._delivery(c) for c in claiming.result())

    def _delivery(self, claimed: store.Claimed) -> Delivery:
        message_id = str(claimed.id)
        return Delivery(
            raw=claimed.body,
            body=claimed.body,
            message_id=message_id,
            metadata={
                "message_id": message_id,
                "headers": claimed.headers,
                "attempt": claimed.attempt,
                "queue": self.queue,
            },
            attempt=claimed.attempt,
            token=_Lease(claimed.id, claimed.lease),
        )

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Apply ``outcome`` in one statement or transaction naming the delivery's lease:
        settling again, or after the lease lapsed and another consumer took the message,
        changes nothing."""
        token = delivery.token
        if not isinstance(token, _Lease):
            raise ValueError(f"{delivery!r} was not fetched by a SQLiteProvider")
        kind = outcome.kind
        if kind is OutcomeKind.ACCEPT:
            await self._run(store.accept, token.id, token.lease)
        elif kind is OutcomeKind.RETRY:
            await self._run(store.retry, token.id, token.lease, outcome.delay or 0.0)
        elif kind is OutcomeKind.REJECT:
            await self._run(store.reject, token.id, token.lease, outcome.reason or "rejected")
        else:
            await self._run(store.release, [(token.id, token.lease)])

    async def extend_leases(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Push each delivery's lease to ``seconds`` from now."""
        leases = [(t.id, t.lease) for t in (d.token for d in deliveries) if isinstance(t, _Lease)]
        await self._run(store.extend, leases, seconds)

    async def stop_fetching(self) -> None:
        """A drain begins: release what a cancelled fetch leased, at once."""
        await self._release_buffer()

    async def _release_buffer(self) -> None:
        held, self._buffer = self._buffer, []
        if held and self._conn is not None:
            await self._run(store.release, [(d.token.id, d.token.lease) for d in held])

    async def close(self) -> None:
        """Wait for the calls still running, release the buffer, close. Idempotent."""
        if self._conn is None:
            return
        while self._calls:  # a cancelled claim's _keep runs before this wait returns
            await asyncio.wait(set(self._calls))
        try:
            await self._release_buffer()
        finally:
            await self._disconnect()

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._buffer = []
        if conn is not None:
            await asyncio.to_thread(conn.close)

    # -- optional abilities ----------------------------------------------------------------------

    async def publish(
        self, body: Any, *, headers: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        """Put ``body`` (bytes, or str as UTF-8) on the queue; option ``delay`` (seconds)."""
        delay = options.pop("delay", 0.0)
        if options:
            raise ConfigurationError(f"SQLiteProvider.publish: unknown options {sorted(options)}")
        if not isinstance(delay, int | float) or not math.isfinite(delay) or delay < 0:
            raise ConfigurationError(f"SQLiteProvider.publish(delay=...): got {delay!r}")
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        if self._conn is None:
            await asyncio.to_thread(store.put, self.path, self.queue, data, headers, delay=delay)
        else:
            insert = functools.partial(store.insert, delay=delay)
            await self._run(insert, self.queue, [data], headers)

    async def backlog(self) -> int | None:
        """Messages ready now; ``None`` when not started or the file cannot be read."""
        if self._conn is None:
            return None
        try:
            return await self._run(store.ready_count, self.queue)
        except Exception:
            return None
