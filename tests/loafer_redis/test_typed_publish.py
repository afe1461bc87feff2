"""RedisPublisher publishes typed objects that reach their typed handlers on a Redis route
(dispatched on the ``type`` header field)."""

from __future__ import annotations

import json

import pytest

from loafer_core import Manager
from loafer_core.errors import ConfigurationError
from loafer_core.typed import Typed
from loafer_redis import RedisPublisher, RedisRoute
from tests.typed_messages import OrderCreated, OrderNote, Received, samples

from .conftest import RedisAdmin

pytestmark = pytest.mark.redis


async def entries(admin: RedisAdmin, stream: str) -> list[dict[str, str]]:
    """Every entry's fields, decoded, in the stream's order."""
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in await admin.client.xrange(stream)
    ]


async def test_typed_objects_published_to_redis_reach_their_typed_handlers(
    admin: RedisAdmin,
) -> None:
    stream = await admin.stream()
    async with RedisPublisher(stream, url=admin.url) as publisher:
        for message in samples():
            await publisher.publish(message)
        # the same through a batch, to a second stream
        other = await admin.stream()
        assert await publisher.publish_many(samples(), stream=other) == 4
    for name in (stream, other):
        received = Received()
        async with Manager([RedisRoute(name, url=admin.url, handler=received.handlers)]):
            await received.wait()
        received.check()
        assert received.metadata["created"]["headers"] == {"type": "OrderCreated"}
        assert received.metadata["cancelled"]["headers"] == {"type": "order.cancelled"}


async def test_publish_many_encodes_typed_objects_with_their_own_type_header(
    admin: RedisAdmin,
) -> None:
    stream = await admin.stream(group=None)
    order = OrderCreated(order_id=1, total=2.0, customerName="x")
    note = Typed(OrderNote, {"order_id": 3, "text": "t"})
    async with RedisPublisher(stream, url=admin.url, type_header="kind") as publisher:
        sent = await publisher.publish_many(
            [order, {"plain": True}, b"raw", note], headers={"tenant": "acme"}
        )
        assert sent == 4
        # the caller's headers win over the type header, as on the other publishers
        await publisher.publish(order, headers={"kind": "mine"})
    typed, plain, raw, noted, overridden = await entries(admin, stream)
    assert json.loads(typed.pop("body")) == {"order_id": 1, "total": 2.0, "customerName": "x"}
    assert typed == {"kind": "OrderCreated", "tenant": "acme"}
    assert plain == {"body": '{"plain": true}', "tenant": "acme"}
    assert raw == {"body": "raw", "tenant": "acme"}
    assert json.loads(noted.pop("body")) == {"order_id": 3, "text": "t"}
    assert noted == {"kind": "OrderNote", "tenant": "acme"}
    overridden.pop("body")
    assert overridden == {"kind": "mine"}


async def test_no_type_header_and_an_unserialisable_typed_value(admin: RedisAdmin) -> None:
    stream = await admin.stream(group=None)
    async with RedisPublisher(stream, url=admin.url, type_header=None) as publisher:
        await publisher.publish(OrderCreated(order_id=1, total=2.0, customerName="x"))
        with pytest.raises(ConfigurationError, match="OrderNote"):
            await publisher.publish(Typed(OrderNote, {"order_id": "not a number"}))
        with pytest.raises(ConfigurationError, match="OrderNote"):
            await publisher.publish_many([b"{}", Typed(OrderNote, {"order_id": "x"})])
    [stored] = await entries(admin, stream)  # nothing of the refused batch was added
    assert set(stored) == {"body"}
    assert json.loads(stored["body"])["customerName"] == "x"


def test_a_type_header_naming_the_body_field_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="body field"):
        RedisPublisher("orders", type_header="body")
    with pytest.raises(ConfigurationError, match="type_header"):
        RedisPublisher("orders", type_header="")
