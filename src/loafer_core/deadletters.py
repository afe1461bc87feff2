"""Dead letters: the messages a route REJECTED, to inspect, replay or purge.

Every bundled provider's REJECT writes the same keys on the dead letter (headers,
attributes, fields or columns, as the broker has them), so that ``loafer dlq`` and
:class:`DeadLetters` read every broker alike:

- :data:`DEAD_REASON` (``loafer-dead-reason``): why it was rejected;
- :data:`DEAD_ATTEMPTS` (``loafer-dead-attempts``): the attempt it was rejected on;
- :data:`DEAD_ORIGIN` (``loafer-dead-origin``): the queue/stream/table it came from;
- :data:`DEAD_FIRST_FAILURE` / :data:`DEAD_LAST_FAILURE` (``loafer-dead-first-failure``,
  ``loafer-dead-last-failure``): when it was first dead-lettered (kept when a replayed
  message is rejected again) and when it was dead-lettered last, ISO 8601 UTC.

A replay publishes each dead letter back to its origin with :data:`REPLAY_ID`
(``loafer-replay-id``, the dead letter's id: the same on every attempt to replay it) so
that an idempotency middleware keyed on it (``Idempotency(key=REPLAY_ID)``) drops the
duplicate an at-least-once store may publish when the replay is killed between the
publish and the removal. The ``loafer-dead-*`` keys are not copied back, except
:data:`DEAD_FIRST_FAILURE`.

:class:`DeadLetters` is the store of one route's dead letters; a provider that has one
is :class:`HasDeadLetters`, and :func:`dead_letters_of` returns it (or says why not).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import math
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

from loafer_core.errors import ConfigurationError

__all__ = [
    "DEAD_ATTEMPTS",
    "DEAD_FIRST_FAILURE",
    "DEAD_KEYS",
    "DEAD_LAST_FAILURE",
    "DEAD_ORIGIN",
    "DEAD_REASON",
    "DEFAULT_RATE",
    "REPLAY_ID",
    "DeadLetter",
    "DeadLetters",
    "Filter",
    "Guarantee",
    "HasDeadLetters",
    "ReplayReport",
    "dead_headers",
    "dead_letters_of",
    "read_dead_letter",
    "replay_headers",
]

DEAD_REASON = "loafer-dead-reason"
"""Why the message was rejected."""
DEAD_ATTEMPTS = "loafer-dead-attempts"
"""The attempt the message was rejected on (a decimal string)."""
DEAD_ORIGIN = "loafer-dead-origin"
"""The queue, stream or table the message came from (where a replay sends it)."""
DEAD_FIRST_FAILURE = "loafer-dead-first-failure"
"""When the message was first dead-lettered (ISO 8601, UTC)."""
DEAD_LAST_FAILURE = "loafer-dead-last-failure"
"""When the message was dead-lettered last (ISO 8601, UTC)."""
REPLAY_ID = "loafer-replay-id"
"""The header a replay publishes with: the dead letter's id (an idempotency key)."""
DEAD_KEYS = (DEAD_REASON, DEAD_ATTEMPTS, DEAD_ORIGIN, DEAD_FIRST_FAILURE, DEAD_LAST_FAILURE)
"""Every ``loafer-dead-*`` key."""
DEFAULT_RATE = 100.0
"""Messages per second a replay publishes when not told (``rate=None``: no bound)."""
#: Bodies JSON shows as they are.
_JSONABLE = (str, int, float, bool, dict, list)
#: Longest reason written.
_MAX_REASON = 1000

