"""Delayed and scheduled publish, written once for every publisher.

``publish(body, delay=seconds)`` or ``publish(body, at=datetime)`` on a publisher means:
the message is not delivered before then. :func:`due_in` turns the two forms into
seconds from now, :func:`check_delay` adds a publisher's limits (a longest delay, no
delay at all) and returns a :class:`DelayedPublish`, or None for "publish now".

Brokers that cannot hold a message back themselves (NATS) publish it at once with the
time it is due in the :data:`NOT_BEFORE` header, and their consumer holds it back until
then: :class:`DelayingPublisher` wraps such a publisher, :func:`not_before` tells a
provider how long a delivery still has to wait.

Every refusal (a naive datetime, both ``delay`` and ``at``, a delay beyond the broker's
limit or on a broker without delays) is a :class:`~loafer_core.errors.ConfigurationError`
raised before anything is sent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loafer_core.errors import ConfigurationError

__all__ = [
    "NOT_BEFORE",
    "DelayedPublish",
    "DelayingPublisher",
    "check_delay",
    "due_in",
    "not_before",
]

NOT_BEFORE = "x-loafer-not-before"
"""The header an emulated delay travels in: the time the message is due, as Unix seconds
(a decimal string), read back by :func:`not_before`."""


def due_in(delay: float | None = None, at: datetime | None = None) -> float | None:
    """Seconds from now until a message published with ``delay`` or ``at`` is due.

    ``delay``: seconds (an int or float, finite, >= 0). ``at``: a timezone-aware
    :class:`~datetime.datetime` (a naive one is refused: it names no instant); a time
    in the past is due now (0). Neither: None (publish now); both: refused.

    :raises ConfigurationError: both given, a naive ``at``, a negative, infinite or
        non-numeric ``delay``.
    """
    if delay is not None and at is not None:
        raise ConfigurationError("publish: pass delay= (seconds) or at= (a datetime), not both")
    if at is not None:
        if not isinstance(at, datetime):
            raise ConfigurationError(f"publish: at= must be a datetime, got {type(at).__name__}")
        if at.tzinfo is None or at.utcoffset() is None:
            raise ConfigurationError(
                f"publish: at={at.isoformat()} is a naive datetime (no timezone); pass an "
                "aware one, such as datetime.now(timezone.utc) + timedelta(minutes=5)"
            )
        return max(0.0, at.timestamp() - time.time())
    if delay is None:
        return None
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise ConfigurationError(f"publish: delay= must be seconds (a number), got {delay!r}")
    if not math.isfinite(delay) or delay < 0:
        raise ConfigurationError(f"publish: delay= must be finite seconds >= 0, got {delay!r}")
    return float(delay)


@dataclass(frozen=True)
class DelayedPublish:
    """A publish held back: ``delay`` seconds from when it was asked, due at
    ``not_before`` (Unix seconds)."""

    delay: float
    not_before: float

    @classmethod
    def after(cls, delay: float) -> DelayedPublish:
        """The publish due ``delay`` seconds from now."""
        return cls(delay, time.time() + delay)

    @property
    def milliseconds(self) -> int:
        """The delay in whole milliseconds, rounded up (at least 1): never early."""
        return max(1, math.ceil(self.delay * 1000))

    @property
    def seconds(self) -> int:
        """The delay in whole seconds, rounded up (at least 1): never early."""
        return max(1, math.ceil(self.delay))


def check_delay(
    delay: float | None = None,
    at: datetime | None = None,
    *,
    what: str,
    maximum: float | None = None,
    refused: str | None = None,
) -> DelayedPublish | None:
    """The delay a publish asked for (:func:`due_in`), checked against a publisher's
    limits; None when it asked for none (or for a time already past: publish now).

    :param what: the publisher, for the error (``"SQSPublisher to 'orders'"``).
    :param maximum: the longest delay the broker holds, in seconds (SQS: 900).
    :param refused: why this publisher takes no delay at all, when it takes none.
    :raises ConfigurationError: what :func:`due_in` refuses, a delay beyond
        ``maximum``, any delay where ``refused`` is given.
    """
    try:
        seconds = due_in(delay, at)
    except ConfigurationError as exc:  # name the publisher that was asked
        raise ConfigurationError(f"{what}: {str(exc).removeprefix('publish: ')}") from None
    if not seconds:
        return None
    if refused is not None:
        raise ConfigurationError(f"{what}: delayed publish is not supported: {refused}")
    if maximum is not None and seconds > maximum:
        raise ConfigurationError(
            f"{what}: a delay of {seconds:g}s is beyond the broker's limit of {maximum:g}s; "
            "publish it later, or to a broker that holds longer delays"
        )
    return DelayedPublish.after(seconds)


def not_before(headers: Mapping[str, Any] | None, now: float | None = None) -> float | None:
    """Seconds a delivery with these headers must still wait (its :data:`NOT_BEFORE`
    header in the future), None when it is due (no header, past, unreadable)."""
    if not headers:
        return None
    raw = headers.get(NOT_BEFORE)
    if raw is None:
        return None
    try:
        due = float(raw.decode() if isinstance(raw, bytes) else raw)
    except (TypeError, ValueError):
        return None
    left = due - (time.time() if now is None else now)
    return left if left > 0 and math.isfinite(left) else None


class DelayingPublisher:
    """Delayed publish for a broker that cannot hold a message back itself: the message
    is published at once with the time it is due in the :data:`NOT_BEFORE` header, and
    the route consuming it holds it back until then (:func:`not_before`).

    Wraps any publisher whose ``publish(body, *, headers=..., **options)`` sends at
    once: ``publish(body, delay=...)`` / ``at=...`` add the header, anything else
    passes through. The message is in the stream from the start: a consumer that does
    not read the header (another program) gets it early. ``maximum`` bounds the delay
    (the consumer's longest redelivery delay), ``what`` names the publisher in errors.
    """

    def __init__(self, publisher: Any, *, what: str, maximum: float | None = None) -> None:
        self.publisher = publisher
        self.what = what
        self.maximum = maximum

    def stamp(
        self,
        headers: Mapping[str, Any] | None,
        delay: float | None = None,
        at: datetime | None = None,
    ) -> Mapping[str, Any] | None:
        """``headers`` with the :data:`NOT_BEFORE` header when a delay is asked (the
        caller's own ``NOT_BEFORE`` is replaced), else ``headers`` unchanged."""
        scheduled = check_delay(delay, at, what=self.what, maximum=self.maximum)
        if scheduled is None:
            return headers
        due = math.ceil(scheduled.not_before * 1000) / 1000  # rounded up: never early
        return {**(headers or {}), NOT_BEFORE: f"{due:.3f}"}

    async def publish(
        self,
        body: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        **options: Any,
    ) -> Any:
        """Publish through the wrapped publisher, the delay (if any) in a header."""
        stamped = self.stamp(headers, delay, at)
        return await self.publisher.publish(body, headers=stamped, **options)
