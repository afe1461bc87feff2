"""Forwarding to and from Redis streams (``Route(publish_to=...)``): a memory route
forwarding to Redis, a Redis route forwarding to RabbitMQ. Every id arrives; the source
is settled only once the target has the message, and a refused publish RETRIES the
source delivery (never an ACCEPT) until the target takes it."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from loafer_core import Manager, Route
from loafer_core.forward import Publish
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.middleware import Process
from loafer_core.outcome import Outcome, OutcomeKind
from loafer_core.provider import Delivery
from loafer_core.testing import eventually
from loafer_rabbit import RabbitPublisher
from loafer_redis import RedisPublisher, RedisRoute
from tests.loafer_rabbit.conftest import RabbitAdmin

from .conftest import RedisAdmin, unique

pytestmark = pytest.mark.redis

ID = "x-id"


def forward(content: Any, metadata: Any) -> Publish:
    return Publish(content, headers={ID: str(content["id"])})


class Outcomes:
    """Middleware counting the outcomes; ``enough`` once ``retries`` RETRYs were seen."""

    def __init__(self, retries: int = 0) -> None:
        self.counts: collections.Counter[OutcomeKind] = collections.Counter()
        self.retries = retries
        self.enough = asyncio.Event()

    async def __call__(self, delivery: Delivery, route: Route, call_next: Process) -> Outcome:
        outcome = await call_next(delivery)
        self.counts[outcome.kind] += 1
        if self.retries and self.counts[OutcomeKind.RETRY] >= self.retries:
            self.enough.set()
        return outcome


async def ids_in(admin: RedisAdmin, stream: str) -> list[str]:
    """The ``x-id`` fields of ``stream``'s entries."""
    return [fields[ID.encode()].decode() for _, fields in await admin.client.xrange(stream)]


async def test_a_memory_route_forwards_to_redis(admin: RedisAdmin) -> None:
    stream = await admin.stream(group=None)
    broker = MemoryBroker(history=1000)
    broker.declare("source")
    publisher = RedisPublisher(stream, url=admin.url)
    route = Route(
        MemoryProvider(broker, "source", wait=0.1),
        forward,
        publish_to=publisher,
        max_concurrency=50,
    )
    manager = Manager([route])
    async with manager:
        await manager.wait_started()
        assert publisher._client is not None  # opened by the manager, before any publish
        broker.publish_many("source", [{"id": i} for i in range(300)])
        await broker.wait_idle("source", timeout=30)
        # every source message was accepted only once Redis had its entry
        assert sorted(await ids_in(admin, stream), key=int) == [str(i) for i in range(300)]
    assert publisher._client is None  # closed after the drain
    assert {s.outcome.kind for s in broker.settlements("source")} == {OutcomeKind.ACCEPT}


async def test_a_refused_add_retries_the_source_until_redis_takes_it(
    admin: RedisAdmin,
) -> None:
    """The target key holds a string: XADD answers WRONGTYPE, the memory delivery is
    RETRIED (never ACCEPTED); once the key is gone, every id arrives, each once."""
    stream = await admin.stream(group=None)
    await admin.client.set(stream, "not a stream")
    broker = MemoryBroker(history=1000)
    broker.publish_many("source", [{"id": i} for i in range(20)])
    outcomes = Outcomes(retries=40)
    route = Route(
        MemoryProvider(broker, "source", wait=0.1),
        forward,
        publish_to=RedisPublisher(stream, url=admin.url),
        middleware=[outcomes],
        retry=None,
    )
    async with Manager([route]):
        async with asyncio.timeout(30):
            await outcomes.enough.wait()
        assert outcomes.counts[OutcomeKind.ACCEPT] == 0
        assert broker.depth("source") + broker.in_flight("source") == 20  # none settled away
        await admin.client.delete(stream)  # the next XADD makes the stream
        await broker.wait_idle("source", timeout=30)
    ids = await ids_in(admin, stream)
    assert sorted(ids, key=int) == [str(i) for i in range(20)]  # each once
    kinds = [s.outcome.kind for s in broker.settlements("source")]
    assert kinds.count(OutcomeKind.ACCEPT) == 20
    assert set(kinds) == {OutcomeKind.ACCEPT, OutcomeKind.RETRY}


@pytest.mark.rabbit
async def test_a_redis_route_forwards_to_rabbitmq(
    admin: RedisAdmin,
    rabbit_url: str,
) -> None:
    stream = await admin.stream()
    rabbit = RabbitAdmin(rabbit_url)
    await rabbit.open()
    try:
        queue = await rabbit.declare()
        async with RedisPublisher(stream, url=admin.url) as feed:
            assert await feed.publish_many({"id": i} for i in range(300)) == 300
        route = RedisRoute(
            stream,
            url=admin.url,
            handler=forward,
            publish_to=RabbitPublisher(rabbit_url, routing_key=queue),
            max_concurrency=50,
        )
        async with Manager([route]):
            await rabbit.wait_count(queue, 300, timeout=60)
            # acknowledged once forwarded: nothing stays pending in the group
            await eventually(
                lambda: _none_pending(admin, stream), timeout=30, what="no pending entry"
            )
        assert await admin.pending(stream) == []
        assert await admin.dead(stream) == []
        got = [m.headers[ID] for m in await rabbit.drain(queue)]
        assert sorted(got, key=int) == [str(i) for i in range(300)]  # type: ignore[arg-type]
    finally:
        await rabbit.cleanup()


async def _none_pending(admin: RedisAdmin, stream: str) -> bool:
    return await admin.pending(stream) == []


@pytest.mark.rabbit
async def test_a_redis_delivery_is_retried_while_rabbitmq_refuses_the_forward(
    admin: RedisAdmin,
    rabbit_url: str,
) -> None:
    """Publishing (mandatory) to a queue that does not exist yet is refused: the Redis
    entries are RETRIED (never acknowledged as handled), and arrive, each once, once the
    queue exists."""
    stream = await admin.stream()
    rabbit = RabbitAdmin(rabbit_url)
    await rabbit.open()
    missing = unique("loafer-fwd-later")
    try:
        for i in range(5):
            await admin.put(stream, b'{"id": %d}' % i)
        outcomes = Outcomes(retries=10)
        route = RedisRoute(
            stream,
            url=admin.url,
            handler=forward,
            publish_to=RabbitPublisher(rabbit_url, routing_key=missing),
            middleware=[outcomes],
            retry=None,
        )
        async with Manager([route]):
            async with asyncio.timeout(30):
                await outcomes.enough.wait()
            assert outcomes.counts[OutcomeKind.ACCEPT] == 0
            assert await admin.dead(stream) == []
            await rabbit.declare(missing)
            await rabbit.wait_count(missing, 5, timeout=30)
            await eventually(
                lambda: _none_pending(admin, stream), timeout=30, what="no pending entry"
            )
        assert outcomes.counts[OutcomeKind.ACCEPT] == 5
        assert await admin.dead(stream) == []
        got = sorted(m.headers[ID] for m in await rabbit.drain(missing))  # type: ignore[type-var]
        assert got == [str(i) for i in range(5)]  # each once
    finally:
        await rabbit.cleanup()
