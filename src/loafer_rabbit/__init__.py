"""RabbitMQ (AMQP 0-9-1) provider plugin for loafer-core, built on aio-pika.

``from loafer_rabbit import RabbitProvider, RabbitPublisher, RabbitRoute``
"""

from __future__ import annotations

from loafer_rabbit.errors import mask_url
from loafer_rabbit.provider import ATTEMPT_HEADER, REJECT_REASON_HEADER, RabbitProvider
from loafer_rabbit.publisher import PublishRejected, RabbitPublisher
from loafer_rabbit.route import RabbitRoute

__all__ = [
    "ATTEMPT_HEADER",
    "REJECT_REASON_HEADER",
    "PublishRejected",
    "RabbitProvider",
    "RabbitPublisher",
    "RabbitRoute",
    "mask_url",
]
