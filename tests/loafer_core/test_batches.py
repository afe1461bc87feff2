"""Batch handlers: filling by size and by time, an outcome per message, errors of the
whole batch, typed batches, concurrency and leases, a cut-short message leaving."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import pytest

from loafer_core import REJECT, RETRY, ConfigurationError, Manager, Route
from loafer_core.batches import Batch
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.outcome import OutcomeKind
from loafer_core.translator import JSONTranslator

pytestmark = pytest.mark.memory


async def run_route(broker: MemoryBroker, route: Route, queue: str = "q") -> None:
    async with Manager([route]):
        await broker.wait_idle(queue, timeout=20)


async def test_batches_fill_to_max_size_and_every_message_is_accepted() -> None:
    broker = MemoryBroker(history=1000)
    broker.publish_many("q", [f"m{i}" for i in range(250)])
    sizes: list[int] = []
    seen: list[str] = []

    async def save(contents: list[str]) -> None:
        sizes.append(len(contents))
        seen.extend(contents)

    batch = Batch(save, max_size=50, max_wait=5)
    await run_route(broker, Route(MemoryProvider(broker, "q"), batch, max_concurrency=100))
    assert sorted(seen) == sorted(f"m{i}" for i in range(250))
    assert sizes == [50] * 5  # full batches: none waited for max_wait
    outcomes = [s.outcome.kind for s in broker.settlements("q")]
    assert outcomes == [OutcomeKind.ACCEPT] * 250


async def test_a_batch_that_does_not_fill_is_sent_after_max_wait() -> None:
    broker = MemoryBroker()
    broker.publish_many("q", ["a", "b", "c"])
    sent: list[tuple[float, list[str]]] = []
    began = time.monotonic()

    async def save(contents: list[str]) -> None:
        sent.append((time.monotonic() - began, contents))

    batch = Batch(save, max_size=100, max_wait=0.3)
    await run_route(broker, Route(MemoryProvider(broker, "q"), batch, max_concurrency=100))
    [(after, contents)] = sent
    assert sorted(contents) == ["a", "b", "c"]
    assert 0.25 <= after < 2.0


async def test_one_outcome_per_message_from_a_list_or_a_mapping() -> None:
    broker = MemoryBroker(history=100)
    broker.publish_many("q", [f"m{i}" for i in range(4)])
    attempts: dict[str, int] = {}

    async def judge(contents: list[str], metadata: list[Mapping[str, Any]]) -> Any:
        assert len(metadata) == len(contents)
        assert all("message_id" in m for m in metadata)
        for c in contents:
            attempts[c] = attempts.get(c, 0) + 1
        if len(contents) == 4:
            return [True, REJECT("bad m1"), RETRY(), None]  # in order
        return {0: True}  # the retried m2, on its own

    batch = Batch(judge, max_size=4, max_wait=0.2)
    await run_route(broker, Route(MemoryProvider(broker, "q"), batch, max_concurrency=4))
    assert [m.body for m in broker.dead_letters("q")] == ["m1"]
    assert attempts == {"m0": 1, "m1": 1, "m2": 2, "m3": 1}


async def test_an_error_of_the_batch_is_an_error_of_each_message() -> None:
    broker = MemoryBroker(history=100)
    broker.publish_many("q", ["a", "b", "c"])
    calls: list[list[str]] = []
    errors: list[str] = []

    async def flaky(contents: list[str]) -> None:
        calls.append(sorted(contents))
        if len(calls) == 1:
            raise ConnectionError("database gone")

    async def on_error(exc_type: Any, exc: BaseException, message: Any) -> bool:
        errors.append(f"{type(exc).__name__}: {message}")
        return False  # RETRY

    batch = Batch(flaky, max_size=3, max_wait=0.2)
    route = Route(
        MemoryProvider(broker, "q"), batch, max_concurrency=3, error_handler=on_error, retry=None
    )
    await run_route(broker, route)
    assert sorted(errors) == [f"ConnectionError: {m}" for m in "abc"]
    assert calls[0] == ["a", "b", "c"]
    assert sorted(c for call in calls[1:] for c in call) == ["a", "b", "c"]  # each once more


async def test_a_wrong_result_is_an_error_of_each_message() -> None:
    broker = MemoryBroker(history=100)
    broker.publish_many("q", ["a", "b"])
    errors: list[BaseException] = []

    async def short(contents: list[str]) -> Any:
        return [True]  # one result for two messages

    async def on_error(exc_type: Any, exc: BaseException, message: Any) -> Any:
        errors.append(exc)
        return REJECT(str(exc))

    batch = Batch(short, max_size=2, max_wait=0.2)
    route = Route(MemoryProvider(broker, "q"), batch, max_concurrency=2, error_handler=on_error)
    await run_route(broker, route)
    assert len(errors) == 2 and "1 results for a batch of 2" in str(errors[0])
    assert len(broker.dead_letters("q")) == 2


@dataclasses.dataclass
class Order:
    id: int
    amount: float


async def test_a_typed_batch_validates_each_and_an_invalid_one_fails_alone() -> None:
    broker = MemoryBroker(history=100)
    for body in (b'{"id": 1, "amount": 2.5}', b'{"id": "x"}', b'{"id": 3, "amount": 1}'):
        broker.publish("q", body)
    got: list[list[Order]] = []
    errors: list[str] = []

    async def save(orders: list[Order]) -> None:
        got.append(orders)

    async def on_error(exc_type: Any, exc: BaseException, message: Any) -> Any:
        errors.append(type(exc).__name__)
        return REJECT("invalid")

    batch = Batch(save, max_size=3, max_wait=0.3)
    route = Route(
        MemoryProvider(broker, "q"),
        batch,
        translator=JSONTranslator(),
        max_concurrency=3,
        error_handler=on_error,
    )
    await run_route(broker, route)
    assert errors == ["InvalidMessage"]
    [orders] = got
    assert sorted(o.id for o in orders) == [1, 3] and all(isinstance(o, Order) for o in orders)


async def test_a_sync_batch_function_runs_in_a_thread() -> None:
    broker = MemoryBroker()
    broker.publish_many("q", ["a", "b"])
    loops: list[bool] = []

    def save(contents: list[str]) -> None:
        try:
            asyncio.get_running_loop()
            loops.append(True)
        except RuntimeError:
            loops.append(False)

    await run_route(
        broker, Route(MemoryProvider(broker, "q"), Batch(save, max_size=2), max_concurrency=2)
    )
    assert loops == [False]


async def test_batches_run_concurrently_and_leases_are_extended() -> None:
    broker = MemoryBroker(history=100)
    broker.declare("q", lease=0.3)  # shorter than a batch's run: extended meanwhile
    broker.publish_many("q", [f"m{i}" for i in range(20)])
    running = 0
    most = 0
    seen: list[str] = []

    async def slow(contents: list[str]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.6)
        seen.extend(contents)
        running -= 1

    batch = Batch(slow, max_size=5, max_wait=0.1)
    await run_route(broker, Route(MemoryProvider(broker, "q"), batch, max_concurrency=20))
    assert sorted(seen) == sorted(f"m{i}" for i in range(20))  # each once: no lapse
    assert most >= 2


async def test_a_message_cut_short_while_waiting_leaves_the_batch() -> None:
    broker = MemoryBroker(history=100)
    broker.publish("q", "alone")
    sent: list[list[str]] = []

    async def save(contents: list[str]) -> None:
        sent.append(contents)

    # the message waits 5 s for a batch, its handler_timeout is 0.2 s: it leaves unsent,
    # is retried, and so on; no batch holds a message whose caller gave up
    batch = Batch(save, max_size=10, max_wait=5)
    route = Route(
        MemoryProvider(broker, "q"), batch, max_concurrency=10, handler_timeout=0.2, retry=None
    )
    async with Manager([route]):
        await asyncio.sleep(0.7)
    assert sent == []
    assert batch._waiters == []


def test_a_batch_needs_max_concurrency_for_a_whole_batch() -> None:
    with pytest.raises(ConfigurationError, match=r"needs max_concurrency >= 50"):
        Route(MemoryProvider(MemoryBroker(), "q"), Batch(print, max_size=50), max_concurrency=10)
    with pytest.raises(ConfigurationError, match=r"Batch\(max_size=...\)"):
        Batch(print, max_size=0)
    with pytest.raises(ConfigurationError, match=r"Batch\(max_wait=...\)"):
        Batch(print, max_wait=-1)
    with pytest.raises(ConfigurationError, match="expected a function taking a list"):
        Batch("module:function")  # type: ignore[arg-type]
