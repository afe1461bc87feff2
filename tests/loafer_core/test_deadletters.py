"""loafer_core.deadletters: the common keys, filters, the memory store and the kit."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from loafer_core.deadletters import (
    DEAD_FIRST_FAILURE,
    DEAD_ORIGIN,
    DEAD_REASON,
    REPLAY_ID,
    DeadLetter,
    Filter,
    HasDeadLetters,
    dead_headers,
    dead_letters_of,
    read_dead_letter,
    replay_headers,
)
from loafer_core.errors import ConfigurationError
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.outcome import REJECT
from loafer_core.provider import Provider
from loafer_core.testing import DeadLetterContract

pytestmark = pytest.mark.memory


class TestMemoryDeadLetters(DeadLetterContract):
    timeout = 20.0
    arrival_timeout = 5.0
    across_processes = False  # the broker lives in this process

    broker: MemoryBroker

    async def create_queue(self, queue: str) -> None:
        self.broker = MemoryBroker()
        self.broker.declare(queue)

    async def make_provider(self, queue: str) -> Provider:
        return MemoryProvider(self.broker, queue, wait=0.2)

    async def put(self, queue: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.broker.publish(queue, body, headers=headers)


def test_dead_headers_keep_the_first_failure() -> None:
    then = datetime(2026, 1, 1, tzinfo=UTC)
    first = dead_headers({}, reason="bad\n  input", attempts=3, origin="q", now=then)
    assert first[DEAD_REASON] == "bad input" and first["loafer-dead-attempts"] == "3"
    later = dead_headers(first, reason=None, attempts=None, origin="q", now=then + timedelta(1))
    assert later[DEAD_FIRST_FAILURE] == then.isoformat()
    assert later["loafer-dead-last-failure"] != then.isoformat()
    assert later[DEAD_REASON] == "rejected" and later["loafer-dead-attempts"] == "1"


def test_read_and_replay_headers() -> None:
    headers = {**dead_headers({"k": "v"}, reason="r", attempts=2, origin="q"), "k": "v"}
    letter = read_dead_letter("id-1", b"{}", headers)
    assert (letter.reason, letter.attempts, letter.origin) == ("r", 2, "q")
    out = replay_headers(letter)
    assert out["k"] == "v" and out[REPLAY_ID] == "id-1" and DEAD_REASON not in out
    assert DEAD_ORIGIN not in out and DEAD_FIRST_FAILURE in out
    assert read_dead_letter("x", b"", {}, origin="o").origin == "o"


def test_filter() -> None:
    now = datetime.now(UTC)
    old = DeadLetter("a", b"", reason="Timeout", last_failure=now - timedelta(hours=2))
    new = DeadLetter("b", b"", reason="bad json", last_failure=now)
    unknown = DeadLetter("c", b"")
    assert Filter().matches(unknown)
    assert Filter(ids=frozenset({"a"})).matches(old) and not Filter(ids=frozenset({"a"})).matches(
        new
    )
    assert Filter(reason="timeout").matches(old) and not Filter(reason="timeout").matches(new)
    assert Filter(older_than=3600).matches(old) and not Filter(older_than=3600).matches(new)
    assert Filter(newer_than=3600).matches(new) and not Filter(newer_than=3600).matches(old)
    assert not Filter(older_than=1).matches(unknown)
    with pytest.raises(ConfigurationError, match="older_than"):
        Filter(older_than=-1)


def test_dead_letters_of_a_provider_without_a_store() -> None:
    class Bare:
        def describe(self) -> str:
            return "bare:q"

    with pytest.raises(ConfigurationError, match="bare:q: this provider has no dead-letter"):
        dead_letters_of(Bare())
    provider = MemoryProvider(MemoryBroker(), "q")
    assert isinstance(provider, HasDeadLetters)
    assert dead_letters_of(provider).guarantee == "exactly-once"


def test_replay_is_rate_bounded() -> None:
    async def main() -> float:
        broker = MemoryBroker()
        provider = MemoryProvider(broker, "q", wait=0.1)
        for i in range(5):
            broker.publish("q", str(i).encode())
        await provider.start(5)
        for delivery in await provider.fetch(5):
            await provider.settle(delivery, REJECT("no"))
        store = dead_letters_of(provider)
        loop = asyncio.get_running_loop()
        started = loop.time()
        seen: list[int] = []
        report = await store.replay(rate=20.0, progress=seen.append)
        assert report.replayed == 5 and seen == [1, 2, 3, 4, 5]
        assert broker.depth("q") == 5 and await store.count() == 0
        return loop.time() - started

    assert asyncio.run(main()) >= 4 / 20 * 0.9  # 5 messages, 4 gaps of 50 ms
    with pytest.raises(ConfigurationError, match="rate"):
        asyncio.run(dead_letters_of(MemoryProvider(MemoryBroker(), "q")).replay(rate=0))
