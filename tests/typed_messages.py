"""The typed messages of the typed-publishing tests: one of each kind loafer's publishers
take (pydantic model, dataclass, TypedDict, msgspec Struct), and a route of handlers
that dispatches on the ``type`` header and records what each handler received."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from typing import Any

import msgspec
import pydantic
from typing_extensions import TypedDict

from loafer_core import Handlers, header
from loafer_core.typed import Typed


class OrderCreated(pydantic.BaseModel):
    order_id: int
    total: float
    customer: str = pydantic.Field(alias="customerName")


@dataclasses.dataclass
class OrderShipped:
    order_id: int
    shipped_at: datetime.datetime


class OrderNote(TypedDict):
    order_id: int
    text: str


class OrderCancelled(msgspec.Struct):
    __message_type__ = "order.cancelled"  # a name of its own in the type header
    order_id: int
    reason: str


SHIPPED_AT = datetime.datetime(2026, 12, 1, 10, 30, tzinfo=datetime.UTC)


def samples() -> list[Any]:
    """One message of each kind, as a publisher is given them."""
    return [
        OrderCreated(order_id=1, total=9.5, customerName="ada"),
        OrderShipped(order_id=2, shipped_at=SHIPPED_AT),
        Typed(OrderNote, {"order_id": 3, "text": "fragile"}),
        OrderCancelled(order_id=4, reason="changed mind"),
    ]


class Received:
    """A :class:`Handlers` taking each kind on its own typed handler."""

    def __init__(self) -> None:
        self.got: dict[str, Any] = {}
        self.metadata: dict[str, Any] = {}
        self.done = asyncio.Event()
        self.handlers = Handlers(discriminator=header("type"))
        self.handlers.on(OrderCreated)(self.created)
        self.handlers.on(OrderShipped)(self.shipped)
        self.handlers.on(OrderNote)(self.noted)
        self.handlers.on("order.cancelled")(self.cancelled)

    def _record(self, name: str, value: Any, metadata: Any) -> bool:
        self.got[name] = value
        self.metadata[name] = metadata
        if len(self.got) == 4:
            self.done.set()
        return True

    async def created(self, order: OrderCreated, metadata: Any) -> bool:
        return self._record("created", order, metadata)

    async def shipped(self, order: OrderShipped, metadata: Any) -> bool:
        return self._record("shipped", order, metadata)

    def noted(self, note: OrderNote, metadata: Any) -> bool:
        return self._record("noted", note, metadata)

    async def cancelled(self, order: OrderCancelled, metadata: Any) -> bool:
        return self._record("cancelled", order, metadata)

    async def wait(self, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            await self.done.wait()

    def check(self) -> None:
        """Each message arrived on its handler, validated into its type."""
        assert self.got == {
            "created": OrderCreated(order_id=1, total=9.5, customerName="ada"),
            "shipped": OrderShipped(order_id=2, shipped_at=SHIPPED_AT),
            "noted": {"order_id": 3, "text": "fragile"},
            "cancelled": OrderCancelled(order_id=4, reason="changed mind"),
        }
        assert type(self.got["created"]) is OrderCreated
        assert type(self.got["shipped"]) is OrderShipped
        assert type(self.got["cancelled"]) is OrderCancelled
