"""Typed handlers: content validated into the first parameter's type; invalid content
REJECTED with why (never retried) unless an error handler decides; untyped unchanged."""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

import msgspec
import pydantic
import pytest
import typing_extensions

from loafer_core import JSONTranslator, Outcome, Route
from loafer_core.errors import InvalidMessage
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.outcome import RETRY, OutcomeKind
from loafer_core.testing import run_until_idle
from loafer_core.typed import _plain_dataclass, _plain_typeddict, content_converter

pytestmark = pytest.mark.memory


class Order(pydantic.BaseModel):
    id: int
    total: float
    customer: str
    paid: bool = False
    tags: list[str] = []


@dataclasses.dataclass
class Refund:
    order_id: int
    amount: float


class Note(TypedDict):
    text: str
    pinned: bool


def _route(handler: Any, **kwargs: Any) -> tuple[MemoryBroker, Route]:
    broker = MemoryBroker()
    kwargs.setdefault("translator", JSONTranslator())
    return broker, Route(MemoryProvider(broker, "q"), handler, **kwargs)


async def test_a_pydantic_typed_handler_gets_a_model_and_invalid_content_is_rejected() -> None:
    got: list[Order] = []

    async def on_order(order: Order, metadata: Any) -> bool:
        got.append(order)
        return True

    broker, route = _route(on_order)
    broker.publish("q", b'{"id": 1, "total": 9.5, "customer": "ada"}')
    broker.publish("q", b'{"id": "not a number", "total": 1, "customer": "bob"}')
    report = await run_until_idle(route, timeout=10)
    assert got == [Order(id=1, total=9.5, customer="ada")]
    [rejected] = report.rejected
    reason = rejected.outcome.reason or ""
    assert reason.startswith("content is not a valid Order: id: ")
    assert report.retried == []  # never retried


async def test_sync_dataclass_and_typeddict_handlers() -> None:
    refunds: list[Refund] = []
    notes: list[Note] = []

    def on_refund(refund: Refund, metadata: Any) -> None:
        refunds.append(refund)

    def on_note(note: Note, metadata: Any) -> None:
        notes.append(note)

    b1, r1 = _route(on_refund)
    b1.publish("q", b'{"order_id": 3, "amount": "2.5"}')  # lax: "2.5" -> 2.5 (pydantic)
    b1.publish("q", b'{"order_id": 3}')
    b2, r2 = _route(on_note)
    b2.publish("q", b'{"text": "hi", "pinned": true}')
    b2.publish("q", b'{"text": "hi"}')
    rep1 = await run_until_idle(r1, timeout=10)
    rep2 = await run_until_idle(r2, timeout=10)
    assert refunds == [Refund(order_id=3, amount=2.5)]
    assert notes == [{"text": "hi", "pinned": True}]
    assert "amount: Field required" in (rep1.rejected[0].outcome.reason or "")
    # a typing.TypedDict: pydantic refuses it before Python 3.12, so the plain check
    assert "missing ['pinned']" in (rep2.rejected[0].outcome.reason or "")


async def test_raw_json_bodies_are_parsed_for_the_type_and_objects_with_handle_work() -> None:
    class Handler:
        def __init__(self) -> None:
            self.seen: list[Order] = []

        async def handle(self, order: Order, metadata: Any) -> bool:
            self.seen.append(order)
            return True

    handler = Handler()
    broker, route = _route(handler, translator=None)  # the raw bytes reach the model
    broker.publish("q", b'{"id": 2, "total": 1, "customer": "cy"}')
    await run_until_idle(route, timeout=10)
    assert handler.seen == [Order(id=2, total=1.0, customer="cy")]


