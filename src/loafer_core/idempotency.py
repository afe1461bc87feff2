"""Idempotency: skip a message whose idempotency key was already handled.

:class:`Idempotency` is a middleware (see :mod:`loafer_core.middleware`). For each
delivery it takes a key (a header by default, or any function of the delivery, such as a
hash of the body), then asks its store:

1. **claim** the key: ``SET key pending NX`` with a short ``lock_ttl``. A key already
   *done* means a duplicate: the delivery is settled with ``on_duplicate`` (ACCEPT) and
   the handler does not run. A key *pending* (another delivery with the same key is being
   handled now, here or in another process, or a consumer was killed while handling it)
   gives ``RETRY(delay=lock_ttl)``, never a REJECT: by then the other one has either
   finished (the retry is skipped), failed (the retry handles it) or its claim lapsed
   (the retry handles it). A provider that cannot delay a retry redelivers it at once.
2. run the route (translator, handler, and the forwarded publishes, which are confirmed
   before the route returns, see :mod:`loafer_core.forward`);
3. if the outcome is ACCEPT, **complete** the key: ``done`` for ``ttl`` seconds; any other
   outcome **releases** the claim (deletes it if it is still ours), so a redelivery runs.

What it guarantees, precisely: a key marked done within the last ``ttl`` seconds is not
handled again, and two deliveries with the same key do not run at the same time while the
claim's ``lock_ttl`` holds. It narrows duplicates; it cannot make them impossible:

- a process killed after the handler's effects (a forwarded publish confirmed, a row
  written) and before step 3 leaves the key pending; once ``lock_ttl`` passes, the
  redelivered message is handled again;
- the claim is renewed every ``lock_ttl / 3`` seconds while the route runs (stores with
  ``extend()``: both of ours), so a long handler keeps it; a process stalled longer
  than ``lock_ttl`` (its event loop blocked) loses it, and a duplicate may then run
  alongside (with a store that cannot renew, set ``lock_ttl`` above the route's
  ``handler_timeout``);
- the store forgetting (a ``ttl`` shorter than the broker's redelivery window, a Redis
  without persistence restarting) forgets the keys;
- a store that cannot be reached fails the delivery: it is RETRIED (with the route's
  retry policy and ``max_attempts``), never handled unguarded.

Stores: :class:`MemoryStore` (default; one process, lost at exit) and
:class:`loafer_core.ext.redis_store.RedisStore` (shared by processes; extra ``redis``).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from loafer_core.errors import ConfigurationError
from loafer_core.outcome import ACCEPT, Outcome, OutcomeKind
from loafer_core.provider import Delivery
from loafer_core.throttle import LogThrottle

if TYPE_CHECKING:
    from loafer_core.context import RouteContext
    from loafer_core.middleware import Process

__all__ = [
    "Claim",
    "Idempotency",
    "IdempotencyStore",
    "MemoryStore",
    "body_hash",
    "from_header",
]

logger = logging.getLogger("loafer_core.idempotency")


class Claim(enum.Enum):
    """What claiming a key found."""

    NEW = "new"  #: the key is ours now: handle the message
    DONE = "done"  #: handled already: a duplicate
    BUSY = "busy"  #: claimed by another delivery being handled now


@runtime_checkable
class IdempotencyStore(Protocol):
    """Where keys are kept. ``token`` identifies one claim (a fresh UUID per delivery)."""

    async def claim(self, key: str, token: str, lock_ttl: float) -> Claim:
        """Atomically claim ``key`` for ``lock_ttl`` seconds unless it is done or claimed."""
        ...

    async def complete(self, key: str, token: str, ttl: float) -> None:
        """Mark ``key`` done for ``ttl`` seconds."""
        ...

    async def release(self, key: str, token: str) -> None:
        """Delete ``key`` if it is still claimed by ``token`` (a failed attempt)."""
        ...


class MemoryStore:
    """Keys in this process's memory, with their expiry (the default store).

    Enough for one process (a duplicate redelivered to it); lost when it exits, and not
    shared between processes or workers: use :class:`~loafer_core.ext.redis_store.RedisStore`
    for those. Expired keys are purged as it grows, and at most ``max_keys`` are kept:
    past that, the oldest go first (their duplicates are then no longer recognised).
    """

    def __init__(self, *, max_keys: int = 1_000_000) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigurationError(
                f"MemoryStore(max_keys=...): expected an int >= 1, got {max_keys!r}"
            )
        self.max_keys = max_keys
        # key -> (token or None when done, expiry on the monotonic clock), oldest first
        self._keys: dict[str, tuple[str | None, float]] = {}
        self._purge_at = 1024

    def __len__(self) -> int:
        return len(self._keys)

    async def claim(self, key: str, token: str, lock_ttl: float) -> Claim:
        """Claim ``key`` for ``lock_ttl`` seconds unless it is done or claimed."""
        now = time.monotonic()
        entry = self._keys.get(key)
        if entry is not None and entry[1] > now:
            return Claim.DONE if entry[0] is None else Claim.BUSY
        self._keys.pop(key, None)  # expired: forget it (keeps insertion order by age)
        self._keys[key] = (token, now + lock_ttl)
        self._bound(now)
        return Claim.NEW

    async def complete(self, key: str, token: str, ttl: float) -> None:
        """Mark ``key`` done for ``ttl`` seconds."""
        now = time.monotonic()
        self._keys.pop(key, None)
        self._keys[key] = (None, now + ttl)
        self._bound(now)

    async def extend(self, key: str, token: str, lock_ttl: float) -> bool:
        """Hold ``key`` ``lock_ttl`` seconds more if ``token`` still claims it (False:
        the claim lapsed and another delivery took it, or it is done)."""
        entry = self._keys.get(key)
        if entry is None or entry[0] != token:
            return False
        self._keys[key] = (token, time.monotonic() + lock_ttl)
        return True

    async def release(self, key: str, token: str) -> None:
        """Delete ``key`` if it is still claimed by ``token``."""
        entry = self._keys.get(key)
        if entry is not None and entry[0] == token:
            del self._keys[key]

    def _bound(self, now: float) -> None:
        keys = self._keys
        if len(keys) >= self._purge_at:  # amortised: a scan once the size doubled
            for key in [k for k, (_, expiry) in keys.items() if expiry <= now]:
                del keys[key]
            self._purge_at = max(1024, 2 * len(keys))
        while len(keys) > self.max_keys:  # the oldest first
            del keys[next(iter(keys))]


KeyFunction = Callable[[Delivery], "str | None"]


def from_header(name: str) -> KeyFunction:
    """A key function: the value of header ``name`` (``None`` when absent: not
    deduplicated). Headers are what the provider puts under ``metadata["headers"]``
    (AMQP headers and application properties, SQS message attributes)."""
    lowered = name.lower()

    def key(delivery: Delivery) -> str | None:
        headers = delivery.metadata.get("headers")
        if not isinstance(headers, Mapping):
            return None
        value = headers.get(name)
        if value is None:
            for header, found in headers.items():
                if isinstance(header, str) and header.lower() == lowered:
                    value = found
                    break
        if value is None:
            return None
        if isinstance(value, bytes | bytearray):
            return bytes(value).decode("utf-8", "replace")
        return str(value)

    key.__qualname__ = f"from_header({name!r})"
    return key


def body_hash(delivery: Delivery) -> str | None:
    """A key function: the SHA-256 of the message body (identical bodies are duplicates)."""
    body = delivery.body if delivery.body is not None else delivery.raw
    if isinstance(body, str):
        data = body.encode("utf-8")
    elif isinstance(body, bytes | bytearray | memoryview):
        data = bytes(body)
    else:
        data = repr(body).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


class Idempotency:
    """Middleware skipping messages whose idempotency key was already handled.

    Arguments:
        store: an :class:`IdempotencyStore`; a new :class:`MemoryStore` by default.
        key: a header name (str), or a function ``delivery -> str | None``
            (:func:`body_hash`, say; another value is keyed by its ``str()``); ``None``
            from it: the message is handled without deduplication.
        ttl: seconds a handled key is remembered (cover the broker's redelivery window).
        lock_ttl: seconds a claim holds unless renewed (every third of it while the
            message is handled, with a store that has ``extend``); a crashed process's
            claim frees after it, and a busy key's delivery is retried after it.
        namespace: prefix of the stored keys; the route's name by default (the same key
            on two routes is two keys). Give the same namespace to routes that must share.
        on_duplicate: the outcome of a duplicate (ACCEPT: removed from the broker).

    Counters: :attr:`skipped` duplicates, :attr:`busy` deliveries retried because their
    key was claimed, :attr:`handled` keys completed, :attr:`unkeyed` deliveries without a
    key (handled without deduplication; the first of each route is logged as a warning).
    A key function that raises is an error of the message: RETRIED like a handler's.
    Keys longer than 200 characters are stored as their SHA-256.
    """

    def __init__(
        self,
        store: IdempotencyStore | None = None,
        *,
        key: str | KeyFunction = "idempotency-key",
        ttl: float = 24 * 3600.0,
        lock_ttl: float = 60.0,
        namespace: str | None = None,
        on_duplicate: Outcome = ACCEPT,
    ) -> None:
        if store is None:
            store = MemoryStore()
        if isinstance(store, type) or not isinstance(store, IdempotencyStore):
            raise ConfigurationError(
                "Idempotency(store=...): expected a store with async claim(), complete() "
                f"and release() (MemoryStore(), RedisStore(...)), got {store!r}"
            )
        if isinstance(key, str):
            if not key:
                raise ConfigurationError("Idempotency(key=...): an empty header name")
            key = from_header(key)
        elif not callable(key):
            raise ConfigurationError(
                "Idempotency(key=...): expected a header name or a function of the delivery, "
                f"got {type(key).__name__}"
            )
        for name, value in (("ttl", ttl), ("lock_ttl", lock_ttl)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigurationError(
                    f"Idempotency({name}=...): expected seconds > 0, got {value!r}"
                )
        if not isinstance(on_duplicate, Outcome):
            raise ConfigurationError(
                f"Idempotency(on_duplicate=...): expected an Outcome, got {on_duplicate!r}"
            )
        self.store = store
        self.key = key
        self.ttl = float(ttl)
        self.lock_ttl = float(lock_ttl)
        self.namespace = namespace
        self.on_duplicate = on_duplicate
        self.skipped = 0
        self.busy = 0
        self.handled = 0
        #: deliveries handled without deduplication: their key function gave ``None``
        self.unkeyed = 0
        self._routes: set[RouteContext] = set()  # the routes seen (checked once each)
        self._unkeyed_routes: set[RouteContext] = set()  # said once per route
        self._failures = LogThrottle()  # the store failing after a claim: bounded logs

    def __repr__(self) -> str:
        return f"Idempotency(store={self.store!r}, ttl={self.ttl}, lock_ttl={self.lock_ttl})"

    @property
    def services(self) -> list[Any]:
        """The store, when it has ``start()`` and ``close()`` (a ``RedisStore``): the
        manager starts it before the routes and closes it after the drain."""
        store = self.store
        if callable(getattr(store, "start", None)) and callable(getattr(store, "close", None)):
            return [store]
        return []

    async def __call__(
        self, delivery: Delivery, route: RouteContext, call_next: Process
    ) -> Outcome:
        """Claim the key, run the route, complete or release the key (module docstring)."""
        if route not in self._routes:
            self._first_delivery(route)
        try:
            key = self.key(delivery)
        except Exception as exc:  # never handled unguarded: an error of the message
            return route.failed(
                exc,
                delivery,
                "route %r: could not take the idempotency key of message %s (%s); it will "
                "be retried",
                route.name,
                delivery.message_id,
                _name(self.key),
            )
        if key is None:
            self._unkeyed(delivery, route)
            return await call_next(delivery)
        stored, shown = self._stored(key, route)
        token = uuid.uuid4().hex
        try:
            claim = await self.store.claim(stored, token, self.lock_ttl)
        except asyncio.CancelledError:
            # the claim may have been made (its reply cut short): do not leave it to lock_ttl
            await self._quietly(self.store.release(stored, token), route, "releasing", shown)
            raise
        except Exception as exc:  # never handled unguarded: retried, as the route retries
            return route.failed(
                exc,
                delivery,
                "route %r: could not claim the idempotency key of message %s; it will be retried",
                route.name,
                delivery.message_id,
            )
        if claim is Claim.DONE or claim is Claim.BUSY:
            return self._taken(claim, delivery, route, shown)
        extend = getattr(self.store, "extend", None)
        renewal = None if extend is None else _Renewal(self, extend, stored, token, route, shown)
        try:
            outcome = await call_next(delivery)
        except BaseException:
            if renewal is not None and (renewing := renewal.stop()) is not None:
                await renewal.finish(renewing)
            await self._quietly(self.store.release(stored, token), route, "releasing", shown)
            raise
        if renewal is not None and (renewing := renewal.stop()) is not None:
            await renewal.finish(renewing)
        if outcome.kind is OutcomeKind.ACCEPT:
            # handled (and its forwarded publishes confirmed): remember it. If the store
            # fails now, the message was still handled: ACCEPT it, the key stays claimed
            # until lock_ttl.
            if await self._quietly(
                self.store.complete(stored, token, self.ttl), route, "marking", shown
            ):
                self.handled += 1
        else:
            await self._quietly(self.store.release(stored, token), route, "releasing", shown)
        return outcome

    def _unkeyed(self, delivery: Delivery, route: RouteContext) -> None:
        """A message without a key: counted, and said once per route."""
        self.unkeyed += 1
        if route not in self._unkeyed_routes:
            self._unkeyed_routes.add(route)
            logger.warning(
                "route %r: message %s has no idempotency key (%s gave None): handled "
                "without deduplication (said once per route; Idempotency.unkeyed counts "
                "them)",
                route.name,
                delivery.message_id,
                _name(self.key),
            )

    def _stored(self, key: Any, route: RouteContext) -> tuple[str, str]:
        """The key as the store holds it (namespaced; a long one hashed) and as logs show it."""
        if not isinstance(key, str):  # a number, say: keyed by its text
            key = str(key)
        shown = _shown(key)
        if len(key) > _LONGEST_KEY:
            key = "sha256:" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()
        return f"{self.namespace if self.namespace is not None else route.name}:{key}", shown

    def _taken(self, claim: Claim, delivery: Delivery, route: RouteContext, shown: str) -> Outcome:
        """The outcome of a delivery whose key is DONE (skipped) or BUSY (put off)."""
        if claim is Claim.DONE:
            self.skipped += 1
            logger.info(
                "route %r: message %s skipped: idempotency key %s already handled",
                route.name,
                delivery.message_id,
                shown,
            )
            return self.on_duplicate
        self.busy += 1
        logger.info(
            "route %r: message %s retried: idempotency key %s is being handled by another delivery",
            route.name,
            delivery.message_id,
            shown,
        )
        # put off until the claim completed or lapsed (a consumer killed mid-handler):
        # the route's short retry delays would spend max_attempts meanwhile
        return route.retry_outcome(delivery, self.lock_ttl)

    def _first_delivery(self, route: RouteContext) -> None:
        """Check the route once: a claim that can lapse while its handler still runs (a
        store that cannot renew claims)."""
        self._routes.add(route)
        timeout = route.handler_timeout
        renews = getattr(self.store, "extend", None) is not None
        if not renews and timeout is not None and timeout >= self.lock_ttl:
            logger.warning(
                "route %r: Idempotency(lock_ttl=%s) is not above the route's "
                "handler_timeout=%s: a claim can lapse while its handler still runs, and a "
                "duplicate then runs alongside it; set lock_ttl above handler_timeout",
                route.name,
                self.lock_ttl,
                timeout,
            )

    async def _quietly(self, step: Any, route: RouteContext, doing: str, shown: str) -> bool:
        """Await a store call; log (not raise) its failure, at a bounded rate. True if it
        succeeded."""
        try:
            await step
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failure(route, doing, shown, exc)
            return False

    def _failure(self, route: RouteContext, doing: str, shown: str, exc: BaseException) -> None:
        """Log a store failure after the claim, at a bounded rate."""
        held = self._failures.admit((route.name, doing, type(exc), str(exc)[:200]))
        if held is not None:
            logger.warning(
                "route %r: %s idempotency key %s failed (%s: %s)%s",
                route.name,
                doing,
                shown,
                type(exc).__name__,
                exc,
                f" ({held} more like it not logged since the last time)" if held else "",
            )


class _Renewal:
    """Holds a claim while the route runs: every ``lock_ttl / 3`` seconds, the store's
    ``extend``. A timer, not a task, until the first renewal is due: a handler done
    sooner costs one timer."""

    __slots__ = ("extend", "handle", "idem", "interval", "key", "route", "shown", "task", "token")

    def __init__(
        self, idem: Idempotency, extend: Any, key: str, token: str, route: RouteContext, shown: str
    ) -> None:
        self.idem, self.extend, self.key, self.token = idem, extend, key, token
        self.route, self.shown = route, shown
        self.interval = idem.lock_ttl / 3
        self.task: asyncio.Task[None] | None = None
        self.handle: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            self.interval, self._due
        )

    def _due(self) -> None:
        self.handle = None
        self.task = asyncio.get_running_loop().create_task(
            self._renew(), name="loafer:idempotency-renewal"
        )

    async def _renew(self) -> None:
        idem = self.idem
        try:
            held = await self.extend(self.key, self.token, idem.lock_ttl)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failing: try again at the next interval
            idem._failure(self.route, "renewing the claim of", self.shown, exc)
            held = True
        if held is False:  # lapsed (the process stalled longer than lock_ttl) and taken
            idem._failure(
                self.route,
                "renewing the claim of",
                self.shown,
                RuntimeError("the claim had lapsed: a duplicate may run alongside"),
            )
            return
        self.handle = asyncio.get_running_loop().call_later(self.interval, self._due)

    def stop(self) -> asyncio.Task[None] | None:
        """No more renewals; the renewal under way, if any, to be awaited with
        :meth:`finish` (no coroutine in the usual case: none is under way)."""
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        task, self.task = self.task, None
        return task if task is not None and not task.done() else None

    async def finish(self, task: asyncio.Task[None]) -> None:
        """Let the renewal under way end (its store call is bounded by the store's
        timeout), and schedule no other."""
        try:
            await asyncio.shield(task)  # it logs its own failures
        finally:
            if self.handle is not None:  # set by the renewal that just finished
                self.handle.cancel()
                self.handle = None


_LONGEST_KEY = 200  # longer keys are stored as their SHA-256


def _shown(key: str) -> str:
    """A key as logged: quoted, and cut when long."""
    if len(key) <= 80:
        return repr(key)
    return f"{key[:60]!r}... ({len(key)} characters)"


def _name(function: Any) -> str:
    return str(getattr(function, "__qualname__", None) or repr(function))
