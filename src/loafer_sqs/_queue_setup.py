"""Reading a queue's set-up: its URL, its attributes, its dead-letter queue.

What ``start`` and ``verify`` both do before anything is received: ``GetQueueUrl``
(unless a URL was given), ``GetQueueAttributes``, and the dead-letter queue's URL (the
``dead_letter_queue`` option, else the queue's ``RedrivePolicy`` target). Read-only: no
message is received or made invisible.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loafer_core.errors import ConfigurationError
from loafer_core.kit import map_exceptions
from loafer_sqs.errors import cause, is_missing_queue, translate_error

__all__ = ["QueueSetup", "read_queue_setup"]


@dataclass(frozen=True, slots=True)
class QueueSetup:
    """A queue's URL, its attributes (``GetQueueAttributes``) and where REJECT sends to."""

    url: str
    attributes: Mapping[str, str]
    dead_letter_url: str | None

    @property
    def fifo(self) -> bool:
        """True when the queue says it is a FIFO queue."""
        return self.attributes.get("FifoQueue", "false") == "true"

    def visibility(self, option: int | None) -> float:
        """The lease a received message starts with: the option, else the queue's."""
        return float(option if option is not None else self.attributes.get("VisibilityTimeout", 30))


async def read_queue_setup(
    client: Any,
    queue: str,
    *,
    name: str,
    dead_letter: str | bool | None,
    where: object,
) -> QueueSetup:
    """Resolve ``queue`` (a name or URL; ``name`` is how errors show it, ``where`` the
    region/endpoint), read its attributes and find its dead-letter queue."""
    url = await _resolve(client, queue, where)
    doing = f"reading the queue attributes ({name})"
    with map_exceptions(lambda exc: translate_error(exc, doing), chain=cause):
        response = await client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    attributes = dict(response.get("Attributes", {}))
    return QueueSetup(
        url, attributes, await _dead_letter_url(client, attributes, name, dead_letter, where)
    )


async def _resolve(client: Any, queue: str, where: object) -> str:
    if queue.startswith(("http://", "https://")):
        return queue
    try:
        response = await client.get_queue_url(QueueName=queue)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if is_missing_queue(exc):
            raise ConfigurationError(
                f"SQS queue {queue!r} does not exist (region/endpoint: {where!r}); "
                "create it or fix the name"
            ) from cause(exc)
        raise translate_error(exc, f"looking up the URL of queue {queue!r}") from cause(exc)
    return str(response["QueueUrl"])


async def _dead_letter_url(
    client: Any,
    attributes: Mapping[str, str],
    name: str,
    option: str | bool | None,
    where: object,
) -> str | None:
    if option is False:
        return None
    if isinstance(option, str) and option:
        return await _resolve(client, option, where)
    policy = attributes.get("RedrivePolicy")
    if not policy:
        return None
    try:
        arn = str(json.loads(policy)["deadLetterTargetArn"])
        _, _, _, _, account, dead = arn.split(":", 5)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"queue {name!r} has a RedrivePolicy without a usable deadLetterTargetArn: {policy!r}"
        ) from cause(exc)
    try:
        response = await client.get_queue_url(QueueName=dead, QueueOwnerAWSAccountId=account)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if is_missing_queue(exc):
            raise ConfigurationError(
                f"the dead-letter queue {dead!r} of {name!r} does not exist"
            ) from cause(exc)
        raise translate_error(exc, f"looking up the dead-letter queue {dead!r}") from cause(exc)
    return str(response["QueueUrl"])