async def test_an_error_handler_overrides_the_rejection() -> None:
    seen: list[type[BaseException]] = []

    async def on_order(order: Order, metadata: Any) -> bool:
        return True

    def on_error(exc_type: type[BaseException], exc: BaseException, raw: Any) -> Outcome:
        seen.append(exc_type)
        return RETRY(0.01) if len(seen) < 2 else Outcome.ACCEPT

    broker, route = _route(on_order, error_handler=on_error)
    broker.publish("q", b'{"id": "x"}')
    report = await run_until_idle(route, timeout=10)
    assert seen == [InvalidMessage, InvalidMessage]
    assert [s.outcome.kind for s in report.settlements] == [OutcomeKind.RETRY, OutcomeKind.ACCEPT]


async def test_untyped_and_other_annotations_are_unchanged() -> None:
    got: list[Any] = []

    async def plain(content, metadata):
        got.append(content)

    async def as_dict(content: dict[str, Any], metadata: Any) -> None:
        got.append(content)

    for handler in (plain, as_dict):
        broker, route = _route(handler)
        broker.publish("q", b'{"a": 1}')
        await run_until_idle(route, timeout=10)
    assert got == [{"a": 1}, {"a": 1}]
    assert content_converter(plain) is None and content_converter(as_dict) is None


def test_without_pydantic_dataclasses_and_typeddicts_get_a_plain_check() -> None:
    refund = _plain_dataclass(Refund)
    assert refund({"order_id": 1, "amount": 2.0}) == Refund(1, 2.0)
    assert refund(b'{"order_id": 1, "amount": 2.0}') == Refund(1, 2.0)
    with pytest.raises(InvalidMessage, match=r"not a valid Refund: .*amount"):
        refund({"order_id": 1})
    with pytest.raises(InvalidMessage, match="expected an object, got list"):
        refund([1, 2])
    note = _plain_typeddict(Note)
    assert note({"text": "a", "pinned": False}) == {"text": "a", "pinned": False}
    with pytest.raises(InvalidMessage, match=r"missing \['pinned'\], unknown \['x'\]"):
        note({"text": "a", "x": 1})
    with pytest.raises(InvalidMessage, match="not JSON"):
        note(b"{nope")


class ExtNote(typing_extensions.TypedDict):
    text: str


async def test_a_typing_extensions_typeddict_is_validated_with_pydantic() -> None:
    got: list[Any] = []

    async def on_note(note: ExtNote, metadata: Any) -> None:
        got.append(note)

    broker, route = _route(on_note)
    broker.publish("q", b'{"text": "a"}')
    broker.publish("q", b'{"text": 5}')
    report = await run_until_idle(route, timeout=10)
    assert got == [{"text": "a"}]
    assert "text: Input should be a valid string" in (report.rejected[0].outcome.reason or "")


def test_an_annotation_that_cannot_be_resolved_is_said(caplog: pytest.LogCaptureFixture) -> None:
    class Local(pydantic.BaseModel):  # inside a function, under postponed annotations
        x: int

    async def handler(content: Local, metadata: Any) -> None:
        return None

    assert content_converter(handler) is None
    assert "cannot be resolved" in caplog.text and "'Local'" in caplog.text


class Shipment(msgspec.Struct):
    order_id: int
    carrier: str


async def test_a_msgspec_struct_typed_handler() -> None:
    got: list[Shipment] = []

    def on_shipment(shipment: Shipment, metadata: Any) -> None:
        got.append(shipment)

    broker, route = _route(on_shipment)
    broker.publish("q", b'{"order_id": 7, "carrier": "post"}')
    broker.publish("q", b'{"order_id": "seven", "carrier": "post"}')
    report = await run_until_idle(route, timeout=10)
    assert got == [Shipment(order_id=7, carrier="post")]
    reason = report.rejected[0].outcome.reason or ""
    assert reason.startswith("content is not a valid Shipment: Expected `int`, got `str`")
    convert = content_converter(on_shipment)  # raw JSON bytes are decoded by msgspec
    assert convert is not None
    assert convert(b'{"order_id": 1, "carrier": "x"}') == Shipment(1, "x")
