"""The errors of a route's messages: counted, and logged at a bounded rate."""

from __future__ import annotations

import logging
from typing import Any

from loafer_core.outcome import RETRY, Outcome
from loafer_core.provider import Delivery
from loafer_core.throttle import LogThrottle

logger = logging.getLogger("loafer_core.route")


def message_fields(
    route: str, delivery: Delivery, outcome: Outcome | None = None
) -> dict[str, Any]:
    """The structured fields (``extra=``) of a log line about one message: ``route``,
    ``message_id``, ``attempt`` and, when known, ``outcome`` (its kind's name)."""
    return {
        "route": route,
        "message_id": delivery.message_id,
        "attempt": delivery.attempt,
        "outcome": outcome.kind.name if outcome is not None else None,
    }


def error_text(exc: BaseException) -> str:
    """``str(exc)``, or a stand-in when the exception's ``__str__`` itself fails."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"


class MessageErrors:
    """One route's message errors (translator, handler, error handler, middleware,
    forwarded publish): how many, the last one, and their log lines, each kind at most
    once per 30 s with the count of those held back meanwhile."""

    def __init__(self, route: str) -> None:
        self.route = route
        self.throttle = LogThrottle()
        #: errors so far
        self.count = 0
        #: the last of them, as ``"Type: text"``
        self.last: str | None = None

    def counted(self, exc: BaseException) -> None:
        """Count ``exc`` as an error of a message."""
        self.count += 1
        self.last = f"{type(exc).__name__}: {error_text(exc)[:500]}"

    def log(self, exc: BaseException | None, delivery: Delivery, message: str, *args: Any) -> None:
        """Log an error of a message (with the traceback of ``exc``) at the bounded rate:
        the same error (type and text, or the same line without one) at most once per
        30 s. Its outcome is RETRY."""
        key = (message,) if exc is None else (message, type(exc), error_text(exc)[:200])
        held = self.throttle.admit(key)
        if held is None:
            return
        if held:
            message += " (%d more like it not logged since the last time)"
            args = (*args, held)
        logger.error(
            message, *args, exc_info=exc, extra=message_fields(self.route, delivery, RETRY())
        )

    def log_invalid(self, exc: BaseException, delivery: Delivery, rejected: Outcome) -> None:
        """An invalid message rejected by default: a warning, at the bounded rate."""
        held = self.throttle.admit(("invalid", type(exc), error_text(exc)[:200]))
        if held is None:
            return
        logger.warning(
            "route %r: message %s rejected: %s%s",
            self.route,
            delivery.message_id,
            exc,
            f" ({held} more like it not logged since the last time)" if held else "",
            extra=message_fields(self.route, delivery, rejected),
        )

    def summarise(self) -> None:
        """At the route's stop: say how many log lines the rate limit held back."""
        held = self.throttle.held()
        if held:
            logger.warning(
                "route %r: %d repeated error log lines were held back (rate limit)",
                self.route,
                held,
            )
