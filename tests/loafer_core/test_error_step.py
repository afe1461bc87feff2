"""loafer_core._error_step: what an error of a message becomes, as a unit."""

from __future__ import annotations

from typing import Any

from loafer_core._error_step import ErrorStep, error_outcome, outcome_from_result
from loafer_core._handler import adapt_error_handler
from loafer_core._message_errors import MessageErrors
from loafer_core.errors import DeleteMessage, InvalidMessage
from loafer_core.outcome import ACCEPT, REJECT, RETRY
from loafer_core.provider import Delivery


def delivery() -> Delivery:
    return Delivery(raw=b"raw", body=b"raw", message_id="m", attempt=1)


async def test_without_an_error_handler_invalid_is_rejected_and_others_retried() -> None:
    errors = MessageErrors("r")
    step = ErrorStep(None, errors)
    assert await step(InvalidMessage("bad"), delivery()) == REJECT("bad")
    d = delivery()
    assert await step(ValueError("x"), d) == RETRY()
    assert d.error is not None and errors.count == 2


async def test_the_error_handlers_answer_and_signals() -> None:
    seen: list[Any] = []

    async def handler(exc_type: Any, exc: Any, raw: Any) -> bool:
        seen.append((exc_type, raw))
        if isinstance(exc, KeyError):
            raise DeleteMessage()
        return True

    step = ErrorStep(adapt_error_handler(handler), MessageErrors("r"))
    assert await step(ValueError("x"), delivery()) == ACCEPT
    assert await step(KeyError("k"), delivery()) == ACCEPT
    assert seen == [(ValueError, b"raw"), (KeyError, b"raw")]


async def test_a_failing_error_handler_is_counted_and_retried() -> None:
    def handler(exc_type: Any, exc: Any, raw: Any) -> bool:
        raise OSError("down")

    errors = MessageErrors("r")
    step = ErrorStep(adapt_error_handler(handler), errors)
    assert await step(ValueError("x"), delivery()) == RETRY()
    assert errors.count == 2 and errors.last == "OSError: down"


def test_result_mapping() -> None:
    assert [outcome_from_result(v) for v in (None, True, False, 1, 0)] == [
        ACCEPT,
        ACCEPT,
        RETRY(),
        ACCEPT,
        RETRY(),
    ]
    assert error_outcome(None) == RETRY() and error_outcome(REJECT("x")) == REJECT("x")
