"""Kafka provider plugin for loafer-core, over aiokafka (the ``kafka`` extra).

``from loafer_kafka import KafkaProvider, KafkaPublisher, KafkaRoute`` (and their
settings objects, ``KafkaSettings`` and ``KafkaPublisherSettings``:
:mod:`loafer_kafka.settings`)
"""

from __future__ import annotations

from loafer_kafka.provider import (
    DEAD_ATTEMPTS_HEADER,
    DEAD_ORIGIN_HEADER,
    DEAD_REASON_HEADER,
    KafkaProvider,
)
from loafer_kafka.publisher import KafkaPublisher
from loafer_kafka.route import KafkaRoute
from loafer_kafka.settings import KafkaPublisherSettings, KafkaSettings

__all__ = [
    "DEAD_ATTEMPTS_HEADER",
    "DEAD_ORIGIN_HEADER",
    "DEAD_REASON_HEADER",
    "KafkaProvider",
    "KafkaPublisher",
    "KafkaPublisherSettings",
    "KafkaRoute",
    "KafkaSettings",
]
