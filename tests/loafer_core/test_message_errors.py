"""loafer_core._message_errors: a route's message errors counted and logged at a bounded
rate, as a unit."""

from __future__ import annotations

import pytest

from loafer_core._message_errors import MessageErrors, error_text, message_fields
from loafer_core.outcome import REJECT
from loafer_core.provider import Delivery

DELIVERY = Delivery(raw=b"x", body=b"x", message_id="m-1", attempt=2)


def test_counts_and_keeps_the_last() -> None:
    errors = MessageErrors("r")
    errors.counted(ValueError("one"))
    errors.counted(KeyError("two"))
    assert (errors.count, errors.last) == (2, "KeyError: 'two'")


def test_the_same_error_is_logged_once_then_held(caplog: pytest.LogCaptureFixture) -> None:
    errors = MessageErrors("r")
    for _ in range(5):
        errors.log(ValueError("same"), DELIVERY, "route %r: failed on %s", "r", "m-1")
    errors.log(ValueError("other"), DELIVERY, "route %r: failed on %s", "r", "m-1")
    assert [r.getMessage() for r in caplog.records] == [
        "route 'r': failed on m-1",
        "route 'r': failed on m-1",
    ]
    assert caplog.records[0].route == "r" and caplog.records[0].attempt == 2  # type: ignore[attr-defined]
    errors.summarise()
    assert "4 repeated error log lines were held back" in caplog.text


def test_an_invalid_message_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    MessageErrors("r").log_invalid(ValueError("not an int"), DELIVERY, REJECT("not an int"))
    [record] = caplog.records
    assert record.levelname == "WARNING" and "rejected: not an int" in record.getMessage()


def test_an_exception_whose_str_fails_still_has_a_text() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError

    assert error_text(Broken()) == "<Broken: str() failed>"
    assert message_fields("r", DELIVERY)["outcome"] is None
