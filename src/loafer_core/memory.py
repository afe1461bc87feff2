"""The embedded in-memory broker: real queue semantics, in-process.

:class:`MemoryBroker` holds named queues; :class:`MemoryProvider` consumes from one. It
backs the quickstart, the core tests and the handler-testing helpers in
:mod:`loafer_core.testing`. Semantics:

- ACCEPT removes the message.
- RETRY redelivers it after its delay (at once without one), counting an attempt.
- REJECT moves it to the queue's dead-letter list (:meth:`MemoryBroker.dead_letters`).
- RELEASE puts it back at the head, without counting an attempt: ahead of everything
  published after it (behind only older messages also back in the queue, so that the
  messages of an ordering key, released together, keep their order).
- A queue declared with ``lease=`` seconds redelivers a delivery not settled within its
  lease (like SQS's visibility timeout); the provider can extend leases.
- Messages with an ``ordering_key`` are handed out like SQS FIFO groups: while one of a
  key is in flight or waiting for a delayed retry, no later one of that key is.
- The ready queue keeps publish order: a message put back returns to its place.

The broker is thread-safe: handlers running in threads may publish to it.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import heapq
import itertools
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, NamedTuple

from loafer_core._schedule import check_delay
from loafer_core.deadletters import DeadLetters, dead_headers
from loafer_core.errors import ConfigurationError
from loafer_core.ext.otel import publish_span
from loafer_core.outcome import Outcome, OutcomeKind
from loafer_core.provider import Capabilities, Delivery, Description, Support
from loafer_core.typed import TYPE_HEADER, encode

__all__ = ["HISTORY", "MemoryBroker", "MemoryMessage", "MemoryProvider", "Settlement"]

HISTORY = 100_000
"""How many settlements a queue remembers for :meth:`MemoryBroker.settlements` where the
test helpers turn the history on (``MemoryBroker(history=HISTORY)``); off by default."""


@dataclass(eq=False, slots=True)
class MemoryMessage:
    """A message held by a :class:`MemoryBroker`."""

    body: Any
    headers: dict[str, Any]
    message_id: str
    ordering_key: str | None
    seq: int
    attempts: int = 0
    uncounted: bool = False
    reject_reason: str | None = None


class Settlement(NamedTuple):
    """One settlement seen by the broker (for inspection in tests)."""

    message: MemoryMessage
    outcome: Outcome
    attempt: int

    @property
    def body(self) -> Any:
        """The message body."""
        return self.message.body


@dataclass
class _Queue:
    name: str
    lease: float | None = None
    ready: deque[MemoryMessage] = field(default_factory=deque)
    delayed: list[tuple[float, int, MemoryMessage]] = field(default_factory=list)
    in_flight: dict[int, tuple[MemoryMessage, float | None]] = field(default_factory=dict)
    dead: list[MemoryMessage] = field(default_factory=list)
    # (message, outcome, attempt), when the broker keeps a history; Settlement is built
    # only when someone asks
    history: deque[tuple[MemoryMessage, Outcome, int]] | None = None
    settled_total: int = 0
    busy_keys: Counter[str] = field(default_factory=Counter)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    idle_waiters: list[asyncio.Future[None]] = field(default_factory=list)
    keyed: int = 0

    def idle(self) -> bool:
        return not self.ready and not self.delayed and not self.in_flight


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    if not waiters:
        return
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for fut in waiters:
        loop = fut.get_loop()
        if loop is running:
            if not fut.done():
                fut.set_result(None)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, fut)
    waiters.clear()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class MemoryBroker:
    """Named in-process queues. Create queues with :meth:`declare` (publishing declares too).

    :param history: how many settlements each queue remembers for :meth:`settlements`
        (0, the default, keeps none: a long-running broker should not hold on to every
        message it settled). The ``memory_broker`` pytest fixture and
        :func:`~loafer_core.testing.run_until_idle` turn it on (:data:`HISTORY`).
    """

    def __init__(self, *, history: int = 0) -> None:
        if isinstance(history, bool) or not isinstance(history, int) or history < 0:
            raise ConfigurationError(
                f"MemoryBroker(history=...): expected an int >= 0, got {history!r}"
            )
        self._history = history
        self._queues: dict[str, _Queue] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._tokens = itertools.count(1)
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"<MemoryBroker queues={sorted(self._queues)}>"

    # -- set-up and publishing --------------------------------------------------------------

    def declare(self, queue: str, *, lease: float | None = None) -> None:
        """Create ``queue`` if needed; ``lease`` (seconds) makes unsettled deliveries expire."""
        if not isinstance(queue, str) or not queue:
            raise ConfigurationError(
                f"MemoryBroker.declare: queue must be a non-empty str, got {queue!r}"
            )
        if lease is not None and (isinstance(lease, bool) or not lease > 0):
            raise ConfigurationError(
                f"MemoryBroker.declare(lease=...): expected seconds > 0, got {lease!r}"
            )
        with self._lock:
            q = self._queues.get(queue)
            if q is None:
                self._queues[queue] = _Queue(
                    queue,
                    lease=lease,
                    history=deque(maxlen=self._history) if self._history else None,
                )
            elif lease is not None:
                q.lease = lease

    def has_queue(self, queue: str) -> bool:
        """True once ``queue`` was declared or published to."""
        return queue in self._queues

    def publish(
        self,
        queue: str,
        body: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        ordering_key: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
    ) -> str:
        """Put one message on ``queue`` (declaring it if needed); returns its message id.

        ``delay`` (seconds) or ``at`` (an aware datetime) hold it back until then (a
        message with an ``ordering_key`` holds the later ones of its key back too, as a
        delayed retry does); see :func:`~loafer_core.kit.check_delay`."""
        scheduled = check_delay(delay, at, what=f"MemoryBroker queue {queue!r}")
        if queue not in self._queues:
            self.declare(queue)
        with self._lock:
            q = self._queues[queue]
            mid = message_id or f"m-{next(self._ids)}"
            msg = MemoryMessage(
                _snapshot(body),
                _snapshot(dict(headers or {})),
                mid,
                ordering_key,
                next(self._seq),
            )
            if ordering_key is not None:
                q.keyed += 1
            if scheduled is None:
                q.ready.append(msg)
            else:
                heapq.heappush(q.delayed, (time.monotonic() + scheduled.delay, msg.seq, msg))
                if ordering_key is not None:
                    q.busy_keys[ordering_key] += 1
            _wake(q.waiters)
        return mid

    def publish_many(self, queue: str, bodies: Sequence[Any]) -> None:
        """Put many plain messages on ``queue`` at once."""
        if queue not in self._queues:
            self.declare(queue)
        with self._lock:
            q = self._queues[queue]
            seq, ids = self._seq, self._ids
            q.ready.extend(
                MemoryMessage(_snapshot(b), {}, f"m-{next(ids)}", None, next(seq)) for b in bodies
            )
            _wake(q.waiters)

    # -- inspection -------------------------------------------------------------------------

    def _queue(self, queue: str) -> _Queue:
        try:
            return self._queues[queue]
        except KeyError:
            raise ConfigurationError(
                f"memory queue {queue!r} does not exist; declare it with "
                f"broker.declare({queue!r}) or publish to it first"
            ) from None

    def depth(self, queue: str) -> int:
        """Messages ready or waiting for a delayed retry (not counting in-flight ones)."""
        q = self._queue(queue)
        return len(q.ready) + len(q.delayed)

    def in_flight(self, queue: str) -> int:
        """Deliveries handed out and not yet settled."""
        return len(self._queue(queue).in_flight)

    def _take_dead(self, queue: str, message_id: str, requeue: dict[str, Any] | None) -> bool:
        """Remove the dead letter ``message_id`` of ``queue`` and, with ``requeue``
        headers, put it back on the queue with them, in one step; False if it is gone."""
        q = self._queue(queue)
        with self._lock:
            for i, msg in enumerate(q.dead):
                if msg.message_id == message_id:
                    del q.dead[i]
                    break
            else:
                return False
            if requeue is not None:
                again = MemoryMessage(
                    msg.body, requeue, msg.message_id, msg.ordering_key, next(self._seq)
                )
                q.ready.append(again)
                if msg.ordering_key is not None:
                    q.keyed += 1
                _wake(q.waiters)
        return True

    def dead_letters(self, queue: str) -> list[MemoryMessage]:
        """Messages REJECTED on ``queue`` (with ``reject_reason``), oldest first."""
        return list(self._queue(queue).dead)

    def keep_history(self, size: int = HISTORY) -> None:
        """Remember the last ``size`` settlements of every queue from now on (at least:
        a larger history already kept stays)."""
        with self._lock:
            if size <= self._history:
                return
            self._history = size
            for q in self._queues.values():
                q.history = deque(q.history or (), maxlen=size)

    def settlements(self, queue: str) -> list[Settlement]:
        """The settlements on ``queue``, in order (the last ``history`` of them)."""
        history = self._queue(queue).history
        if history is None:
            raise ConfigurationError(
                "this MemoryBroker keeps no settlements: create it with "
                "MemoryBroker(history=N) or call keep_history() (the memory_broker fixture "
                "and run_until_idle do)"
            )
        return [Settlement(*entry) for entry in history]

    def settled_total(self, queue: str) -> int:
        """How many settlements ``queue`` has seen in all."""
        return self._queue(queue).settled_total

    def is_idle(self, queue: str) -> bool:
        """Nothing ready, delayed or in flight on ``queue``."""
        return self._queue(queue).idle()

    async def wait_idle(self, queue: str, timeout: float | None = None) -> None:
        """Wait until ``queue`` is idle (raises TimeoutError after ``timeout`` seconds)."""
        q = self._queue(queue)
        async with asyncio.timeout(timeout):
            while True:
                with self._lock:
                    if q.idle():
                        return
                    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    q.idle_waiters.append(fut)
                await fut

    # -- consuming (used by MemoryProvider) -------------------------------------------------

    def _promote(self, q: _Queue, now: float) -> None:
        while q.delayed and q.delayed[0][0] <= now:
            _, _, msg = heapq.heappop(q.delayed)
            self._unbusy(q, msg)
            self._requeue(q, msg)
        if q.lease is not None and q.in_flight:
            expired = [t for t, (_, dl) in q.in_flight.items() if dl is not None and dl <= now]
            for token in expired:
                msg, _ = q.in_flight.pop(token)
                self._unbusy(q, msg)
                self._requeue(q, msg)

    @staticmethod
    def _unbusy(q: _Queue, msg: MemoryMessage) -> None:
        key = msg.ordering_key
        if key is not None:
            q.busy_keys[key] -= 1
            if q.busy_keys[key] <= 0:
                del q.busy_keys[key]

    @staticmethod
    def _requeue(q: _Queue, msg: MemoryMessage) -> None:
        ready = q.ready
        if not ready or ready[-1].seq < msg.seq:
            ready.append(msg)
        else:
            ready.insert(bisect.bisect_left(ready, msg.seq, key=lambda m: m.seq), msg)

    def _take(self, q: _Queue, n: int, now: float) -> list[tuple[int, MemoryMessage]]:
        self._promote(q, now)
        taken: list[tuple[int, MemoryMessage]] = []
        ready = q.ready
        if not ready:
            return taken
        deadline = now + q.lease if q.lease is not None else None
        tokens = self._tokens
        if not q.keyed:
            in_flight = q.in_flight
            for _ in range(min(n, len(ready))):
                msg = ready.popleft()
                token = next(tokens)
                in_flight[token] = (msg, deadline)
                taken.append((token, msg))
        else:
            blocked = set(q.busy_keys)
            keep: deque[MemoryMessage] = deque()
            while ready and len(taken) < n:
                msg = ready.popleft()
                key = msg.ordering_key
                if key is not None and key in blocked:
                    keep.append(msg)
                    continue
                token = next(tokens)
                q.in_flight[token] = (msg, deadline)
                if key is not None:
                    q.busy_keys[key] += 1
                taken.append((token, msg))
            keep.extend(ready)
            q.ready = keep
        for _, msg in taken:
            if msg.uncounted:
                msg.uncounted = False
                msg.attempts = max(1, msg.attempts)
            else:
                msg.attempts += 1
        return taken

    def _next_due(self, q: _Queue) -> float | None:
        due = q.delayed[0][0] if q.delayed else None
        if q.lease is not None and q.in_flight:
            lease_due = min((dl for _, dl in q.in_flight.values() if dl is not None), default=None)
            if lease_due is not None:
                due = lease_due if due is None else min(due, lease_due)
        return due

    async def _fetch(self, queue: str, n: int, wait: float) -> list[tuple[int, MemoryMessage]]:
        q = self._queue(queue)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + wait
        while True:
            now = time.monotonic()
            with self._lock:
                taken = self._take(q, n, now)
                if taken:
                    return taken
                remaining = deadline - now
                if remaining <= 0:
                    return taken
                due = self._next_due(q)
                timeout = remaining if due is None else max(0.0, min(remaining, due - now))
                fut: asyncio.Future[None] = loop.create_future()
                q.waiters.append(fut)
            handle = loop.call_later(timeout, _resolve, fut)
            try:
                await fut
            finally:
                handle.cancel()
                if not fut.done():
                    with self._lock:
                        if fut in q.waiters:
                            q.waiters.remove(fut)

    def _settle(self, queue: str, token: int, outcome: Outcome) -> bool:
        q = self._queue(queue)
        with self._lock:
            entry = q.in_flight.pop(token, None)
            if entry is None:
                return False  # lease expired meanwhile: the message was redelivered
            msg = entry[0]
            if msg.ordering_key is not None:
                self._unbusy(q, msg)
            if q.history is not None:
                q.history.append((msg, outcome, msg.attempts))
            q.settled_total += 1
            kind = outcome.kind
            if kind is OutcomeKind.ACCEPT:
                if msg.ordering_key is not None:
                    q.keyed -= 1
            elif kind is OutcomeKind.REJECT:
                msg.reject_reason = outcome.reason
                msg.headers = {
                    **msg.headers,
                    **dead_headers(
                        msg.headers, reason=outcome.reason, attempts=msg.attempts, origin=q.name
                    ),
                }
                q.dead.append(msg)
                if msg.ordering_key is not None:
                    q.keyed -= 1
            elif kind is OutcomeKind.RETRY and outcome.delay:
                heapq.heappush(q.delayed, (time.monotonic() + outcome.delay, msg.seq, msg))
                if msg.ordering_key is not None:
                    q.busy_keys[msg.ordering_key] += 1
            else:
                if kind is OutcomeKind.RELEASE:
                    msg.uncounted = True
                self._requeue(q, msg)
            if q.waiters:
                _wake(q.waiters)
            if q.idle_waiters and q.idle():
                _wake(q.idle_waiters)
        return True

    def _extend(self, queue: str, tokens: Sequence[int], seconds: float) -> None:
        q = self._queue(queue)
        deadline = time.monotonic() + seconds
        with self._lock:
            for token in tokens:
                entry = q.in_flight.get(token)
                if entry is not None:
                    q.in_flight[token] = (entry[0], deadline)


_IMMUTABLE = frozenset({bytes, str, int, float, bool, complex, type(None)})
_CONTAINERS = (dict, list, set, bytearray, tuple)


def _snapshot(body: Any) -> Any:
    """A deep copy of a body made of plain containers (dict, list, set, bytearray, tuple),
    so that, like a real broker, the queue keeps what was published whatever the publisher
    or a handler later does to its copy. Anything else is kept as it is: immutable values,
    and objects of your own (a mock, a sentinel: their identity is what a test looks at),
    as is a container that cannot be copied."""
    if not isinstance(body, _CONTAINERS):
        return body
    try:
        return copy.deepcopy(body)
    except Exception:
        return body


class MemoryProvider:
    """Consumes one queue of a :class:`MemoryBroker`.

    ``raw`` and ``body`` of its deliveries are the published body, as published (a deep
    copy of a dict, list, set, bytearray or tuple, so a handler that changes it cannot
    change a redelivery; other objects as they are); metadata
    holds ``message_id``, ``headers``, ``queue``, ``attempt`` and ``ordering_key``.
    ``wait`` is how long one fetch waits for a message (seconds). ``type_header``: the
    header :meth:`publish` names a typed object's type in (``None``: none).
    """

    #: Delayed publish (``publish(..., delay=...)`` / ``at=...``): held by the broker.
    delay_support: ClassVar[Support] = Support.NATIVE
    #: The longest delay a publish may ask for (None: no limit).
    max_delay: ClassVar[float | None] = None

    def __init__(
        self,
        broker: MemoryBroker,
        queue: str,
        *,
        wait: float = 5.0,
        type_header: str | None = TYPE_HEADER,
    ) -> None:
        if not isinstance(broker, MemoryBroker):
            raise ConfigurationError(
                f"MemoryProvider(broker=...): expected a MemoryBroker, got {type(broker).__name__}"
            )
        if not isinstance(queue, str) or not queue:
            raise ConfigurationError(
                f"MemoryProvider(queue=...): expected a queue name, got {queue!r}"
            )
        if isinstance(wait, bool) or not isinstance(wait, int | float) or wait < 0:
            raise ConfigurationError(
                f"MemoryProvider(wait=...): expected seconds >= 0, got {wait!r}"
            )
        self.broker = broker
        self.queue = queue
        self.wait = float(wait)
        self.type_header = type_header
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryProvider(queue={self.queue!r})"

    def describe(self) -> str:
        """A short description for logs."""
        return f"memory:{self.queue}"

    def description(self) -> Description:
        """An in-process queue: no server (:class:`~loafer_core.provider.Describable`)."""
        return Description(
            kind="memory",
            system="memory",
            destination=self.queue,
            summary="in-process memory queue",
        )

    @property
    def capabilities(self) -> Capabilities:
        """Everything, natively."""
        return Capabilities(
            delayed_retry=Support.NATIVE,
            dead_letter=Support.NATIVE,
            attempt_count=Support.NATIVE,
            release_uncounted=Support.NATIVE,
            ordering_keys=Support.NATIVE,
            lease_extension=Support.NATIVE,
        )

    @property
    def lease_duration(self) -> float | None:
        """The queue's lease, if it was declared with one."""
        q = self.broker._queues.get(self.queue)
        return q.lease if q is not None else None

    async def start(self, capacity: int) -> None:
        """Check the queue exists."""
        self.broker._queue(self.queue)
        self._closed = False

    async def verify(self) -> None:
        """Check the queue exists in the broker (ConfigurationError naming it if not);
        takes nothing. See :class:`~loafer_core.provider.Verifiable`."""
        self.broker._queue(self.queue)

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        """Take up to ``max_messages``, waiting up to ``wait`` seconds for the first."""
        taken = await self.broker._fetch(self.queue, max_messages, self.wait)
        queue = self.queue
        deliveries = []
        for token, msg in taken:
            body = msg.body
            if type(body) not in _IMMUTABLE:  # the usual bytes/str: no call per message
                body = _snapshot(body)
            deliveries.append(
                Delivery(
                    raw=body,
                    body=body,
                    message_id=msg.message_id,
                    metadata={
                        "message_id": msg.message_id,
                        "headers": _snapshot(msg.headers) if msg.headers else {},
                        "queue": queue,
                        "attempt": msg.attempts,
                        "ordering_key": msg.ordering_key,
                    },
                    attempt=msg.attempts,
                    ordering_key=msg.ordering_key,
                    token=token,
                )
            )
        return deliveries

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Apply ``outcome`` (a stale delivery, whose lease expired, is ignored)."""
        self.broker._settle(self.queue, delivery.token, outcome)

    async def extend_leases(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Push the lease of each delivery to ``seconds`` from now."""
        self.broker._extend(self.queue, [d.token for d in deliveries], seconds)

    async def publish(
        self, body: Any, *, headers: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        """Publish to this provider's queue (options: ``message_id``, ``ordering_key``,
        ``delay`` seconds or ``at`` an aware datetime: delivered no earlier).

        A typed object (pydantic model, dataclass, msgspec Struct,
        :class:`~loafer_core.typed.Typed`) is published as JSON bytes with its type in
        the ``type_header`` header (see :func:`~loafer_core.typed.encode`); other bodies
        as they are. Traced when the process uses OpenTelemetry (a producer span, its
        context in the headers: see :mod:`loafer_core.ext.otel`).
        """
        encoded = encode(body, header=self.type_header)
        if encoded is not None:
            body = encoded.body
            headers = {**encoded.headers, **headers} if headers else encoded.headers
        with publish_span(
            "memory", self.queue, headers, message_id=options.get("message_id")
        ) as sent:
            self.broker.publish(self.queue, body, headers=sent, **options)

    def dead_letter_store(self) -> DeadLetters:
        """The queue's dead letters (:class:`~loafer_core.deadletters.HasDeadLetters`;
        a replay is exactly once)."""
        from loafer_core._memory_dead_letters import MemoryDeadLetters

        return MemoryDeadLetters(self.broker, self.queue)

    async def health(self) -> bool:
        """Always healthy once the queue exists."""
        return self.broker.has_queue(self.queue)

    async def backlog(self) -> int | None:
        """The queue's depth (ready or waiting for a delayed retry); ``None`` if the
        queue does not exist."""
        if not self.broker.has_queue(self.queue):
            return None
        return self.broker.depth(self.queue)

    async def close(self) -> None:
        """Nothing is buffered: fetch takes straight from the broker."""
        self._closed = True
