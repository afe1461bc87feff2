"""NATSPublisher publishes typed objects that reach their typed handlers on a NATS route
(dispatched on the ``type`` header)."""

from __future__ import annotations

import json

import pytest

from loafer_core import Manager
from loafer_core.errors import ConfigurationError
from loafer_core.typed import Typed
from loafer_nats import NATSPublisher, NATSRoute
from tests.typed_messages import OrderCreated, OrderNote, Received, samples

from .conftest import NatsAdmin

pytestmark = pytest.mark.nats


async def test_typed_objects_published_to_nats_reach_their_typed_handlers(
    admin: NatsAdmin,
) -> None:
    stream = await admin.stream()
    async with NATSPublisher(f"{stream}.in", url=admin.url) as publisher:
        for message in samples():
            await publisher.publish(message)
    received = Received()
    route = NATSRoute(stream, url=admin.url, consumer="work", handler=received.handlers)
    async with Manager([route]):
        await received.wait()
    received.check()
    assert received.metadata["created"]["headers"]["type"] == "OrderCreated"
    assert received.metadata["cancelled"]["headers"]["type"] == "order.cancelled"


async def test_publish_many_encodes_typed_objects_with_their_own_type_header(
    admin: NatsAdmin,
) -> None:
    stream = await admin.stream(consumer=None)
    order = OrderCreated(order_id=1, total=2.0, customerName="x")
    note = Typed(OrderNote, {"order_id": 3, "text": "t"})
    async with NATSPublisher(f"{stream}.in", url=admin.url, type_header="kind") as publisher:
        sent = await publisher.publish_many(
            [order, {"plain": True}, note], headers={"tenant": "acme"}
        )
        assert sent == 3
        # the caller's headers win over the type header, as on the other publishers
        await publisher.publish(order, headers={"kind": "mine"})
    typed, plain, noted, overridden = await admin.stored(stream)
    assert json.loads(typed.data) == {"order_id": 1, "total": 2.0, "customerName": "x"}
    assert typed.headers == {"kind": "OrderCreated", "tenant": "acme"}
    assert json.loads(plain.data) == {"plain": True}
    assert plain.headers == {"tenant": "acme"}
    assert json.loads(noted.data) == {"order_id": 3, "text": "t"}
    assert noted.headers == {"kind": "OrderNote", "tenant": "acme"}
    assert overridden.headers == {"kind": "mine"}


async def test_no_type_header_and_an_unserialisable_typed_value(admin: NatsAdmin) -> None:
    stream = await admin.stream(consumer=None)
    async with NATSPublisher(f"{stream}.in", url=admin.url, type_header=None) as publisher:
        await publisher.publish(OrderCreated(order_id=1, total=2.0, customerName="x"))
        with pytest.raises(ConfigurationError, match="OrderNote"):
            await publisher.publish(Typed(OrderNote, {"order_id": "not a number"}))
    [stored] = await admin.stored(stream)
    assert not stored.headers
    assert json.loads(stored.data)["customerName"] == "x"
