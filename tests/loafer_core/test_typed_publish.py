"""Publishing typed objects: loafer_core.typed.encode, on(SomeType) in Handlers, and the
round trip through the memory broker's publisher to typed handlers."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import pytest

from loafer_core import ConfigurationError, Handlers, JSONTranslator, Manager, Route, header, on
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.typed import Typed, encode, message_type
from tests.typed_messages import (
    SHIPPED_AT,
    OrderCancelled,
    OrderCreated,
    OrderNote,
    OrderShipped,
    Received,
    samples,
)

pytestmark = pytest.mark.memory


def test_encode_gives_json_and_the_type_header_for_each_kind() -> None:
    created, shipped, note, cancelled = (encode(obj) for obj in samples())
    assert created is not None and shipped is not None
    assert note is not None and cancelled is not None
    assert json.loads(created.body) == {"order_id": 1, "total": 9.5, "customerName": "ada"}
    assert created.headers == {"type": "OrderCreated"}
    assert created.content_type == "application/json"
    assert json.loads(shipped.body) == {"order_id": 2, "shipped_at": "2026-12-01T10:30:00Z"}
    assert shipped.headers == {"type": "OrderShipped"}
    assert json.loads(note.body) == {"order_id": 3, "text": "fragile"}
    assert note.headers == {"type": "OrderNote"}
    assert json.loads(cancelled.body) == {"order_id": 4, "reason": "changed mind"}
    assert cancelled.headers == {"type": "order.cancelled"}


def test_encode_leaves_plain_bodies_to_the_publisher_and_names_its_header() -> None:
    for body in (b"x", "x", {"a": 1}, [1], 3, 2.5, True, None):
        assert encode(body) is None
    assert encode(OrderShipped, header="type") is None  # the class itself is no message
    encoded = encode(OrderCancelled(order_id=1, reason="r"), header="kind")
    assert encoded is not None and encoded.headers == {"kind": "order.cancelled"}
    encoded = encode(OrderCancelled(order_id=1, reason="r"), header=None)
    assert encoded is not None and encoded.headers == {}


def test_a_typed_value_is_checked_by_its_type_and_a_bad_one_says_why() -> None:
    encoded = encode(Typed(OrderCreated, {"order_id": "5", "total": 1, "customerName": "b"}))
    assert encoded is not None
    assert json.loads(encoded.body) == {"order_id": 5, "total": 1.0, "customerName": "b"}
    with pytest.raises(ConfigurationError, match=r"cannot publish dict as OrderNote"):
        encode(Typed(OrderNote, {"order_id": "not a number", "text": "t"}))

    @dataclasses.dataclass
    class Opaque:
        thing: object

    with pytest.raises(ConfigurationError, match="cannot publish Opaque as Opaque"):
        encode(Opaque(object()))
    with pytest.raises(ConfigurationError, match="kind must be a class"):
        encode(Typed("OrderNote", {}))  # type: ignore[arg-type]


def test_on_a_class_matches_the_name_publishers_give_it() -> None:
    assert message_type(OrderCreated) == "OrderCreated"
    assert message_type(OrderCancelled) == "order.cancelled"
    handlers = Handlers([on(OrderCreated, lambda c, m: True)], discriminator=header("type"))
    assert repr(handlers) == "<Handlers ['OrderCreated']>"
    with pytest.raises(ConfigurationError, match=r"two handlers for key 'order\.cancelled'"):
        Handlers(
            [on(OrderCancelled, print), on("order.cancelled", print)],
            discriminator=header("type"),
        )


async def test_typed_objects_published_to_memory_reach_their_typed_handlers() -> None:
    broker = MemoryBroker()
    provider = MemoryProvider(broker, "orders", wait=0.1)
    broker.declare("orders")
    for message in samples():
        await provider.publish(message)
    received = Received()
    route = Route(provider, received.handlers, translator=JSONTranslator())
    async with Manager([route]):
        await received.wait()
    received.check()
    assert received.metadata["created"]["headers"] == {"type": "OrderCreated"}


async def test_headers_given_with_a_typed_object_win_and_the_header_name_is_the_publishers() -> (
    None
):
    broker = MemoryBroker()
    await MemoryProvider(broker, "q").publish(
        OrderShipped(order_id=1, shipped_at=SHIPPED_AT), headers={"type": "shipped.v2", "x": "1"}
    )
    await MemoryProvider(broker, "q", type_header="kind").publish(
        OrderShipped(order_id=2, shipped_at=SHIPPED_AT)
    )
    await MemoryProvider(broker, "q", type_header=None).publish(
        OrderShipped(order_id=3, shipped_at=SHIPPED_AT)
    )
    first, second, third = broker._queues["q"].ready
    assert first.headers == {"type": "shipped.v2", "x": "1"}
    assert second.headers == {"kind": "OrderShipped"}
    assert third.headers == {}
    assert isinstance(third.body, bytes) and json.loads(third.body)["order_id"] == 3


async def test_a_message_of_a_type_no_handler_takes_is_rejected_naming_it() -> None:
    broker = MemoryBroker(history=10)
    provider = MemoryProvider(broker, "q", wait=0.1)
    await provider.publish(OrderShipped(order_id=1, shipped_at=SHIPPED_AT))
    handlers = Handlers(discriminator=header("type"))

    @handlers.on(OrderCreated)
    def created(order: OrderCreated, metadata: Any) -> bool:
        return True

    async with Manager([Route(provider, handlers, translator=JSONTranslator())]):
        await broker.wait_idle("q", timeout=10)
    [dead] = broker.dead_letters("q")
    assert dead.reject_reason == "no handler takes this message (discriminator 'OrderShipped')"


def test_without_pydantic_a_dataclass_is_published_with_json_dumps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @dataclasses.dataclass
    class Plain:
        order_id: int
        tags: list[str]

    monkeypatch.setitem(sys.modules, "pydantic", None)  # as if it were not installed
    encoded = encode(Plain(1, ["a"]))
    assert encoded is not None
    assert encoded.body == b'{"order_id":1,"tags":["a"]}'
    assert encoded.headers == {"type": "Plain"}
    with pytest.raises(ConfigurationError, match="cannot publish Plain as Plain"):
        encode(Plain(1, [object()]))  # type: ignore[list-item]
