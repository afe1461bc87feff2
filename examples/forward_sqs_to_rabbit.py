"""Forward orders from an SQS queue to RabbitMQ: each SQS message is deleted only once
RabbitMQ confirmed the message forwarded for it (see docs/forwarding.md).

Run it against real brokers (queues must exist; the AWS settings come from the usual
environment variables, ``AWS_ENDPOINT_URL`` for a local SQS such as moto)::

    ORDERS_QUEUE=orders RABBIT_URL=amqp://guest:guest@localhost:5672/ \\
        RABBIT_QUEUE=fulfilment python examples/forward_sqs_to_rabbit.py

It runs until SIGTERM or Ctrl-C, then drains: in-flight orders finish, their publishes
are confirmed, their SQS messages deleted, and the RabbitMQ connection is closed last.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from loafer_core import Manager, RejectMessage
from loafer_core.forward import Publish
from loafer_core.idempotency import Idempotency
from loafer_rabbit import RabbitPublisher
from loafer_sqs import SQSRoute

ORDERS_QUEUE = os.environ.get("ORDERS_QUEUE", "orders")
RABBIT_URL = os.environ.get("RABBIT_URL", "amqp://guest:guest@localhost:5672/")
RABBIT_QUEUE = os.environ.get("RABBIT_QUEUE", "fulfilment")


async def forward_order(order: dict[str, Any], metadata: dict[str, Any]) -> Publish:
    """One order in, one fulfilment request out (published by the route, confirmed by
    RabbitMQ before the SQS message is deleted)."""
    if not order.get("items"):
        raise RejectMessage("an order without items")  # dead-lettered, never forwarded
    return Publish(
        {"order": order["id"], "items": order["items"]},
        headers={"order-id": str(order["id"])},  # the next consumer can deduplicate on it
        message_id=f"order-{order['id']}",
    )


def routes() -> list[SQSRoute]:
    """The service's routes: SQS ``ORDERS_QUEUE`` -> RabbitMQ ``RABBIT_QUEUE``."""
    fulfilment = RabbitPublisher(RABBIT_URL, routing_key=RABBIT_QUEUE)
    return [
        SQSRoute(
            ORDERS_QUEUE,
            {"options": {"WaitTimeSeconds": 1}},
            handler=forward_order,
            publish_to=fulfilment,  # opened with the manager, closed after the drain
            # an order SQS hands out twice while this process runs is forwarded once
            middleware=[Idempotency(key=lambda delivery: delivery.message_id)],
            max_concurrency=20,
        )
    ]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    Manager(routes()).run()
