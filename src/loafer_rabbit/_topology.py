"""The provider's queues and exchanges: declaring them, and what a refusal means."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractQueue, AbstractRobustChannel

from loafer_core.errors import ConfigurationError, LoaferError
from loafer_rabbit.errors import mask_url, operation_error, scrub, vhost_of

__all__ = [
    "DEAD_LETTER_ARGUMENTS",
    "declare_dead_letter",
    "declare_retry_queue",
    "declare_work_queue",
    "retry_queue_arguments",
    "topology_error",
    "work_queue_arguments",
]


def topology_error(exc: BaseException, what: str, name: str, url: str) -> LoaferError:
    """ConfigurationError for a refusal that set-up must fix, else ProviderError."""
    where = f"vhost {vhost_of(url)!r} at {mask_url(url)}"
    if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
        return ConfigurationError(
            f"RabbitMQ {what} {name!r} does not exist on {where}; create it, or pass "
            "declare=True to RabbitProvider to declare it"
        )
    if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
        return ConfigurationError(
            f"RabbitMQ {what} {name!r} on {where} exists with different settings "
            f"({scrub(str(exc), url)}); delete it or match its arguments"
        )
    if isinstance(exc, aiormq.exceptions.ChannelAccessRefused):
        return ConfigurationError(
            f"RabbitMQ refused access to {what} {name!r} on {where} "
            f"({scrub(str(exc), url)}); check the user's permissions"
        )
    if isinstance(exc, aiormq.exceptions.ChannelLockedResource):
        return ConfigurationError(
            f"RabbitMQ {what} {name!r} on {where} is exclusive to another connection"
        )
    return operation_error(f"declaring {what} {name!r}", exc, url)


@contextmanager
def _declaring(what: str, name: str, url: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # a cancellation passes through
        raise topology_error(exc, what, name, url) from None


async def declare_work_queue(
    channel: AbstractRobustChannel,
    queue: str,
    *,
    url: str,
    declare: bool,
    queue_type: str,
    durable: bool,
    dead_letter_exchange: str | None,
    arguments: Mapping[str, Any],
) -> AbstractQueue:
    """Check the work queue exists (passive), or declare it with these settings."""
    with _declaring("queue", queue, url):
        if not declare:
            return await channel.declare_queue(queue, passive=True)
        declared = work_queue_arguments(
            queue,
            queue_type=queue_type,
            dead_letter_exchange=dead_letter_exchange,
            arguments=arguments,
        )
        return await channel.declare_queue(queue, durable=durable, arguments=declared)


def work_queue_arguments(
    queue: str,
    *,
    queue_type: str,
    dead_letter_exchange: str | None,
    arguments: Mapping[str, Any],
) -> dict[str, Any]:
    """The arguments a declared work queue gets."""
    declared: dict[str, Any] = {"x-queue-type": queue_type}
    if dead_letter_exchange is not None:
        declared["x-dead-letter-exchange"] = dead_letter_exchange
        declared["x-dead-letter-routing-key"] = queue
    declared.update(arguments)
    return declared


def retry_queue_arguments(work_queue: str) -> dict[str, Any]:
    """A retry queue's arguments: expired messages are dead-lettered back to ``work_queue``."""
    return {
        "x-queue-type": "classic",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": work_queue,
    }


#: The arguments of the dead-letter queue the provider declares.
DEAD_LETTER_ARGUMENTS: Mapping[str, Any] = {"x-queue-type": "classic"}


async def declare_retry_queue(
    channel: AbstractRobustChannel, name: str, *, work_queue: str, url: str
) -> None:
    """Declare a retry queue: expired messages are dead-lettered back to ``work_queue``."""
    arguments = retry_queue_arguments(work_queue)
    with _declaring("retry queue", name, url):
        await channel.declare_queue(name, durable=True, arguments=arguments)


async def declare_dead_letter(
    channel: AbstractRobustChannel, *, exchange: str, queue: str, routing_key: str, url: str
) -> None:
    """Declare the dead-letter exchange and queue, bound by ``routing_key``."""
    with _declaring("dead-letter exchange", exchange, url):
        declared = await channel.declare_exchange(
            exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
    with _declaring("dead-letter queue", queue, url):
        dlq = await channel.declare_queue(
            queue, durable=True, arguments=dict(DEAD_LETTER_ARGUMENTS)
        )
        await dlq.bind(declared, routing_key=routing_key)