Guarantee = Literal["exactly-once", "at-least-once"]
"""``"exactly-once"``: a replay moves each message in one atomic step (a transaction, a
script); ``"at-least-once"``: publish, await the confirm, then remove (a replay killed in
between publishes that message again when re-run, with the same :data:`REPLAY_ID`)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _time(value: Any) -> datetime | None:
    text = _text(value)
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def dead_headers(
    headers: Mapping[str, Any] | None,
    *,
    reason: str | None,
    attempts: int | None,
    origin: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """The ``loafer-dead-*`` keys a REJECT writes on a message with ``headers``.

    :param headers: the message's own headers (a :data:`DEAD_FIRST_FAILURE` there, from
        an earlier dead-lettering, is kept).
    :param reason: why it was rejected (cut to 1,000 characters; ``None``: "rejected").
    :param attempts: the attempt it was rejected on (``None``: not known, written as 1).
    :param origin: where it came from.
    :param now: the time of the failure (default: now).
    """
    when = (now or _now()).astimezone(UTC).isoformat()
    first = _text((headers or {}).get(DEAD_FIRST_FAILURE)) or when
    return {
        DEAD_REASON: " ".join((reason or "rejected").split())[:_MAX_REASON] or "rejected",
        DEAD_ATTEMPTS: str(max(1, attempts or 1)),
        DEAD_ORIGIN: origin,
        DEAD_FIRST_FAILURE: first,
        DEAD_LAST_FAILURE: when,
    }


def replay_headers(letter: DeadLetter) -> dict[str, Any]:
    """The headers a replay publishes ``letter`` with: its own, without the
    ``loafer-dead-*`` keys (but :data:`DEAD_FIRST_FAILURE`), with :data:`REPLAY_ID`."""
    out = {k: v for k, v in letter.headers.items() if k not in DEAD_KEYS}
    if letter.first_failure is not None:
        out[DEAD_FIRST_FAILURE] = letter.first_failure.isoformat()
    out[REPLAY_ID] = letter.id
    return out


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter, as a store read it.

    :param id: the store's id for it (an entry id, a row id, a message id), what
        ``--id`` takes and what a replay writes in :data:`REPLAY_ID`.
    :param body: the message body, as the broker holds it (bytes, mostly).
    :param headers: the message's headers (with the ``loafer-dead-*`` keys).
    :param reason: why it was rejected (``None``: the broker kept no reason, e.g. a
        queue dead-lettered by the broker itself).
    :param attempts: the attempt it was rejected on, if known.
    :param origin: where it came from, if known.
    :param first_failure: when it was first dead-lettered, if known.
    :param last_failure: when it was dead-lettered last, if known.
    """

    id: str
    body: Any
    headers: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None
    attempts: int | None = None
    origin: str | None = None
    first_failure: datetime | None = None
    last_failure: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the body decoded as UTF-8 where it is bytes)."""
        body = self.body
        if isinstance(body, bytes | bytearray | memoryview):
            body = bytes(body).decode("utf-8", "replace")
        return {
            "id": self.id,
            "reason": self.reason,
            "attempts": self.attempts,
            "origin": self.origin,
            "first_failure": self.first_failure.isoformat() if self.first_failure else None,
            "last_failure": self.last_failure.isoformat() if self.last_failure else None,
            "headers": {
                k: _text(v) if isinstance(v, bytes) else v for k, v in self.headers.items()
            },
            "body": body if isinstance(body, _JSONABLE) else repr(body),
        }


def read_dead_letter(
    id: str, body: Any, headers: Mapping[str, Any], *, origin: str | None = None
) -> DeadLetter:
    """A :class:`DeadLetter` from a message's ``headers`` (the ``loafer-dead-*`` keys;
    ``origin`` where the headers name none)."""
    attempts_text = _text(headers.get(DEAD_ATTEMPTS))
    attempts = int(attempts_text) if attempts_text and attempts_text.isdigit() else None
    return DeadLetter(
        id=id,
        body=body,
        headers=dict(headers),
        reason=_text(headers.get(DEAD_REASON)),
        attempts=attempts,
        origin=_text(headers.get(DEAD_ORIGIN)) or origin,
        first_failure=_time(headers.get(DEAD_FIRST_FAILURE)),
        last_failure=_time(headers.get(DEAD_LAST_FAILURE)),
    )


@dataclass(frozen=True)
class Filter:
    """Which dead letters a command applies to (every condition given must hold).

    :param ids: only these ids (``None``: any).
    :param reason: only those whose reason contains this text (case-insensitive).
    :param older_than: only those dead-lettered (last) more than this many seconds ago.
    :param newer_than: only those dead-lettered (last) less than this many seconds ago.
    """

    ids: frozenset[str] | None = None
    reason: str | None = None
    older_than: float | None = None
    newer_than: float | None = None

    def __post_init__(self) -> None:
        if self.ids is not None and not isinstance(self.ids, frozenset):
            object.__setattr__(self, "ids", frozenset(self.ids))
        for name in ("older_than", "newer_than"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ConfigurationError(
                    f"Filter({name}=...): expected seconds >= 0, got {value!r}"
                )

    def matches(self, letter: DeadLetter, now: datetime | None = None) -> bool:
        """True when ``letter`` passes every condition (a letter of unknown age fails an
        age condition)."""
        if self.ids is not None and letter.id not in self.ids:
            return False
        if self.reason is not None and self.reason.lower() not in (letter.reason or "").lower():
            return False
        if self.older_than is None and self.newer_than is None:
            return True
        when = letter.last_failure or letter.first_failure
        if when is None:
            return False
        age = ((now or _now()) - when).total_seconds()
        if self.older_than is not None and age <= self.older_than:
            return False
        return self.newer_than is None or age < self.newer_than


#: Everything.
_ALL = Filter()


@dataclass(frozen=True)
class ReplayReport:
    """What a :meth:`DeadLetters.replay` did.

    :param matched: dead letters that matched the filter.
    :param replayed: those moved back to their origin (0 on a dry run).
    :param ids: the ids that matched, in order.
    :param dry_run: nothing was moved.
    """

    matched: int
    replayed: int
    ids: tuple[str, ...]
    dry_run: bool


class _Pacer:
    """Spaces calls ``1/rate`` seconds apart (``rate=None``: no wait)."""

    def __init__(self, rate: float | None) -> None:
        if rate is not None and (not math.isfinite(rate) or rate <= 0):
            raise ConfigurationError(f"replay rate: expected messages/s > 0, got {rate!r}")
        self._gap = 1.0 / rate if rate else 0.0
        self._next = time.monotonic()

    async def wait(self) -> None:
        if not self._gap:
            return
        now = time.monotonic()
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next = max(self._next, now) + self._gap


class DeadLetters(abc.ABC):
    """The dead letters of one route: count, list, replay, purge.

    A store implements :meth:`count`, :meth:`_scan` (every dead letter, oldest first),
    :meth:`_move` (back to its origin: in one atomic step for an ``"exactly-once"``
    store, else publish, await the confirm, then remove) and :meth:`_remove`; the
    filtering, the rate bound and the dry run are done here. Use it as an async context
    manager (or call :meth:`close`).
    """

    #: How a replay moves a message (see :data:`Guarantee`).
    guarantee: Guarantee = "at-least-once"
    #: What the broker cannot do for this store, said by ``loafer dlq`` (``None``: nothing).
    limits: str | None = None

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """Where the dead letters are, for people (``redis:orders:dead``); no secret."""

    @abc.abstractmethod
    async def count(self) -> int:
        """How many dead letters there are."""

    @abc.abstractmethod
    def _scan(self) -> AsyncGenerator[DeadLetter, None]:
        """Every dead letter, oldest first (a letter moved or removed meanwhile may be
        skipped, never yielded twice)."""

    @abc.abstractmethod
    async def _move(self, letter: DeadLetter) -> None:
        """Put ``letter`` back in its origin (with :func:`replay_headers`) and remove it."""

    @abc.abstractmethod
    async def _remove(self, letter: DeadLetter) -> None:
        """Remove ``letter`` from the dead letters."""

    async def close(self) -> None:  # noqa: B027 - stores without a connection keep it
        """Close what the store opened (nothing by default)."""

    async def __aenter__(self) -> DeadLetters:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def list(self, filter: Filter = _ALL, limit: int | None = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters matching ``filter``, oldest first (``None``: all)."""
        out: list[DeadLetter] = []
        if limit is not None and limit <= 0:
            return out
        now = _now()
        async with contextlib.aclosing(self._scan()) as letters:
            async for letter in letters:
                if filter.matches(letter, now):
                    out.append(letter)
                    if limit is not None and len(out) >= limit:
                        break
        return out

    async def replay(
        self,
        filter: Filter = _ALL,
        *,
        rate: float | None = DEFAULT_RATE,
        dry_run: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> ReplayReport:
        """Move the dead letters matching ``filter`` back to their origin.

        :param filter: which ones.
        :param rate: most messages per second (``None``: no bound).
        :param dry_run: only count and name them; move nothing.
        :param progress: called with the number moved so far, after each one.
        """
        pacer = _Pacer(rate)
        now = _now()
        ids: list[str] = []
        moved = 0
        async with contextlib.aclosing(self._scan()) as letters:
            async for letter in letters:
                if not filter.matches(letter, now):
                    continue
                ids.append(letter.id)
                if dry_run:
                    continue
                await pacer.wait()
                await self._move(letter)
                moved += 1
                if progress is not None:
                    progress(moved)
        return ReplayReport(matched=len(ids), replayed=moved, ids=tuple(ids), dry_run=dry_run)

    async def purge(self, filter: Filter = _ALL) -> int:
        """Delete the dead letters matching ``filter``; how many were deleted."""
        now = _now()
        removed = 0
        async with contextlib.aclosing(self._scan()) as letters:
            async for letter in letters:
                if filter.matches(letter, now):
                    await self._remove(letter)
                    removed += 1
        return removed


@runtime_checkable
class HasDeadLetters(Protocol):
    """A provider whose dead letters can be read: ``dead_letter_store()`` returns a
    fresh :class:`DeadLetters` (not yet connected; the caller closes it)."""

    def dead_letter_store(self) -> DeadLetters:
        """The store of this provider's dead letters (ConfigurationError if it has none)."""
        ...


def dead_letters_of(provider: object) -> DeadLetters:
    """The :class:`DeadLetters` of ``provider``; a ConfigurationError naming the provider
    when it has none (a plugin without a store, or dead-lettering turned off)."""
    if not isinstance(provider, HasDeadLetters):
        describe = getattr(provider, "describe", None)
        shown = describe() if callable(describe) else type(provider).__name__
        raise ConfigurationError(
            f"{shown}: this provider has no dead-letter store loafer can read "
            "(see docs/dead-letters.md for what each broker supports)"
        )
    return provider.dead_letter_store()
