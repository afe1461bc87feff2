"""AMQP 1.0 provider plugin for loafer-core (python-qpid-proton).

``from loafer_amqp import AMQPProvider, AMQPPublisher, AMQPRoute, AMQPSettings``
"""

from __future__ import annotations

from loafer_amqp.errors import PublishRefused
from loafer_amqp.provider import AMQPProvider
from loafer_amqp.publisher import AMQPPublisher
from loafer_amqp.route import AMQPRoute
from loafer_amqp.settings import (
    TLS,
    AMQPConnection,
    AMQPPublisherSettings,
    AMQPSettings,
)
from loafer_amqp.translator import AMQPTranslator

__all__ = [
    "TLS",
    "AMQPConnection",
    "AMQPProvider",
    "AMQPPublisher",
    "AMQPPublisherSettings",
    "AMQPRoute",
    "AMQPSettings",
    "AMQPTranslator",
    "PublishRefused",
]
