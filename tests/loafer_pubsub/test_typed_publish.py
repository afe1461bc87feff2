"""PubSubPublisher publishes typed objects that reach their typed handlers on a Pub/Sub
route (dispatched on the ``type`` attribute)."""

from __future__ import annotations

import json

import pytest

from loafer_core import Manager
from loafer_core.errors import ConfigurationError
from loafer_core.typed import Typed
from loafer_pubsub import PubSubPublisher, PubSubRoute
from tests.typed_messages import OrderCreated, OrderNote, Received, samples

from .conftest import PROJECT, PubSubAdmin, attributes, data

pytestmark = pytest.mark.pubsub


async def test_typed_objects_published_to_pubsub_reach_their_typed_handlers(
    admin: PubSubAdmin, pubsub_emulator: str
) -> None:
    queue = await admin.queue()
    async with PubSubPublisher(queue, project=PROJECT, emulator_host=pubsub_emulator) as pub:
        for message in samples():
            await pub.publish(message)
    received = Received()
    route = PubSubRoute(
        queue, project=PROJECT, emulator_host=pubsub_emulator, handler=received.handlers
    )
    async with Manager([route]):
        await received.wait()
    received.check()
    assert received.metadata["created"]["headers"]["type"] == "OrderCreated"
    assert received.metadata["cancelled"]["headers"]["type"] == "order.cancelled"


async def test_publish_many_encodes_typed_objects_with_their_own_type_attribute(
    admin: PubSubAdmin, pubsub_emulator: str
) -> None:
    queue = await admin.queue(dead_letters=False)
    order = OrderCreated(order_id=1, total=2.0, customerName="x")
    note = Typed(OrderNote, {"order_id": 3, "text": "t"})
    async with PubSubPublisher(
        queue, project=PROJECT, emulator_host=pubsub_emulator, type_header="kind"
    ) as pub:
        sent = await pub.publish_many([order, {"plain": True}, note], headers={"tenant": "acme"})
        assert sent == 3
        # the caller's headers win over the type attribute, as on the other publishers
        await pub.publish(order, headers={"kind": "mine"}, ordering_key="o-1")
    got = sorted(
        (json.dumps(json.loads(data(m)), sort_keys=True), sorted(attributes(m).items()))
        for m in await admin.pull(queue)
    )
    order_body = json.dumps({"order_id": 1, "total": 2.0, "customerName": "x"}, sort_keys=True)
    assert got == sorted(
        [
            (order_body, [("kind", "OrderCreated"), ("tenant", "acme")]),
            (json.dumps({"plain": True}), [("tenant", "acme")]),
            (
                json.dumps({"order_id": 3, "text": "t"}, sort_keys=True),
                [("kind", "OrderNote"), ("tenant", "acme")],
            ),
            (order_body, [("kind", "mine")]),
        ]
    )


async def test_no_type_attribute_and_an_unserialisable_typed_value(
    admin: PubSubAdmin, pubsub_emulator: str
) -> None:
    queue = await admin.queue(dead_letters=False)
    async with PubSubPublisher(
        queue, project=PROJECT, emulator_host=pubsub_emulator, type_header=None
    ) as pub:
        await pub.publish(OrderCreated(order_id=1, total=2.0, customerName="x"))
        with pytest.raises(ConfigurationError, match="OrderNote"):
            await pub.publish(Typed(OrderNote, {"order_id": "not a number"}))
    [stored] = await admin.pull(queue)
    assert attributes(stored) == {}
    assert json.loads(data(stored))["customerName"] == "x"
