"""loafer_core.testing.eventually: a bounded wait for a condition, saying what it last saw."""

from __future__ import annotations

import asyncio
import time

import pytest

from loafer_core.testing import eventually


async def test_returns_the_first_true_value_of_a_plain_function() -> None:
    calls: list[int] = []

    def check() -> list[int]:
        calls.append(1)
        return calls if len(calls) >= 3 else []

    assert await eventually(check, timeout=5, interval=0) == [1, 1, 1]


async def test_awaits_an_async_function() -> None:
    seen = 0

    async def check() -> int:
        nonlocal seen
        seen += 1
        await asyncio.sleep(0)
        return seen if seen == 2 else 0

    assert await eventually(check, timeout=5, interval=0) == 2


async def test_a_true_condition_returns_at_once_even_with_no_time() -> None:
    assert await eventually(lambda: "yes", timeout=0) == "yes"


async def test_failing_names_what_it_waited_for_and_the_last_value_seen() -> None:
    values = iter(range(1000))
    started = time.monotonic()
    with pytest.raises(AssertionError) as raised:
        await eventually(lambda: next(values) * 0, timeout=0.2, interval=0.01, what="a count")
    assert time.monotonic() - started < 2
    message = str(raised.value)
    assert "not true within 0.2s: a count" in message
    assert "last seen: 0" in message


async def test_assertions_are_retried_and_the_last_one_is_reported() -> None:
    attempts = 0

    def check() -> bool:
        nonlocal attempts
        attempts += 1
        assert attempts > 1000, f"only {attempts} attempts"
        return True

    with pytest.raises(AssertionError, match=r"last check failed: only \d+ attempts"):
        await eventually(check, timeout=0.1, interval=0.01)
    assert attempts > 1


async def test_other_errors_are_raised_at_once() -> None:
    def check() -> bool:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        await eventually(check, timeout=5)


async def test_a_call_that_never_returns_is_bounded_by_the_timeout() -> None:
    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    started = time.monotonic()
    with pytest.raises(AssertionError, match="still running at the deadline"):
        await eventually(hangs, timeout=0.2)
    assert time.monotonic() - started < 2


async def test_the_name_defaults_to_the_function() -> None:
    def queue_is_empty() -> bool:
        return False

    with pytest.raises(AssertionError, match="queue_is_empty"):
        await eventually(queue_is_empty, timeout=0.05, interval=0.01)


async def test_negative_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        await eventually(lambda: True, timeout=-1)
