"""Forwarding to and from JetStream (``Route(publish_to=...)``): a memory route forwarding
to NATS, a NATS route forwarding to RabbitMQ. Every id arrives; the source is settled
only after the target's publish ack, and a refused publish RETRIES the source delivery."""

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
from loafer_nats import NATSPublisher, NATSRoute
from loafer_rabbit import RabbitPublisher
from tests.loafer_rabbit.conftest import RabbitAdmin

from .conftest import NatsAdmin, unique

pytestmark = pytest.mark.nats

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


async def ids_in(admin: NatsAdmin, stream: str) -> list[str]:
    """The ``x-id`` headers of ``stream``'s messages."""
    return [m.headers[ID] for m in await admin.stored(stream)]


async def test_a_memory_route_forwards_to_nats(admin: NatsAdmin) -> None:
    stream = await admin.stream(consumer=None)
    broker = MemoryBroker(history=1000)
    broker.declare("source")
    publisher = NATSPublisher(f"{stream}.in", url=admin.url)
    route = Route(
        MemoryProvider(broker, "source", wait=0.1),
        forward,
        publish_to=publisher,
        max_concurrency=50,
    )
    manager = Manager([route])
    async with manager:
        await manager.wait_started()
        assert publisher.max_payload is not None  # opened by the manager, before any publish
        broker.publish_many("source", [{"id": i} for i in range(300)])
        await broker.wait_idle("source", timeout=30)
    assert publisher.max_payload is None  # closed after the drain
    # every source message was accepted only after its publish ack: all are stored already
    assert sorted(await ids_in(admin, stream), key=int) == [str(i) for i in range(300)]
    assert {s.outcome.kind for s in broker.settlements("source")} == {OutcomeKind.ACCEPT}


async def test_a_subject_no_stream_captures_retries_the_source_until_one_does(
    admin: NatsAdmin,
) -> None:
    """JetStream answers "no responders" for a subject no stream captures: the publish
    fails, the memory delivery is RETRIED (never ACCEPTED); once a stream captures the
    subject, every id arrives."""
    stream = unique()
    broker = MemoryBroker(history=1000)
    broker.publish_many("source", [{"id": i} for i in range(20)])
    outcomes = Outcomes(retries=40)
    route = Route(
        MemoryProvider(broker, "source", wait=0.1),
        forward,
        publish_to=NATSPublisher(f"{stream}.in", url=admin.url, timeout=5),
        middleware=[outcomes],
        retry=None,
    )
    async with Manager([route]):
        async with asyncio.timeout(30):
            await outcomes.enough.wait()
        assert outcomes.counts[OutcomeKind.ACCEPT] == 0
        assert broker.depth("source") + broker.in_flight("source") == 20  # none settled away
        await admin.stream(stream, consumer=None)  # now a stream captures "<stream>.>"
        await broker.wait_idle("source", timeout=30)
    ids = await ids_in(admin, stream)
    assert sorted(ids, key=int) == [str(i) for i in range(20)]  # each once
    kinds = [s.outcome.kind for s in broker.settlements("source")]
    assert kinds.count(OutcomeKind.ACCEPT) == 20
    assert set(kinds) == {OutcomeKind.ACCEPT, OutcomeKind.RETRY}


@pytest.mark.rabbit
async def test_a_nats_route_forwards_to_rabbitmq(
    admin: NatsAdmin,
    rabbit_url: str,
) -> None:
    stream = await admin.stream()
    rabbit = RabbitAdmin(rabbit_url)
    await rabbit.open()
    try:
        queue = await rabbit.declare()
        async with NATSPublisher(f"{stream}.in", url=admin.url) as feed:
            assert await feed.publish_many({"id": i} for i in range(300)) == 300
        route = NATSRoute(
            stream,
            url=admin.url,
            consumer="work",
            handler=forward,
            publish_to=RabbitPublisher(rabbit_url, routing_key=queue),
            max_concurrency=50,
        )
        async with Manager([route]):
            await rabbit.wait_count(queue, 300, timeout=60)
            # acked once forwarded: the work-queue stream empties
            await admin.wait_consumer(stream, num_pending=0, num_ack_pending=0, timeout=30)
        assert await admin.messages(stream) == 0
        got = [m.headers[ID] for m in await rabbit.drain(queue)]
        assert sorted(got, key=int) == [str(i) for i in range(300)]  # type: ignore[arg-type]
    finally:
        await rabbit.cleanup()


@pytest.mark.rabbit
async def test_a_nats_delivery_is_retried_while_rabbitmq_refuses_the_forward(
    admin: NatsAdmin,
    rabbit_url: str,
) -> None:
    """Publishing (mandatory) to a queue that does not exist yet is refused: the NATS
    message is nak'ed (RETRY), stays in the stream, and arrives once the queue exists."""
    stream = await admin.stream()
    rabbit = RabbitAdmin(rabbit_url)
    await rabbit.open()
    missing = unique("loafer-fwd-later")
    try:
        await admin.put(stream, b'{"id": 7}')
        outcomes = Outcomes(retries=3)
        route = NATSRoute(
            stream,
            url=admin.url,
            consumer="work",
            handler=forward,
            publish_to=RabbitPublisher(rabbit_url, routing_key=missing),
            middleware=[outcomes],
            retry=None,
        )
        async with Manager([route]):
            async with asyncio.timeout(30):
                await outcomes.enough.wait()
            assert outcomes.counts[OutcomeKind.ACCEPT] == 0
            assert await admin.messages(stream) == 1  # not acked
            await rabbit.declare(missing)
            await rabbit.wait_count(missing, 1, timeout=30)
            await admin.wait_consumer(stream, num_pending=0, num_ack_pending=0, timeout=30)
        assert (await admin.consumer(stream)).num_redelivered == 0  # acked, nothing left
        assert await admin.messages(stream) == 0
        [message] = await rabbit.drain(missing)
        assert message.headers == {ID: "7"}
    finally:
        await rabbit.cleanup()
