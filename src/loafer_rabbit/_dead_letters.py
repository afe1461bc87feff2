"""The dead-letter queue of a RabbitMQ route, and its store.

With ``dead_letter=True`` on a queue the provider did not declare, REJECT publishes a
copy to the provider's dead-letter exchange with the common ``loafer-dead-*`` headers,
awaits the confirm, then acks. On a queue the provider declared (``declare=True``) the
broker dead-letters it itself (``basic.reject``): the message keeps no reason of ours;
the store reads RabbitMQ's ``x-death`` header instead (reason ``rejected``, the queue,
the time, the count).

A replay reads the dead-letter queue with ``basic.get`` (holding what it read, unacked,
on its own channel), publishes each message to the origin queue with confirms, then
acks it off the dead-letter queue: at least once (a replay killed between the confirm
and the ack leaves the message in the dead-letter queue; run again, it is published
again with the same ``loafer-replay-id``). What a scan held and did not settle goes back
to the dead-letter queue when its channel closes. A scan holds the whole dead-letter
queue unacked while it runs.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from loafer_core.deadletters import (
    DeadLetter,
    DeadLetters,
    read_dead_letter,
    replay_headers,
)
from loafer_core.errors import ProviderError
from loafer_rabbit.errors import mask_url, scrub

__all__ = ["RabbitDeadLetters"]

#: The reason read on a message the broker dead-lettered (x-death keeps none of ours).
_NATIVE_LIMITS = (
    "a queue the provider declared is dead-lettered by RabbitMQ itself: no reason of "
    "ours is kept (read from x-death: 'rejected')"
)


def _id(message: AbstractIncomingMessage) -> str:
    if message.message_id:
        return str(message.message_id)
    digest = hashlib.sha256(message.body)
    digest.update(repr(sorted((message.headers or {}).items())).encode())
    return "sha256-" + digest.hexdigest()[:24]


def _from_x_death(message: AbstractIncomingMessage, origin: str) -> DeadLetter:
    """A message the broker dead-lettered: what ``x-death`` tells."""
    headers = dict(message.headers or {})
    deaths = headers.get("x-death")
    first = deaths[0] if isinstance(deaths, list) and deaths else None
    death: dict[str, Any] = dict(first) if isinstance(first, dict) else {}
    when = death.get("time")
    if isinstance(when, datetime) and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return DeadLetter(
        id=_id(message),
        body=message.body,
        headers=headers,
        reason=str(death.get("reason", "rejected")),
        attempts=None,
        origin=str(death.get("queue", origin)),
        first_failure=when if isinstance(when, datetime) else None,
        last_failure=when if isinstance(when, datetime) else None,
    )


class RabbitDeadLetters(DeadLetters):
    """The messages in a route's dead-letter queue (``<queue>.dead``)."""

    guarantee = "at-least-once"

    def __init__(
        self, url: str, dead_queue: str, origin: str, *, native: bool, timeout: float
    ) -> None:
        self._url = url
        self._dead = dead_queue
        self._origin = origin
        self._timeout = timeout
        self.limits = _NATIVE_LIMITS if native else None
        self._connection: AbstractConnection | None = None
        self._held: dict[str, tuple[AbstractChannel, AbstractIncomingMessage]] = {}

    @property
    def where(self) -> str:
        """``amqp://host/vhost queue.dead`` (password masked)."""
        return f"{mask_url(self._url)} {self._dead}"

    def _failed(self, what: str, exc: BaseException) -> ProviderError:
        return ProviderError(
            f"RabbitMQ at {mask_url(self._url)}: {what} {self._dead}: "
            f"{scrub(f'{type(exc).__name__}: {exc}', self._url)}"
        )

    async def _channel(self) -> AbstractChannel:
        try:
            if self._connection is None:
                self._connection = await aio_pika.connect(self._url, timeout=self._timeout)
            return await self._connection.channel(publisher_confirms=True)
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            raise self._failed("connecting to read", exc) from None

    async def count(self) -> int:
        """Messages ready in the dead-letter queue (``queue.declare`` passive)."""
        channel = await self._channel()
        try:
            queue = await channel.declare_queue(self._dead, passive=True)
            return int(queue.declaration_result.message_count or 0)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0  # not declared yet (the provider declares it at start): none
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            raise self._failed("counting", exc) from None
        finally:
            await channel.close()

    def _letter(self, message: AbstractIncomingMessage) -> DeadLetter:
        headers = dict(message.headers or {})
        if "loafer-dead-reason" not in headers and "x-death" in headers:
            return _from_x_death(message, self._origin)
        return read_dead_letter(_id(message), message.body, headers, origin=self._origin)

    async def _scan(self) -> AsyncGenerator[DeadLetter, None]:
        channel = await self._channel()
        try:
            try:
                queue = await channel.declare_queue(self._dead, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return  # not declared yet: none
            while True:
                message = await queue.get(no_ack=False, fail=False, timeout=self._timeout)
                if message is None:
                    return
                letter = self._letter(message)
                if letter.id in self._held:  # the same id twice: left for a later run
                    continue
                self._held[letter.id] = (channel, message)
                yield letter
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            raise self._failed("reading", exc) from None
        finally:
            self._held = {k: v for k, v in self._held.items() if v[0] is not channel}
            with _quietly():
                await channel.close()  # what was read and not settled goes back

    async def _move(self, letter: DeadLetter) -> None:
        channel, message = self._held.pop(letter.id)
        copy = aio_pika.Message(
            message.body,
            headers=replay_headers(letter),
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            type=message.type,
        )
        try:
            await channel.default_exchange.publish(
                copy, routing_key=letter.origin or self._origin, timeout=self._timeout
            )
            await message.ack()  # only once the publish is confirmed
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            raise self._failed(f"replaying {letter.id} from", exc) from None

    async def _remove(self, letter: DeadLetter) -> None:
        _, message = self._held.pop(letter.id)
        try:
            await message.ack()
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            raise self._failed(f"deleting {letter.id} from", exc) from None

    async def close(self) -> None:
        """Close the connection (unsettled reads go back to the dead-letter queue)."""
        connection, self._connection = self._connection, None
        self._held = {}
        if connection is not None:
            with _quietly():
                await asyncio.wait_for(connection.close(), self._timeout)


class _quietly:
    """Ignore a failure to close (the connection is going anyway)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(exc, Exception)
