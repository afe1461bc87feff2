"""Forwarding to and from Pub/Sub (``Route(publish_to=...)``): a memory route forwarding
to a topic, a Pub/Sub route forwarding to NATS JetStream. Every id arrives; the source
is settled only after the target confirmed, and a refused publish RETRIES the source."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

from loafer_core import Manager, Route
from loafer_core.context import RouteContext
from loafer_core.forward import Publish
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.middleware import Process
from loafer_core.outcome import Outcome, OutcomeKind
from loafer_core.provider import Delivery
from loafer_core.testing import eventually
from loafer_nats import NATSPublisher
from loafer_pubsub import PubSubPublisher, PubSubRoute
from tests.loafer_nats.conftest import NatsAdmin

from .conftest import PROJECT, PubSubAdmin, attributes, unique

pytestmark = pytest.mark.pubsub

ID = "x-id"


def forward(content: Any, metadata: Any) -> Publish:
    return Publish(content, headers={ID: str(content["id"])})


class Outcomes:
    """Middleware counting the outcomes; ``enough`` once ``retries`` RETRYs were seen."""

    def __init__(self, retries: int = 0) -> None:
        self.counts: collections.Counter[OutcomeKind] = collections.Counter()
        self.retries = retries
        self.enough = asyncio.Event()

    async def __call__(
        self, delivery: Delivery, route: RouteContext, call_next: Process
    ) -> Outcome:
        outcome = await call_next(delivery)
        self.counts[outcome.kind] += 1
        if self.retries and self.counts[OutcomeKind.RETRY] >= self.retries:
            self.enough.set()
        return outcome


async def test_a_memory_route_forwards_to_pubsub(admin: PubSubAdmin, pubsub_emulator: str) -> None:
    queue = await admin.queue(dead_letters=False)
    broker = MemoryBroker(history=1000)
    broker.declare("source")
    route = Route(
        MemoryProvider(broker, "source", wait=0.1),
        forward,
        publish_to=PubSubPublisher(queue, project=PROJECT, emulator_host=pubsub_emulator),
        max_concurrency=50,
    )
    async with Manager([route]) as manager:
        await manager.wait_started()
        broker.publish_many("source", [{"id": i} for i in range(300)])
        await broker.wait_idle("source", timeout=30)
    # every source message was accepted only after its message id came back
    ids = [attributes(m)[ID] for m in await admin.pull(queue)]
    assert sorted(ids, key=int) == [str(i) for i in range(300)]
    assert {s.outcome.kind for s in broker.settlements("source")} == {OutcomeKind.ACCEPT}


async def test_a_missing_topic_retries_the_source_until_it_exists(
    admin: PubSubAdmin, pubsub_emulator: str
) -> None:
    topic = unique()
    broker = MemoryBroker(history=1000)
    broker.publish_many("source", [{"id": i} for i in range(20)])
    outcomes = Outcomes(retries=40)

    def route() -> Route:
        return Route(
            MemoryProvider(broker, "source", wait=0.1),
            forward,
            publish_to=PubSubPublisher(topic, project=PROJECT, emulator_host=pubsub_emulator),
            middleware=[outcomes],
            retry=None,
        )

    async with Manager([route()]):
        async with asyncio.timeout(30):
            await outcomes.enough.wait()
        assert outcomes.counts[OutcomeKind.ACCEPT] == 0
        assert broker.depth("source") + broker.in_flight("source") == 20
    # Pub/Sub drops what reaches a topic before its subscription exists, so the topic and
    # its subscription are made while the route is stopped; the next run forwards them.
    assert broker.depth("source") == 20
    await admin.queue(topic, dead_letters=False)
    async with Manager([route()]):
        await broker.wait_idle("source", timeout=30)
    ids = [attributes(m)[ID] for m in await admin.pull(topic)]
    assert sorted(ids, key=int) == [str(i) for i in range(20)]  # each once
    kinds = [s.outcome.kind for s in broker.settlements("source")]
    assert kinds.count(OutcomeKind.ACCEPT) == 20


@pytest.mark.nats
async def test_a_pubsub_route_forwards_to_nats(
    admin: PubSubAdmin, pubsub_emulator: str, nats_url: str
) -> None:
    nats = NatsAdmin(nats_url)
    await nats.open()
    try:
        stream = await nats.stream(consumer=None)
        queue = await admin.queue(dead_letters=False)
        async with PubSubPublisher(queue, project=PROJECT, emulator_host=pubsub_emulator) as feed:
            assert await feed.publish_many({"id": i} for i in range(300)) == 300
        route = PubSubRoute(
            queue,
            project=PROJECT,
            emulator_host=pubsub_emulator,
            handler=forward,
            publish_to=NATSPublisher(f"{stream}.in", url=nats_url),
            max_concurrency=50,
        )
        async with Manager([route]):

            async def stored() -> bool:
                return await nats.messages(stream) >= 300

            await eventually(stored, timeout=60, what="300 messages in the stream")
        got = [m.headers[ID] for m in await nats.stored(stream)]
        assert sorted(got, key=int) == [str(i) for i in range(300)]
        assert await admin.pull(queue) == []  # acknowledged once forwarded
    finally:
        await nats.cleanup()
