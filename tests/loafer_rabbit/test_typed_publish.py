"""RabbitPublisher publishes typed objects that reach their typed handlers on a
RabbitMQ route (dispatched on the ``type`` header)."""

from __future__ import annotations

import json

import pytest

from loafer_core import Manager
from loafer_rabbit import RabbitPublisher, RabbitRoute
from tests.loafer_rabbit.conftest import RabbitAdmin
from tests.typed_messages import OrderCreated, Received, samples

pytestmark = pytest.mark.rabbit


async def test_typed_objects_published_to_rabbitmq_reach_their_typed_handlers(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    name = await admin.declare()
    async with RabbitPublisher(rabbit_url, routing_key=name) as publisher:
        for message in samples():
            await publisher.publish(message)
    received = Received()
    async with Manager([RabbitRoute(name, url=rabbit_url, handler=received.handlers)]):
        await received.wait()
    received.check()
    metadata = received.metadata["created"]
    assert metadata["headers"]["type"] == "OrderCreated"
    assert metadata["content_type"] == "application/json"


async def test_publish_many_and_message_encode_typed_objects_too(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    name = await admin.declare()
    order = OrderCreated(order_id=1, total=2.0, customerName="x")
    async with RabbitPublisher(rabbit_url, routing_key=name, type_header="kind") as publisher:
        assert await publisher.publish_many([order, {"plain": True}]) == 2
    typed, plain = await admin.drain(name)
    assert json.loads(typed.body) == {"order_id": 1, "total": 2.0, "customerName": "x"}
    assert typed.headers == {"kind": "OrderCreated"}
    assert typed.content_type == "application/json"
    assert json.loads(plain.body) == {"plain": True} and plain.headers == {}
