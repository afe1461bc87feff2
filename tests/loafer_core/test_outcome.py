from __future__ import annotations

import pytest

from loafer_core import (
    ACCEPT,
    REJECT,
    RELEASE,
    RETRY,
    DeleteMessage,
    LoaferError,
    Outcome,
    OutcomeKind,
    RejectMessage,
    RetryMessage,
)
from loafer_core.errors import LoaferException, TranslationError


def test_vocabulary() -> None:
    assert Outcome.ACCEPT is ACCEPT and ACCEPT.kind is OutcomeKind.ACCEPT
    assert Outcome.RELEASE is RELEASE and RELEASE.kind is OutcomeKind.RELEASE
    assert RETRY().kind is OutcomeKind.RETRY and RETRY().delay is None
    assert Outcome.RETRY(2.5).delay == 2.5
    assert REJECT("bad").reason == "bad" and Outcome.REJECT("x") == REJECT("x")
    assert repr(RETRY(1)) == "RETRY(delay=1)" and repr(ACCEPT) == "ACCEPT"


@pytest.mark.parametrize("delay", [-1, float("nan"), float("inf"), "3", True])
def test_bad_delay_refused(delay: object) -> None:
    with pytest.raises(ValueError):
        RETRY(delay)  # type: ignore[arg-type]


def test_delay_and_reason_only_where_they_belong() -> None:
    with pytest.raises(ValueError):
        Outcome(OutcomeKind.ACCEPT, delay=1)
    with pytest.raises(ValueError):
        Outcome(OutcomeKind.RETRY, reason="x")


def test_signals_map_to_outcomes() -> None:
    assert DeleteMessage().outcome() == ACCEPT
    assert RejectMessage("poison").outcome() == REJECT("poison")
    assert RetryMessage(delay=3).outcome() == RETRY(3)
    assert not issubclass(DeleteMessage, Exception)  # olist-loafer 7.0: escapes except Exception
    assert not issubclass(DeleteMessage, LoaferError)
    assert LoaferException is LoaferError
    assert issubclass(TranslationError, ValueError)
