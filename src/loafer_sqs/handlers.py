"""Loafer 2.x's generic handlers (``loafer.ext.aws.handlers``), on our publishers.

``SQSHandler`` publishes each message it handles to an SQS queue, ``SNSHandler`` to an SNS
topic: a message forwarder in one line::

    from loafer_sqs import SQSHandler, SQSRoute

    routes = [SQSRoute("source-queue", handler=SQSHandler("destination-queue"))]

They keep Loafer 2.x's (and olist-loafer 6.x/7.0's) signatures: ``SQSHandler(queue_name,
**client_options)`` and ``SNSHandler(topic, **client_options)``, the ``queue_name`` /
``topic`` class attribute for subclasses, ``await self.publish(message,
encoder=json.dumps)`` (``encoder=None`` sends the message as it is) and ``handle(message,
*args)`` publishing the message. ``publish`` raises ``ValueError`` when no queue or topic
is set, as before.

What differs: the message goes through an :class:`~loafer_sqs.SQSPublisher` /
:class:`~loafer_sqs.SNSPublisher` (one long-lived client, batched sends, per-entry
retries) instead of a client per call; ``publish`` returns ``True`` once SQS/SNS has the
message (Loafer returned the ``SendMessage``/``Publish`` response) and raises
:class:`~loafer_core.errors.ProviderError` when it could not be sent (the route then
RETRIES the message). A :class:`~loafer_core.manager.Manager` running the route opens the
publisher with the routes and closes it after the drain; outside a manager, ``async
with`` the handler or call :meth:`close`. ``client=`` (an aiobotocore client of your own,
olist-loafer 7.0) is refused: give client options, or a ``publisher=`` of your own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from loafer_core.errors import ConfigurationError
from loafer_core.forward import PublisherService
from loafer_sqs.publisher import SNSPublisher, SQSPublisher

__all__ = ["SNSHandler", "SQSHandler"]

Encoder = Callable[[Any], Any]


def _check_client(owner: str, client_options: dict[str, Any]) -> None:
    if "client" in client_options:
        raise ConfigurationError(
            f"{owner}(client=...): an aiobotocore client of your own is not supported; give "
            "client options (endpoint_url=..., region_name=..., credentials) or "
            f"publisher=... (an {'SQS' if owner == 'SQSHandler' else 'SNS'}Publisher)"
        )


class _Forwarder:
    """What both generic handlers share: the publisher, its lifecycle, ``handle``."""

    publisher: Any

    def __init__(self, publisher: Any, owned: bool) -> None:
        self.publisher = publisher
        #: what a Manager running the route opens and closes with it: the publisher, when
        #: the handler made it (one given as ``publisher=`` is the caller's to manage)
        self.loafer_services = [PublisherService(publisher)] if owned else []

    async def publish(self, message: Any, encoder: Encoder | None = json.dumps) -> bool:
        """Publish ``message`` (encoded with ``encoder`` first, unless ``None``)."""
        raise NotImplementedError

    async def handle(self, message: Any, *args: Any) -> bool:
        """Publish the message handled; True (ACCEPT) once it is sent."""
        return bool(await self.publish(message))

    async def close(self) -> None:
        """Close the publisher this handler made (idempotent)."""
        for service in self.loafer_services:
            await service.close()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SQSHandler(_Forwarder):
    """A handler publishing each message to the SQS queue ``queue_name`` (name or URL).

    Arguments:
        queue_name: the queue; or set the class attribute ``queue_name`` in a subclass.
        publisher: an :class:`~loafer_sqs.SQSPublisher` of your own (you open and close
            it); by default one is made from ``client_options``.
        client_options: as :class:`~loafer_sqs.SQSPublisher`'s (``endpoint_url``,
            ``region_name``, credentials, ``use_ssl``...).
    """

    queue_name: str | None = None

    def __init__(
        self,
        queue_name: str | None = None,
        *,
        publisher: SQSPublisher | None = None,
        **client_options: Any,
    ) -> None:
        _check_client("SQSHandler", client_options)
        self.queue_name = queue_name or self.queue_name
        if publisher is not None and client_options:
            raise ConfigurationError("SQSHandler: give publisher=... or client options, not both")
        owned = publisher is None
        super().__init__(publisher or SQSPublisher(**client_options), owned)

    def __str__(self) -> str:
        return f"<{type(self).__name__}: {self.queue_name}>"

    async def publish(self, message: Any, encoder: Encoder | None = json.dumps) -> bool:
        """Send ``message`` to the queue, encoded with ``encoder`` (``json.dumps`` by
        default; ``None`` sends a ``str`` as it is); True once SQS has it."""
        if not self.queue_name:
            raise ValueError(f"{type(self).__name__}: missing queue_name attribute")
        if encoder:
            message = encoder(message)
        await self.publisher.publish(message, queue=self.queue_name)
        return True


class SNSHandler(_Forwarder):
    """A handler publishing each message to the SNS topic ``topic`` (ARN or name).

    Arguments:
        topic: the topic ARN (recommended) or name (looked up with ``ListTopics``); or set
            the class attribute ``topic`` in a subclass.
        publisher: an :class:`~loafer_sqs.SNSPublisher` of your own (you open and close
            it); by default one is made from ``client_options``.
        client_options: as :class:`~loafer_sqs.SNSPublisher`'s.

    SQS queues subscribed to the topic receive the encoded message as the envelope's
    ``Message`` (or as the body, with raw delivery), as with Loafer's
    ``MessageStructure="json"`` publish.
    """

    topic: str | None = None

    def __init__(
        self,
        topic: str | None = None,
        *,
        publisher: SNSPublisher | None = None,
        **client_options: Any,
    ) -> None:
        _check_client("SNSHandler", client_options)
        self.topic = topic or self.topic
        if publisher is not None and client_options:
            raise ConfigurationError("SNSHandler: give publisher=... or client options, not both")
        owned = publisher is None
        super().__init__(publisher or SNSPublisher(**client_options), owned)

    def __str__(self) -> str:
        return f"<{type(self).__name__}: {self.topic}>"

    async def publish(self, message: Any, encoder: Encoder | None = json.dumps) -> bool:
        """Publish ``message`` to the topic, encoded with ``encoder`` (``json.dumps`` by
        default; ``None`` sends a ``str`` as it is); True once SNS has it."""
        if not self.topic:
            raise ValueError(f"{type(self).__name__}: missing topic attribute")
        if encoder:
            message = encoder(message)
        await self.publisher.publish(message, topic=self.topic)
        return True
