"""KafkaPublisher publishes typed objects that reach their typed handlers on a Kafka
route (dispatched on the ``type`` header)."""

from __future__ import annotations

import json

import pytest

from loafer_core import Manager
from loafer_core.typed import Typed
from loafer_kafka import KafkaPublisher, KafkaRoute
from tests.typed_messages import OrderCreated, OrderNote, Received, samples

from .conftest import KafkaAdmin

pytestmark = pytest.mark.kafka


async def test_typed_objects_published_to_kafka_reach_their_typed_handlers(
    admin: KafkaAdmin, kafka_url: str
) -> None:
    topic = await admin.topic()
    async with KafkaPublisher(topic, url=kafka_url, idempotent=False) as pub:
        for message in samples():
            await pub.publish(message)
    received = Received()
    route = KafkaRoute(topic, url=kafka_url, dead_letter_topic=None, handler=received.handlers)
    async with Manager([route]):
        await received.wait()
    received.check()
    assert received.metadata["created"]["headers"]["type"] == "OrderCreated"
    assert received.metadata["cancelled"]["headers"]["type"] == "order.cancelled"


async def test_publish_many_encodes_typed_objects_with_their_own_type_header(
    admin: KafkaAdmin, kafka_url: str
) -> None:
    topic = await admin.topic(partitions=1)
    order = OrderCreated(order_id=1, total=2.0, customerName="x")
    note = Typed(OrderNote, {"order_id": 3, "text": "t"})
    async with KafkaPublisher(topic, url=kafka_url, idempotent=False, type_header="kind") as pub:
        assert await pub.publish_many([order, {"plain": True}, note], headers={"t": "a"}) == 3
        await pub.publish(order, headers={"kind": "mine"}, key="o-1")
    got = [
        (json.loads(r.value), sorted((k, v.decode()) for k, v in r.headers), r.key)
        for r in await admin.read(topic)
    ]
    order_body = {"order_id": 1, "total": 2.0, "customerName": "x"}
    assert got == [
        (order_body, [("kind", "OrderCreated"), ("t", "a")], None),
        ({"plain": True}, [("t", "a")], None),
        ({"order_id": 3, "text": "t"}, [("kind", "OrderNote"), ("t", "a")], None),
        (order_body, [("kind", "mine")], b"o-1"),
    ]
