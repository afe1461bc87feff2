"""Redis Streams provider plugin for loafer-core, built on redis-py's asyncio client.

``from loafer_redis import RedisProvider, RedisPublisher, RedisRoute``; their settings
objects: ``RedisSettings`` (with ``ConsumerGroup``, ``DelayedRetries``, ``DeadLetters``,
``RedisTimeouts``) and ``RedisPublisherSettings`` (with ``Trimming``), in
:mod:`loafer_redis.settings`.
"""

from __future__ import annotations

from loafer_redis.errors import mask_url
from loafer_redis.provider import (
    ATTEMPT_FIELD,
    BODY_FIELD,
    REJECT_REASON_FIELD,
    RedisProvider,
)
from loafer_redis.publisher import RedisPublisher
from loafer_redis.route import RedisRoute
from loafer_redis.settings import (
    ConsumerGroup,
    DeadLetters,
    DelayedRetries,
    RedisPublisherSettings,
    RedisSettings,
    RedisTimeouts,
    Trimming,
)
from loafer_redis.translator import RedisTranslator

__all__ = [
    "ATTEMPT_FIELD",
    "BODY_FIELD",
    "REJECT_REASON_FIELD",
    "ConsumerGroup",
    "DeadLetters",
    "DelayedRetries",
    "RedisProvider",
    "RedisPublisher",
    "RedisPublisherSettings",
    "RedisRoute",
    "RedisSettings",
    "RedisTimeouts",
    "RedisTranslator",
    "Trimming",
    "mask_url",
]
