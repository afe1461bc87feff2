"""Delayed publish in core: due_in, check_delay, the NOT_BEFORE emulation, the memory broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from loafer_core.errors import ConfigurationError
from loafer_core.kit import (
    NOT_BEFORE,
    DelayedPublish,
    DelayingPublisher,
    check_delay,
    due_in,
    not_before,
)
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.outcome import Outcome


def test_due_in_reads_seconds_or_an_aware_datetime() -> None:
    assert due_in() is None
    assert due_in(0) == 0.0
    assert due_in(2.5) == 2.5
    soon = due_in(at=datetime.now(UTC) + timedelta(seconds=10))
    assert soon is not None and 9 < soon <= 10
    other_zone = timezone(timedelta(hours=-5))
    later = due_in(at=datetime.now(other_zone) + timedelta(seconds=60))
    assert later is not None and 59 < later <= 60


def test_a_time_in_the_past_is_due_now() -> None:
    assert due_in(at=datetime.now(UTC) - timedelta(hours=1)) == 0.0
    assert check_delay(at=datetime.now(UTC) - timedelta(hours=1), what="x") is None


@pytest.mark.parametrize(
    ("delay", "at", "match"),
    [
        (1, datetime.now(UTC), "not both"),
        (None, datetime.now(), "naive"),
        (-1, None, ">= 0"),
        (float("inf"), None, "finite"),
        (float("nan"), None, "finite"),
        ("5", None, "a number"),
        (True, None, "a number"),
        (None, "2026-01-01T00:00:00Z", "datetime"),
    ],
)
def test_due_in_refuses_what_names_no_delay(delay: Any, at: Any, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        due_in(delay, at)


def test_check_delay_applies_the_publishers_limits() -> None:
    assert check_delay(what="P") is None
    assert check_delay(0, what="P", refused="no") is None  # no delay asked: nothing refused
    scheduled = check_delay(0.0004, what="P", maximum=900)
    assert isinstance(scheduled, DelayedPublish)
    assert scheduled.milliseconds == 1 and scheduled.seconds == 1
    assert abs(scheduled.not_before - time.time()) < 1
    assert check_delay(900, what="P", maximum=900) is not None
    with pytest.raises(ConfigurationError, match=r"P: a delay of 901s is beyond .* 900s"):
        check_delay(901, what="P", maximum=900)
    with pytest.raises(ConfigurationError, match="P: delayed publish is not supported: why"):
        check_delay(1, what="P", refused="why")


def test_not_before_reads_the_header() -> None:
    now = 1_000.0
    assert not_before(None) is None
    assert not_before({}) is None
    assert not_before({NOT_BEFORE: "1002.5"}, now=now) == 2.5
    assert not_before({NOT_BEFORE: b"1002.5"}, now=now) == 2.5
    assert not_before({NOT_BEFORE: "999"}, now=now) is None
    assert not_before({NOT_BEFORE: "soon"}, now=now) is None
    assert not_before({NOT_BEFORE: "inf"}, now=now) is None


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, Mapping[str, Any] | None, dict[str, Any]]] = []

    async def publish(
        self, body: Any, *, headers: Mapping[str, Any] | None = None, **options: Any
    ) -> str:
        self.sent.append((body, headers, options))
        return "id"


async def test_delaying_publisher_stamps_the_header_and_passes_the_rest() -> None:
    inner = _Recorder()
    publisher = DelayingPublisher(inner, what="Emulated", maximum=60)
    assert await publisher.publish(b"now", headers={"a": "1"}, subject="s") == "id"
    await publisher.publish(b"later", headers={"a": "1"}, delay=5)
    await publisher.publish(b"at", at=datetime.now(UTC) + timedelta(seconds=5))
    (_, now_headers, options), (_, later_headers, _), (_, at_headers, _) = inner.sent
    assert now_headers == {"a": "1"} and options == {"subject": "s"}
    assert later_headers is not None and later_headers["a"] == "1"
    left = not_before(later_headers)
    assert left is not None and 4 < left <= 5.001  # the header keeps milliseconds
    assert at_headers is not None and not_before(at_headers) is not None
    with pytest.raises(ConfigurationError, match="Emulated: a delay of 61s"):
        await publisher.publish(b"too late", delay=61)
    assert len(inner.sent) == 3


async def test_memory_holds_a_delayed_publish_back_until_due() -> None:
    broker = MemoryBroker()
    provider = MemoryProvider(broker, "q", wait=0.05)
    assert provider.delay_support.value == "native"
    started = time.monotonic()
    await provider.publish(b"later", delay=0.4)
    await provider.publish(b"at", at=datetime.now(UTC) + timedelta(seconds=0.4))
    await provider.publish(b"now")
    first = await provider.fetch(10)
    assert [d.raw for d in first] == [b"now"]
    got: list[Any] = []
    async with asyncio.timeout(5):
        while len(got) < 2:
            got += await provider.fetch(10)
    assert time.monotonic() - started >= 0.4
    assert sorted(d.raw for d in got) == [b"at", b"later"]
    for delivery in [*first, *got]:
        await provider.settle(delivery, Outcome.ACCEPT)
    assert broker.is_idle("q")


def test_memory_refuses_a_naive_datetime() -> None:
    broker = MemoryBroker()
    with pytest.raises(ConfigurationError, match="naive"):
        broker.publish("q", b"x", at=datetime.now())
    assert not broker.has_queue("q")


def test_check_delay_names_the_publisher_in_what_due_in_refuses() -> None:
    with pytest.raises(ConfigurationError, match=r"^SQSPublisher to 'q': at=.* is a naive"):
        check_delay(at=datetime.now(), what="SQSPublisher to 'q'")
