"""The dispatcher wakes one idle worker at a time: a fast handler's batch costs no
park-and-wake per delivery, and slow handlers still ramp up to full concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from loafer_core import Manager, Route
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.outcome import Outcome
from loafer_core.provider import Capabilities, Delivery


class Batches:
    """A provider whose fetch answers after a round trip with as many as asked (like a
    Redis ``XREADGROUP`` or an SQS receive), and whose settle never suspends."""

    capabilities = Capabilities()

    def __init__(self, total: int) -> None:
        self.left = total
        self.total = total
        self.settled = 0
        self.done = asyncio.Event()

    async def start(self, capacity: int) -> None:
        return None

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        await asyncio.sleep(0)  # the round trip
        n = min(max_messages, self.left)
        self.left -= n
        return [Delivery(raw={"i": i}, body={"i": i}) for i in range(n)]

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        self.settled += 1
        if self.settled == self.total:
            self.done.set()

    async def close(self) -> None:
        return None


async def test_a_fast_handlers_batch_costs_no_wake_per_delivery() -> None:
    total = 5000
    provider = Batches(total)
    loop = asyncio.get_running_loop()
    futures = 0
    create_future = loop.create_future

    def counting() -> asyncio.Future[Any]:
        nonlocal futures
        futures += 1
        return create_future()

    async def handler(content: Any, metadata: Any) -> None:
        return None  # never waits: the next delivery needs no other worker

    route = Route(provider, handler, max_concurrency=100, retry=None)
    loop.create_future = counting  # type: ignore[method-assign]
    try:
        async with Manager([route]):
            async with asyncio.timeout(10):
                await provider.done.wait()
    finally:
        del loop.create_future
    # an idle worker parks on a future and is woken through it: one wake in flight at a
    # time, where a wake per delivery parked and woke a worker for nearly every one
    assert futures < total // 5, f"{futures} futures for {total} deliveries"


async def test_slow_handlers_still_reach_full_concurrency(broker: MemoryBroker) -> None:
    limit = 50
    for i in range(limit * 2):
        broker.publish("q", {"i": i})
    running = 0
    full = asyncio.Event()
    gate = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> None:
        nonlocal running
        running += 1
        if running == limit:
            full.set()
        await gate.wait()
        running -= 1

    route = Route(MemoryProvider(broker, "q"), handler, max_concurrency=limit)
    async with Manager([route]):
        async with asyncio.timeout(10):
            await full.wait()
        assert running == limit
        gate.set()
        await broker.wait_idle("q", timeout=10)
