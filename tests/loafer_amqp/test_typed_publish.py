"""AMQPPublisher publishes typed objects that reach their typed handlers on an AMQP 1.0
route (dispatched on the ``type`` application property)."""

from __future__ import annotations

import pytest

from loafer_amqp import AMQPPublisher, AMQPRoute
from loafer_core import Manager
from tests.typed_messages import Received, samples

pytestmark = pytest.mark.amqp


async def test_typed_objects_published_over_amqp_1_0_reach_their_typed_handlers(
    amqp_url: str, queue: str
) -> None:
    address = f"/amq/queue/{queue}"
    messages = samples()
    async with AMQPPublisher(amqp_url, address) as publisher:
        await publisher.publish(messages[0])
        await publisher.publish_many(messages[1:])
    received = Received()
    async with Manager([AMQPRoute(address, url=amqp_url, handler=received.handlers)]):
        await received.wait()
    received.check()
    metadata = received.metadata["created"]
    assert metadata["headers"] == {"type": "OrderCreated"}
    assert metadata["content_type"] == "application/json"
