"""Publishing to RabbitMQ with publisher confirms, pipelined for batches."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection

from loafer_core.errors import ConfigurationError, LoaferError, ProviderError, PublishRefused
from loafer_core.ext.otel import ROUTING_KEY, inject_each, publish_span
from loafer_core.kit import DelayedPublish, check_delay
from loafer_core.provider import Description, Support
from loafer_core.settings import from_flat
from loafer_core.typed import encode
from loafer_rabbit import _delay, _describe
from loafer_rabbit._connection import close_connection, open_connection
from loafer_rabbit.errors import mask_url, operation_error, protect
from loafer_rabbit.settings import RabbitPublisherSettings

__all__ = ["PublishRejected", "RabbitPublisher"]


class PublishRejected(PublishRefused):
    """The broker refused a message: a ``basic.nack`` from publisher confirms, or an
    unroutable message returned because ``mandatory`` was set.

    A :class:`~loafer_core.errors.PublishRefused`; this name is kept for code that
    catches it."""


def _returned(exc: aiormq.exceptions.PublishError) -> str:
    """The broker's words for a returned message: ``"312 NO_ROUTE"``."""
    frame = exc.frame
    code = getattr(frame, "reply_code", None)
    text = getattr(frame, "reply_text", None)
    words = " ".join(str(part) for part in (code, text) if part)
    return words or "returned"


def _headers_of(message: aio_pika.Message) -> dict[str, Any]:
    if message.headers is None:
        message.headers = {}
    return message.headers


