"""The service ``loafer asyncapi`` describes in the tests: routes on memory, RabbitMQ,
AMQP 1.0 and SQS (typed handlers of every kind, two ``Handlers`` routes) and publishers,
given secrets that the document must not show. Importing it connects to nothing."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import pydantic
import typing_extensions

from loafer_amqp import AMQPProvider
from loafer_amqp.publisher import AMQPPublisher
from loafer_core import Handlers, Manager, Route, field, header
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_rabbit import RabbitProvider, RabbitPublisher
from loafer_sqs import SQSProvider
from loafer_sqs.publisher import SNSPublisher

#: every secret the service below is given: none may appear in the document
SECRETS = (
    "rabbit-pw-5ecret",
    "query-5ecret",
    "amqp-pw-5ecret",
    "kwarg-pw-5ecret",
    "aws-5ecret-key",
    "endpoint-5ecret",
    "publisher-pw-5ecret",
)
#: user names are not secrets, but the document has no use for them
USERS = ("rabbituser", "amqpuser", "endpointuser")


class Item(pydantic.BaseModel):
    sku: str
    quantity: int = 1


class OrderCreated(pydantic.BaseModel):
    id: int
    items: list[Item]


class Refund(msgspec.Struct):
    order: int
    amount: float


@dataclasses.dataclass
class Ping:
    n: int
    note: str = ""


class Note(typing_extensions.TypedDict):
    text: str


class Shipped(pydantic.BaseModel):
    order: int


async def on_created(order: OrderCreated, metadata: Any) -> None: ...


async def on_refund(refund: Refund, metadata: Any) -> None: ...


def on_ping(ping: Ping, metadata: Any) -> None: ...


async def on_note(note: Note, metadata: Any) -> None: ...


async def untyped(content: Any, metadata: Any) -> None: ...


def anything(content: Any, metadata: Any) -> bool:
    return True


def service() -> Manager:
    """Routes on memory, RabbitMQ, AMQP 1.0 and SQS (typed handlers of every kind, two
    ``Handlers`` routes) and three publishers; constructing it connects to nothing."""
    by_type = Handlers(discriminator=header("type"))
    by_type.on("order.created")(on_created)
    by_type.on("refund")(on_refund)
    by_type.on(when=anything)(untyped)
    by_kind = Handlers(discriminator=field("kind"))
    by_kind.on("ping")(on_ping)
    by_kind.on("note")(on_note)
    rabbit_url = (
        "amqp://rabbituser:rabbit-pw-5ecret@rabbit.example:5673/prod?keyfile_password=query-5ecret"
    )
    routes = [
        Route(MemoryProvider(MemoryBroker(), "mem-q"), untyped, name="memory-route"),
        Route(RabbitProvider("orders", url=rabbit_url, declare=True), by_type, name="orders"),
        Route(
            AMQPProvider(
                "amqps://amqpuser:amqp-pw-5ecret@amqp.example",
                "/amq/queue/pings",
                password="kwarg-pw-5ecret",
            ),
            by_kind,
        ),
        Route(
            SQSProvider(
                "refunds.fifo",
                dead_letter_queue="refunds-dead.fifo",
                region_name="eu-west-1",
                aws_access_key_id="AKIAEXAMPLE",
                aws_secret_access_key="aws-5ecret-key",
            ),
            on_refund,
            name="refunds",
        ),
        Route(
            SQSProvider(
                "notes",
                endpoint_url="http://endpointuser:endpoint-5ecret@127.0.0.1:5000",
            ),
            on_note,
            name="notes",
        ),
    ]
    manager = Manager(routes)
    shipped = RabbitPublisher(
        "amqp://rabbituser:publisher-pw-5ecret@rabbit.example:5673/prod",
        "events",
        routing_key="order.shipped",
        persistent=False,
    )
    shipped.message_type = Shipped  # type: ignore[attr-defined]
    manager.services.append(shipped)
    manager.services.append(SNSPublisher("arn:aws:sns:us-east-1:123456789012:audit"))
    manager.services.append(
        AMQPPublisher("amqp://amqpuser:amqp-pw-5ecret@amqp.example:5672", "/queue/out")
    )
    return manager
