"""loafer_core._attempts: max_attempts and the retry policy, as a unit."""

from __future__ import annotations

import logging

import pytest

from loafer_core._attempts import Attempts, default_retry_for
from loafer_core._message_errors import MessageErrors
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import REJECT, RETRY, OutcomeKind
from loafer_core.policy import DEFAULT_RETRY, RetryPolicy
from loafer_core.provider import Capabilities, Delivery

DELAYS = Capabilities(delayed_retry=True, attempt_count=True, max_retry_delay=100)


def attempts(max_attempts: int | None = None, retry: RetryPolicy | None = None) -> Attempts:
    return Attempts("r", lambda: "P('q')", max_attempts, retry, retry is None, MessageErrors("r"))


def at(attempt: int | None) -> Delivery:
    return Delivery(raw=b"x", body=b"x", message_id="m", attempt=attempt)


def test_the_gate_rejects_past_max_attempts_only(caplog: pytest.LogCaptureFixture) -> None:
    unit = attempts(max_attempts=2)
    assert unit.gate(at(2)) is None and unit.gate(at(None)) is None
    rejected = unit.gate(at(3))
    assert rejected is not None and rejected.kind is OutcomeKind.REJECT
    assert "attempt 3 exceeds max_attempts=2" in caplog.text


def test_a_retry_on_the_last_attempt_is_a_reject() -> None:
    unit = attempts(max_attempts=2)
    unit.check(DELAYS)
    assert unit.finish(RETRY(), at(2)) == REJECT("max_attempts (2) reached")
    assert unit.finish(RETRY(5), at(1)) == RETRY(5)


def test_the_default_policy_applies_once_the_provider_is_known() -> None:
    unit = attempts()
    assert unit.finish(RETRY(), at(1)) == RETRY()  # capabilities unknown: no delay yet
    unit.check(DELAYS)
    assert unit.policy == DEFAULT_RETRY
    assert unit.finish(RETRY(), at(1)) == RETRY(DEFAULT_RETRY.delay(1))


def test_a_delay_the_provider_cannot_honour_is_cut_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unit = attempts(retry=RetryPolicy(1, 2, 50))
    unit.check(DELAYS)
    with caplog.at_level(logging.WARNING):
        assert unit.finish(RETRY(500), at(1)) == RETRY(100)
        assert unit.finish(RETRY(600), at(1)) == RETRY(100)
    assert caplog.text.count("shortened to 100s") == 1


def test_a_put_off_delivery_is_never_rejected() -> None:
    unit = attempts(max_attempts=1)
    unit.check(DELAYS)
    assert unit.retry_outcome(at(1), delay=3) == RETRY(3)
    assert unit.retry_outcome(at(1)) == REJECT("max_attempts (1) reached")


def test_check_refuses_what_the_provider_cannot_do() -> None:
    with pytest.raises(ConfigurationError, match="counts delivery attempts, and P\\('q'\\)"):
        attempts(max_attempts=3).check(Capabilities())
    with pytest.raises(ConfigurationError, match="needs delayed retries"):
        attempts(retry=RetryPolicy(1, 2, 10)).check(Capabilities())
    with pytest.raises(ConfigurationError, match="exceeds the provider's longest"):
        attempts(retry=RetryPolicy(1, 2, 500)).check(DELAYS)


def test_default_retry_for_caps_at_the_providers_limit() -> None:
    assert default_retry_for(Capabilities()) is None
    assert default_retry_for(Capabilities(delayed_retry=True, retry_waits=True)) is None
    capped = default_retry_for(Capabilities(delayed_retry=True, max_retry_delay=5))
    assert capped is not None and capped.maximum == 5
