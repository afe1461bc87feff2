"""RabbitMQ (AMQP 0-9-1) provider plugin for loafer-core, built on aio-pika.

``from loafer_rabbit import RabbitProvider, RabbitPublisher, RabbitRoute``; their settings
objects: ``RabbitSettings``, ``RabbitPublisherSettings`` (and the pieces ``Topology``,
``Retries``, ``DeadLetters``; ``Connection`` and ``Timeouts`` come from
``loafer_core.settings``).
"""

from __future__ import annotations

from loafer_rabbit.errors import mask_url
from loafer_rabbit.provider import ATTEMPT_HEADER, REJECT_REASON_HEADER, RabbitProvider
from loafer_rabbit.publisher import PublishRejected, RabbitPublisher
from loafer_rabbit.route import RabbitRoute
from loafer_rabbit.settings import (
    DeadLetters,
    RabbitPublisherSettings,
    RabbitSettings,
    Retries,
    Topology,
)

__all__ = [
    "ATTEMPT_HEADER",
    "REJECT_REASON_HEADER",
    "DeadLetters",
    "PublishRejected",
    "RabbitProvider",
    "RabbitPublisher",
    "RabbitPublisherSettings",
    "RabbitRoute",
    "RabbitSettings",
    "Retries",
    "Topology",
    "mask_url",
]
