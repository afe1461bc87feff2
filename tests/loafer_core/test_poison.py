"""A poison message under default settings backs off and logs at a bounded rate (memory
broker; each broker's own test is in its directory)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from loafer_core import Manager, Route
from loafer_core._attempts import default_retry_for as _default_retry_for
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.outcome import RETRY
from loafer_core.policy import DEFAULT_RETRY, RetryPolicy
from loafer_core.provider import Capabilities
from loafer_core.throttle import LogThrottle
from tests.poison import POISON, Attempts, error_lines

pytestmark = pytest.mark.memory


async def test_a_poison_message_backs_off_and_is_logged_once_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: redelivered at once, thousands of times a second, a traceback each time."""
    broker = MemoryBroker(history=10)
    broker.publish("q", POISON)
    attempts = Attempts()

    async def handler(content: Any, metadata: Any) -> bool:
        raise AssertionError("never reached")

    route = Route(MemoryProvider(broker, "q"), handler, translator=attempts)
    with caplog.at_level(logging.WARNING):
        async with Manager([route], shutdown_timeout=1) as manager:
            await manager.wait_started()
            await attempts.wait_for(3)
    assert [s.outcome for s in broker.settlements("q")][:2] == [RETRY(1.0), RETRY(2.0)]
    assert attempts.gaps[0] >= 0.9 and attempts.gaps[1] >= 1.9
    lines = error_lines(caplog.records)
    assert len(lines) == 1 and "error handling message" in lines[0]
    assert any(
        "2 repeated error log lines were held back" in r.getMessage() for r in caplog.records
    )


def test_the_default_retry_fits_the_provider() -> None:
    assert _default_retry_for(Capabilities(delayed_retry=True)) is DEFAULT_RETRY
    assert _default_retry_for(Capabilities()) is None  # cannot delay: nothing to add
    assert _default_retry_for(Capabilities(delayed_retry=True, retry_waits=True)) is None
    assert _default_retry_for(Capabilities(delayed_retry=True, max_retry_delay=10)) == RetryPolicy(
        1.0, 2.0, 10
    )


async def test_retry_none_keeps_immediate_retries() -> None:
    broker = MemoryBroker(history=10)
    broker.publish("q", POISON)
    attempts = Attempts()
    route = Route(MemoryProvider(broker, "q"), lambda c, m: True, translator=attempts, retry=None)
    async with Manager([route], shutdown_timeout=1) as manager:
        await manager.wait_started()
        await attempts.wait_for(20, timeout=5)
    assert all(s.outcome == RETRY() for s in broker.settlements("q"))


async def test_a_provider_that_cannot_delay_retries_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    route = Route(MemoryProvider(MemoryBroker(), "q"), lambda c, m: True)
    with caplog.at_level(logging.WARNING):
        route.check_capabilities(Capabilities())
    assert "cannot delay retries" in caplog.text and "max_attempts" in caplog.text


def test_log_throttle(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("loafer_core.throttle.time.monotonic", lambda: now[0])
    throttle = LogThrottle(interval=10, max_keys=2)
    assert throttle.admit("a") == 0
    assert throttle.admit("a") is None
    assert throttle.admit("a") is None
    assert throttle.admit("b") == 0
    assert throttle.admit("c") == 0  # a third kind shares the overflow budget...
    assert throttle.admit("d") is None  # ...held back with it
    now[0] += 10
    assert throttle.admit("a") == 2  # written again, with the two held back
    assert throttle.held() == 1  # d's, not yet reported
    assert throttle.held() == 0
