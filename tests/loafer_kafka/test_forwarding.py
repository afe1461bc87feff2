"""Forwarding to and from Kafka (``Route(publish_to=...)``): a memory route forwarding to
a topic, a Kafka route forwarding to NATS JetStream. Every id arrives; the source is
settled only after the target acknowledged."""

from __future__ import annotations

from typing import Any

import pytest

from loafer_core import Manager, Route
from loafer_core.forward import Publish
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.outcome import OutcomeKind
from loafer_core.testing import eventually
from loafer_kafka import KafkaPublisher, KafkaRoute
from loafer_nats import NATSPublisher
from tests.loafer_nats.conftest import NatsAdmin

from .conftest import KafkaAdmin, lag

pytestmark = pytest.mark.kafka

ID = "x-id"


def forward(content: Any, metadata: Any) -> Publish:
    return Publish(content, headers={ID: str(content["id"])})


async def test_a_memory_route_forwards_to_kafka(admin: KafkaAdmin, kafka_url: str) -> None:
    topic = await admin.topic()
    broker = MemoryBroker(history=1000)
    broker.declare("source")
    route = Route(
        MemoryProvider(broker, "source", wait=0.1),
        forward,
        publish_to=KafkaPublisher(topic, url=kafka_url, idempotent=False),
        max_concurrency=50,
    )
    async with Manager([route]) as manager:
        await manager.wait_started()
        broker.publish_many("source", [{"id": i} for i in range(300)])
        await broker.wait_idle("source", timeout=30)
    # every source message was accepted only after its record was acknowledged
    ids = [dict(r.headers)[ID].decode() for r in await admin.read(topic)]
    assert sorted(ids, key=int) == [str(i) for i in range(300)]
    assert {s.outcome.kind for s in broker.settlements("source")} == {OutcomeKind.ACCEPT}


@pytest.mark.nats
async def test_a_kafka_route_forwards_to_nats(
    admin: KafkaAdmin, kafka_url: str, nats_url: str
) -> None:
    nats = NatsAdmin(nats_url)
    await nats.open()
    try:
        stream = await nats.stream(consumer=None)
        topic = await admin.topic()
        async with KafkaPublisher(topic, url=kafka_url, idempotent=False) as feed:
            assert await feed.publish_many({"id": i} for i in range(300)) == 300
        route = KafkaRoute(
            topic,
            url=kafka_url,
            dead_letter_topic=None,
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
        assert await lag(kafka_url, topic, f"loafer-{topic}") == 0  # committed once forwarded
    finally:
        await nats.cleanup()
