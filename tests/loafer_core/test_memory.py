from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from loafer_core import ACCEPT, REJECT, RELEASE, RETRY, ConfigurationError, Route
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.testing import run_until_idle


async def test_the_queue_keeps_what_was_published_whatever_is_done_to_copies(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    body = {"n": 0, "tags": ["a"]}
    headers = {"trace": ["t1"], "nested": {"hops": [1]}}
    broker.publish("q", body, headers=headers)
    body["n"] = 99  # the publisher changes its object after publishing
    headers["trace"].append("t2")
    await provider.start(10)
    [first] = await provider.fetch(1)
    assert first.body == {"n": 0, "tags": ["a"]}
    assert first.metadata["headers"] == {"trace": ["t1"], "nested": {"hops": [1]}}
    first.body["n"] = 1  # a handler changes its content, then fails
    first.body["tags"].append("b")
    first.metadata["headers"]["trace"] = "changed"
    first.metadata["headers"]["nested"]["hops"].append(99)
    await provider.settle(first, RETRY())
    [again] = await provider.fetch(1)
    assert again.body == {"n": 0, "tags": ["a"]}  # redelivered as published
    assert again.metadata["headers"] == {"trace": ["t1"], "nested": {"hops": [1]}}
    await provider.settle(again, ACCEPT)


async def test_objects_of_your_own_are_delivered_as_themselves(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    sentinel = object()
    broker.publish("q", sentinel)  # a mock, a sentinel: a test looks at their identity
    await provider.start(10)
    [delivery] = await provider.fetch(1)
    assert delivery.body is sentinel
    await provider.settle(delivery, ACCEPT)


async def test_semantics(broker: MemoryBroker, provider: MemoryProvider) -> None:
    broker.publish_many("q", ["a", "b", "c"])
    await provider.start(10)
    a, b, c = await provider.fetch(3)
    assert [d.body for d in (a, b, c)] == ["a", "b", "c"]
    await provider.settle(a, ACCEPT)
    await provider.settle(b, REJECT("bad"))
    await provider.settle(c, RELEASE)
    assert [m.body for m in broker.dead_letters("q")] == ["b"]
    assert broker.dead_letters("q")[0].reject_reason == "bad"
    [c2] = await provider.fetch(3)
    assert c2.body == "c" and c2.attempt == 1  # RELEASE does not count
    await provider.settle(c2, RETRY(0.1))
    assert not await MemoryProvider(broker, "q", wait=0).fetch(1), "the delay was not honoured"
    [c3] = await provider.fetch(1)  # waits for the delay (wait=0.2 > 0.1)
    assert c3.body == "c" and c3.attempt == 2
    await provider.settle(c3, ACCEPT)
    assert broker.is_idle("q")


async def test_release_goes_back_to_the_head(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    broker.publish_many("q", [1, 2, 3])
    [one] = await provider.fetch(1)
    await provider.settle(one, RELEASE)
    assert [d.body for d in await provider.fetch(3)] == [1, 2, 3]


async def test_publish_from_a_thread_wakes_a_waiting_fetch(broker: MemoryBroker) -> None:
    provider = MemoryProvider(broker, "q", wait=5)
    fetch = asyncio.create_task(provider.fetch(1))
    await asyncio.sleep(0)  # let the fetch start waiting
    threading.Thread(target=broker.publish, args=("q", "from thread")).start()
    [d] = await asyncio.wait_for(fetch, 2)
    assert d.body == "from thread"


async def test_cancelled_fetch_loses_nothing(broker: MemoryBroker) -> None:
    provider = MemoryProvider(broker, "q", wait=5)
    fetch = asyncio.create_task(provider.fetch(1))
    await asyncio.sleep(0)
    fetch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fetch
    broker.publish("q", "kept")
    assert broker.depth("q") == 1


def test_bad_arguments() -> None:
    broker = MemoryBroker()
    with pytest.raises(ConfigurationError, match="queue"):
        MemoryProvider(broker, "")
    with pytest.raises(ConfigurationError, match="broker"):
        MemoryProvider("nope", "q")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="lease"):
        broker.declare("q", lease=0)


async def test_run_until_idle_reports_outcomes() -> None:
    broker = MemoryBroker()
    for body in ("ok", "bad", "flaky", "poison"):
        broker.publish("jobs", body)
    tries: dict[str, int] = {}

    async def handler(content: str, metadata: Any) -> Any:
        tries[content] = tries.get(content, 0) + 1
        if content == "bad":
            raise ValueError("bad input")
        if content == "flaky" and tries[content] < 2:
            return False
        if content == "poison":
            return REJECT("poison")
        return True

    def error_handler(exc_type: Any, exc: Any, raw: Any) -> bool:
        return True

    report = await run_until_idle(
        Route(MemoryProvider(broker, "jobs", wait=0.1), handler, error_handler=error_handler),
        timeout=5,
    )
    assert sorted(s.body for s in report.accepted) == ["bad", "flaky", "ok"]
    assert [s.body for s in report.retried] == ["flaky"]
    assert [s.body for s in report.rejected] == ["poison"]
    assert report.released == []


async def test_a_broker_keeps_no_history_unless_asked() -> None:
    """A long-running broker held the last 100,000 settled messages by default."""
    import gc

    from loafer_core.memory import MemoryMessage

    broker = MemoryBroker()
    broker.publish_many("q", list(range(1, 1001)))
    provider = MemoryProvider(broker, "q")
    await provider.start(100)
    while batch := await provider.fetch(100):
        for delivery in batch:
            await provider.settle(delivery, ACCEPT)
    del batch
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, MemoryMessage)]
    with pytest.raises(ConfigurationError, match=r"keeps no settlements.*history=N"):
        broker.settlements("q")
    assert broker.settled_total("q") == 1000

    broker.keep_history(2)  # from now on, the last two
    broker.publish_many("q", ["a", "b", "c"])
    for delivery in await provider.fetch(3):
        await provider.settle(delivery, ACCEPT)
    assert [s.body for s in broker.settlements("q")] == ["b", "c"]
    with pytest.raises(ConfigurationError, match="history"):
        MemoryBroker(history=-1)


def test_the_pytest_fixture_keeps_the_history(memory_broker: MemoryBroker) -> None:
    memory_broker.publish("q", "x")
    assert memory_broker.settlements("q") == []
