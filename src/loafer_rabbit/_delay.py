"""Delayed publish on RabbitMQ: a delay queue per delay value, dead-lettered to the target.

``publish(body, delay=...)`` sends the message (confirmed) to the classic durable queue
``<target>.delay.<ms>``, whose ``x-message-ttl`` is that delay and whose dead-letter
exchange and routing key are the publisher's exchange and routing key: when the delay
is over, RabbitMQ moves the message to where it was published to. Every message of one
delay queue has the same TTL, so they expire in order (RabbitMQ expires messages only
at the head of a queue: a per-message TTL would hold short delays behind long ones).

Delays are rounded *up* to three significant digits (at most 1 % late) so that ``at=``
times do not make a queue per message. A delay queue deletes itself
(``x-expires``) :data:`EXPIRES_AFTER` after it was last declared plus its TTL, long
after its last message left; the publisher declares it again before using it when its
last declare is :data:`REDECLARE_AFTER` old. Nothing else reads these queues.
"""

from __future__ import annotations

import math
import time
from typing import Any

from aio_pika.abc import AbstractRobustChannel

from loafer_rabbit._topology import _declaring

#: The longest delay: RabbitMQ's largest ``x-message-ttl`` (2**32 - 1 ms, about 49 days).
MAX_DELAY = (2**32 - 1) / 1000
#: How long a delay queue outlives its TTL after its last declare, ms.
EXPIRES_AFTER = 120_000
#: A delay queue declared longer ago than this (seconds) is declared again before use.
REDECLARE_AFTER = 60.0


def rounded_ms(delay: float) -> int:
    """``delay`` seconds in ms, rounded up to three significant digits (at least 1)."""
    ms = max(1, math.ceil(delay * 1000))
    digits = len(str(ms))
    if digits <= 3:
        return ms
    step = int(10 ** (digits - 3))
    return min(-(-ms // step) * step, 2**32 - 1)


def target_of(exchange: str, routing_key: str) -> str:
    """What the delay queues of a target are named after: the routing key on the default
    exchange (the queue), else ``<exchange>.<routing key>``."""
    return routing_key if not exchange else f"{exchange}.{routing_key}"


def queue_name(exchange: str, routing_key: str, ms: int) -> str:
    """``<target>.delay.<ms>``."""
    return f"{target_of(exchange, routing_key)}.delay.{ms}"


def arguments(exchange: str, routing_key: str, ms: int) -> dict[str, Any]:
    """A delay queue's arguments: TTL ``ms``, dead-lettered to the target, self-deleting."""
    return {
        "x-queue-type": "classic",
        "x-message-ttl": ms,
        "x-dead-letter-exchange": exchange,
        "x-dead-letter-routing-key": routing_key,
        "x-expires": ms + EXPIRES_AFTER,
    }


class DelayQueues:
    """The delay queues a publisher declared, and when (declared again when old)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._declared: dict[str, float] = {}

    def forget(self) -> None:
        """After a reconnect or close: declare each again before use."""
        self._declared.clear()

    async def queue_for(
        self, channel: AbstractRobustChannel, exchange: str, routing_key: str, delay: float
    ) -> str:
        """The delay queue for ``delay`` seconds to ``exchange``/``routing_key``,
        declared if it was not lately."""
        ms = rounded_ms(delay)
        name = queue_name(exchange, routing_key, ms)
        now = time.monotonic()
        if now - self._declared.get(name, -math.inf) >= REDECLARE_AFTER:
            with _declaring("delay queue", name, self._url):
                await channel.declare_queue(
                    name, durable=True, arguments=arguments(exchange, routing_key, ms)
                )
            self._declared[name] = now
        return name
