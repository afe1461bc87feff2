"""NATS JetStream provider plugin for loafer-core, built on nats-py.

``from loafer_nats import NATSProvider, NATSPublisher, NATSRoute`` (and their settings
objects, ``NATSSettings`` and ``NATSPublisherSettings``: :mod:`loafer_nats.settings`)
"""

from __future__ import annotations

from loafer_nats.errors import MessageTooLarge, PublishRejected, mask_url
from loafer_nats.provider import (
    DEAD_LETTER_ID_HEADER,
    REJECT_REASON_HEADER,
    REJECTED_FROM_HEADER,
    NATSProvider,
)
from loafer_nats.publisher import NATSPublisher
from loafer_nats.route import NATSRoute
from loafer_nats.settings import (
    ConsumerSetup,
    DeadLetters,
    NATSPublisherSettings,
    NATSSettings,
    StreamSetup,
)

__all__ = [
    "DEAD_LETTER_ID_HEADER",
    "REJECTED_FROM_HEADER",
    "REJECT_REASON_HEADER",
    "ConsumerSetup",
    "DeadLetters",
    "MessageTooLarge",
    "NATSProvider",
    "NATSPublisher",
    "NATSPublisherSettings",
    "NATSRoute",
    "NATSSettings",
    "PublishRejected",
    "StreamSetup",
    "mask_url",
]
