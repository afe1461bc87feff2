"""The route's answer to an error of a message: its error handler, or the default."""

from __future__ import annotations

import asyncio
from typing import Any

from loafer_core._handler import really_cancelled, settle_result
from loafer_core._message_errors import MessageErrors
from loafer_core.errors import InvalidMessage, MessageSignal
from loafer_core.outcome import ACCEPT, REJECT, RETRY, Outcome
from loafer_core.provider import Delivery


class ErrorStep:
    """What an error of a message (translator, typed decoding, handler) becomes.

    Without an error handler: an :class:`~loafer_core.errors.InvalidMessage` is REJECTED
    (retrying cannot make it valid), anything else logged and RETRIED. With one, its
    result: ``True`` -> ACCEPT, ``False``/``None`` -> RETRY, an ``Outcome`` -> that, a
    message signal -> its outcome; should the error handler itself fail, the failure is
    counted and logged, and the message RETRIED.
    """

    def __init__(self, call: Any, errors: MessageErrors) -> None:
        self.call = call  # the adapted error handler, or None
        self.errors = errors

    async def __call__(self, exc: BaseException, delivery: Delivery) -> Outcome:
        delivery.error = exc
        errors = self.errors
        errors.counted(exc)
        if self.call is None:
            if isinstance(exc, InvalidMessage):
                rejected = REJECT(str(exc))
                errors.log_invalid(exc, delivery, rejected)
                return rejected
            errors.log(
                exc,
                delivery,
                "route %r: error handling message %s (attempt %s); it will be retried",
                errors.route,
                delivery.message_id,
                delivery.attempt,
            )
            return RETRY()
        try:
            try:
                result = await self.call(type(exc), exc, delivery.raw)
                result = await settle_result(result)
            except MessageSignal as signal:
                return signal.outcome()
            except asyncio.CancelledError:
                if really_cancelled():
                    raise
                raise RuntimeError("the error handler raised CancelledError")  # noqa: B904
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException as failure:
            errors.counted(failure)
            errors.log(
                failure,
                delivery,
                "route %r: the error handler failed on message %s; it will be retried",
                errors.route,
                delivery.message_id,
            )
            return RETRY()
        return error_outcome(result)


def outcome_from_result(result: Any) -> Outcome:
    """Map a handler's (or error handler's) return value to an outcome.

    ``None`` and ``True`` -> ACCEPT, ``False`` -> RETRY, an ``Outcome`` -> itself; any other
    value by its truth (Loafer 2.x's rule).
    """
    if result is None or result is True:
        return ACCEPT
    if result is False:
        return RETRY()
    if isinstance(result, Outcome):
        return result
    return ACCEPT if result else RETRY()


def error_outcome(result: Any) -> Outcome:
    """An error handler's value: ``True`` -> ACCEPT, ``False``/``None`` -> RETRY."""
    if result is None:
        return RETRY()
    return outcome_from_result(result)