def _encode(body: Any) -> tuple[bytes, str | None]:
    """Bytes pass through; ``str`` is UTF-8 text; anything else is encoded as JSON."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), None
    if isinstance(body, str):
        # exactly text/plain: FastStream (and others) match that, not with parameters;
        # UTF-8 is what text/plain means to AMQP consumers
        return body.encode("utf-8"), "text/plain"
    try:
        return json.dumps(body).encode("utf-8"), "application/json"
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"RabbitPublisher: cannot encode a {type(body).__name__} body as JSON ({exc}); "
            "pass bytes, str or a JSON-serialisable object"
        ) from exc


def _settings_of(
    settings: RabbitPublisherSettings | str | None, exchange: str | None, options: dict[str, Any]
) -> RabbitPublisherSettings:
    """The publisher's settings: ``settings`` itself, or built from the flat keywords
    (the first two positionals: the URL and the exchange)."""
    if isinstance(settings, RabbitPublisherSettings):
        if options or exchange is not None:
            given = sorted(options) + (["exchange"] if exchange is not None else [])
            raise ConfigurationError(
                f"RabbitPublisher: got a RabbitPublisherSettings and {given}; give one or "
                "the other (settings.replace(...) changes a settings object)"
            )
        return settings
    for key, value in (("url", settings), ("exchange", exchange)):
        if value is not None:
            if key in options:
                raise ConfigurationError(
                    f"RabbitPublisher: {key} given twice (positional and {key}=)"
                )
            options = {**options, key: value}
    return from_flat(RabbitPublisherSettings, "RabbitPublisher", options)


class RabbitPublisher:
    """Publish messages to a RabbitMQ exchange and wait for the broker's confirms.

    ``publish`` returns once the broker has confirmed the message; ``publish_many``
    sends a batch pipelined (up to ``pipeline`` unconfirmed at a time) and returns once
    every message is confirmed. A broker nack, or an unroutable message while
    ``mandatory`` is set, raises :class:`PublishRejected`; a lost connection raises
    :class:`~loafer_core.errors.ProviderError` (the message may or may not have arrived).

    Takes one :class:`~loafer_rabbit.settings.RabbitPublisherSettings`, or the same
    values as flat keywords (``RabbitPublisher(url, exchange, routing_key="orders",
    timeout=5)``; the first two positionals, when strings, are the URL and the
    exchange): the settings' docstring lists each of them. ``settings`` holds what it
    was built with; ``exchange``, ``routing_key``, ``mandatory``, ``persistent``,
    ``pipeline``, ``timeout`` and ``type_header`` read it.

    Typed objects (a pydantic model, a dataclass, a msgspec Struct,
    :class:`~loafer_core.typed.Typed`) are published as JSON with their type in the
    ``type_header`` header (:func:`~loafer_core.typed.encode`). Each publish is traced
    when the process uses OpenTelemetry (:mod:`loafer_core.ext.otel`: a producer span,
    its context in the message's headers).

    ``delay=`` (seconds) or ``at=`` (an aware datetime) holds a message back: it is
    confirmed into the delay queue ``<target>.delay.<ms>`` (declared on first use, TTL
    the delay rounded up to three significant digits, dead-lettered to the exchange and
    routing key) and RabbitMQ moves it there when the TTL is over (``docs/scheduling.md``).

    Use it as ``async with RabbitPublisher(url) as publisher:`` or call :meth:`connect`
    and :meth:`close`.
    """

    settings_type = RabbitPublisherSettings
    #: Delayed publish (``delay=`` / ``at=``): emulated with TTL delay queues that
    #: dead-letter to the target (what RabbitMQ offers without a plugin).
    delay_support: ClassVar[Support] = Support.EMULATED
    #: The longest delay: RabbitMQ's largest TTL (about 49 days).
    max_delay: ClassVar[float | None] = _delay.MAX_DELAY

    def __init__(
        self,
        settings: RabbitPublisherSettings | str | None = None,
        exchange: str | None = None,
        /,
        **options: Any,
    ) -> None:
        self.settings = _settings_of(settings, exchange, options)
        protect(self._url)  # aio-pika logs the URL's query string: mask it
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._lock = asyncio.Lock()
        self._opening: asyncio.Task[None] | None = None
        self._closed = False
        self._delay_queues = _delay.DelayQueues(self._url)

    @property
    def _url(self) -> str:
        return self.settings.connection.url

    @property
    def exchange(self) -> str:
        """The exchange's name (``""``: the default exchange)."""
        return self.settings.exchange

    @property
    def routing_key(self) -> str | None:
        """The default routing key."""
        return self.settings.routing_key

    @property
    def mandatory(self) -> bool:
        """Whether the broker returns a message no queue receives (an error)."""
        return self.settings.mandatory

    @property
    def persistent(self) -> bool:
        """Whether messages are published with ``delivery_mode=2``."""
        return self.settings.persistent

    @property
    def pipeline(self) -> int:
        """Most unconfirmed messages in flight in ``publish_many``."""
        return self.settings.pipeline

    @property
    def timeout(self) -> float:
        """Longest wait for one confirm, seconds."""
        return self.settings.timeouts.publish

    @property
    def type_header(self) -> str | None:
        """The header a typed object's type is named in."""
        return self.settings.type_header

    def __repr__(self) -> str:
        return f"RabbitPublisher(url={mask_url(self._url)!r}, exchange={self.exchange!r})"

    def description(self) -> Description:
        """The exchange and routing key, the broker (no secret) and the AsyncAPI bindings:
        see :class:`~loafer_core.provider.Describable`."""
        return _describe.publisher(self.settings)

    async def __aenter__(self) -> RabbitPublisher:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open it now (else the first publish does): the publisher lifecycle shared by
        every plugin, ``start()`` then ``close()``; the same as :meth:`connect`."""
        await self.connect()

    async def connect(self) -> None:
        """Open the connection and a confirming channel (done on first publish otherwise;
        after ``close()``, only this opens it again).

        Safe to cancel, and to ``close()`` meanwhile (it then raises ProviderError): a
        connection it opened is closed before it returns.
        """
        self._closed = False
        await self._ensure_open()

    async def _ensure_open(self) -> None:
        if self._exchange is not None:
            return
        async with self._lock:
            if self._closed:
                raise ProviderError(
                    f"RabbitPublisher to {mask_url(self._url)}: closed (connect() opens it again)"
                )
            if self._exchange is not None:
                return
            # Its own task, so that close() can end it without cancelling our caller.
            task = asyncio.get_running_loop().create_task(
                self._open(), name="loafer:rabbit:publisher-connect"
            )
            self._opening = task
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if task.cancelled() and current is not None and not current.cancelling():
                    raise ProviderError(
                        f"RabbitPublisher to {mask_url(self._url)}: closed while connecting"
                    ) from None
                raise
            finally:
                self._opening = None

    async def _open(self) -> None:
        settings = self.settings
        connection = await open_connection(
            self._url,
            timeout=settings.timeouts.connect,
            close_timeout=settings.timeouts.close,
            connection_name=settings.connection.name or "loafer:publisher",
            ssl_context=settings.connection.tls,
            options=dict(settings.connection.options or {}),
        )
        try:
            channel = connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel
            if self.exchange:
                exchange = await channel.get_exchange(self.exchange, ensure=True)
            else:
                exchange = channel.default_exchange
        except BaseException as exc:
            await close_connection(connection, self.settings.timeouts.close, self._url)
            if isinstance(exc, aiormq.exceptions.ChannelNotFoundEntity):
                raise ConfigurationError(
                    f"RabbitPublisher: exchange {self.exchange!r} does not exist at "
                    f"{mask_url(self._url)}"
                ) from None
            if isinstance(exc, Exception):
                raise operation_error("opening a channel", exc, self._url) from None
            raise
        self._connection, self._channel, self._exchange = connection, channel, exchange

    def message(
        self,
        body: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        **properties: Any,
    ) -> aio_pika.Message:
        """Build the ``aio_pika.Message`` ``publish`` would send (body encoding as there)."""
        encoded = encode(body, header=self.type_header)
        if encoded is None:
            data, content_type = _encode(body)
        else:
            data, content_type = encoded.body, encoded.content_type
            headers = {**encoded.headers, **headers} if headers else encoded.headers
        properties.setdefault("content_type", content_type)
        if self.persistent:
            properties.setdefault("delivery_mode", aio_pika.DeliveryMode.PERSISTENT)
        return aio_pika.Message(data, headers=dict(headers or {}), **properties)

    async def publish(
        self,
        body: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        routing_key: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        **properties: Any,
    ) -> None:
        """Publish one message and wait for its confirm.

        ``body``: bytes, str (UTF-8), a typed object or a JSON-serialisable object.
        ``delay`` (seconds) or ``at`` (an aware datetime): delivered no earlier, through
        a delay queue. ``properties`` are AMQP properties (``message_id``,
        ``correlation_id``, ``content_type``, ``expiration``, ``priority``, ...).
        """
        key = self._key(routing_key)
        scheduled = self._scheduled(delay, at, properties)
        with publish_span(
            "rabbitmq",
            self.exchange or key,
            headers,
            message_id=properties.get("message_id"),
            attributes={ROUTING_KEY: key},
        ) as sent:
            message = self.message(body, headers=sent, **properties)
            if scheduled is None:
                await self._send(message, key)
            else:
                await self._send(message, await self._delay_queue(key, scheduled), direct=True)

    async def publish_many(
        self,
        bodies: Iterable[Any],
        *,
        headers: Mapping[str, Any] | None = None,
        routing_key: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        **properties: Any,
    ) -> int:
        """Publish many messages pipelined (``pipeline`` at a time); return how many were
        confirmed (``delay``/``at`` as :meth:`publish`, for every message).

        Raises the first failure once every publish of its window has finished (the
        others may have been confirmed: publishing them again may duplicate them).
        """
        key = self._key(routing_key)
        scheduled = self._scheduled(delay, at, properties)
        messages = (self.message(b, headers=headers, **properties) for b in bodies)
        if scheduled is None:
            return await self.publish_messages(messages, routing_key=key)
        queue = await self._delay_queue(key, scheduled)
        span = publish_span("rabbitmq", self.exchange or key, None, attributes={ROUTING_KEY: key})
        with span:
            prepared = inject_each(span, messages, _headers_of)
            return await self._publish_messages(prepared, queue, direct=True)

    def _scheduled(
        self, delay: float | None, at: datetime | None, properties: Mapping[str, Any]
    ) -> DelayedPublish | None:
        scheduled = check_delay(
            delay, at, what=f"RabbitPublisher to {self.exchange!r}", maximum=_delay.MAX_DELAY
        )
        if scheduled is not None and properties.get("expiration") is not None:
            raise ConfigurationError(
                "RabbitPublisher: expiration= and a delay cannot go together (the delay "
                "queue expires the message into its target)"
            )
        return scheduled

    async def _delay_queue(self, key: str, scheduled: DelayedPublish) -> str:
        await self._ensure_open()
        channel = self._channel
        if channel is None:  # close() came in between
            raise ProviderError(f"RabbitPublisher to {mask_url(self._url)}: closed")
        return await self._delay_queues.queue_for(channel, self.exchange, key, scheduled.delay)

    async def publish_messages(
        self, messages: Iterable[aio_pika.Message], *, routing_key: str | None = None
    ) -> int:
        """Publish prepared ``aio_pika.Message`` objects pipelined; return the count.

        Traced as one producer span for the whole batch (its context in each message)."""
        key = self._key(routing_key)
        span = publish_span("rabbitmq", self.exchange or key, None, attributes={ROUTING_KEY: key})
        with span:
            return await self._publish_messages(inject_each(span, messages, _headers_of), key)

    async def _publish_messages(
        self, messages: Iterable[aio_pika.Message], key: str, *, direct: bool = False
    ) -> int:
        await self._ensure_open()
        send, size = self._send, self.pipeline
        sent = 0
        batch: list[aio_pika.Message] = []
        iterator = iter(messages)
        while True:
            batch = list(itertools.islice(iterator, size))
            if not batch:
                return sent
            # One window at a time, as raw aio-pika code does: every publish of the window
            # is written before the first confirm is awaited.
            results = await asyncio.gather(
                *(send(message, key, direct=direct) for message in batch),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            sent += len(batch)

    def _key(self, routing_key: str | None) -> str:
        key = routing_key if routing_key is not None else self.routing_key
        if key is None:
            raise ConfigurationError(
                "RabbitPublisher: no routing key; pass routing_key=... (for the default "
                "exchange, the queue name)"
            )
        return key

    async def _send(
        self, message: aio_pika.Message, routing_key: str, *, direct: bool = False
    ) -> None:
        """Publish and wait for the confirm; ``direct``: to the queue ``routing_key``
        through the default exchange (a delay queue)."""
        if self._exchange is None:
            await self._ensure_open()
        exchange = self._exchange
        if direct and self._channel is not None:
            exchange = self._channel.default_exchange
        if exchange is None:  # close() came in between
            raise ProviderError(f"RabbitPublisher to {mask_url(self._url)}: closed")
        try:
            await exchange.publish(
                message, routing_key=routing_key, mandatory=self.mandatory, timeout=self.timeout
            )
        except aiormq.exceptions.PublishError as exc:
            raise PublishRejected(
                f"RabbitMQ returned a message published to exchange {self.exchange!r} with "
                f"routing key {routing_key!r}: no queue is bound to receive it "
                f"({_returned(exc)})"
            ) from None
        except aiormq.exceptions.DeliveryError as exc:
            raise PublishRejected(
                f"RabbitMQ refused (nacked) a message published to exchange {self.exchange!r} "
                f"with routing key {routing_key!r}"
            ) from exc
        except (asyncio.CancelledError, LoaferError):
            raise
        except Exception as exc:
            raise operation_error(
                f"publishing to exchange {self.exchange!r} with routing key {routing_key!r}",
                exc,
                self._url,
            ) from None

    async def close(self) -> None:
        """Close the channel and connection, within ``close_timeout``. Idempotent.

        A connect in progress is abandoned; publishes waiting for their confirm, and any
        made later, raise ProviderError (until ``connect()`` opens it again).
        """
        self._closed = True
        opening = self._opening
        if opening is not None and not opening.done():
            opening.cancel()  # it closes what it opened before it ends
            await asyncio.wait({opening}, timeout=self.settings.timeouts.close)
        connection, self._connection = self._connection, None
        self._channel = None
        self._exchange = None
        self._delay_queues.forget()
        if connection is not None:
            await close_connection(connection, self.settings.timeouts.close, self._url)
