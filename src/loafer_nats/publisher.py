"""Publishing to JetStream, waiting for the server's publish ack, pipelined for batches."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping, Sized
from datetime import datetime
from typing import Any, ClassVar

from nats.aio.client import Client
from nats.js import JetStreamContext

from loafer_core import kit
from loafer_core.errors import ConfigurationError, LoaferError, ProviderError
from loafer_core.ext.otel import publish_span
from loafer_core.kit import DelayingPublisher, map_exceptions
from loafer_core.provider import Description, Support
from loafer_core.typed import encode
from loafer_nats import _describe
from loafer_nats._connection import client_options, close_connection, open_connection
from loafer_nats.errors import (
    MessageTooLarge,
    mask_url,
    operation_error,
)
from loafer_nats.settings import NATSPublisherSettings, settings_of

__all__ = ["NATSPublisher", "encode_body", "message_size"]

#: ``messaging.system`` of the spans (the semantic conventions' name for NATS).
SYSTEM = "nats"


def encode_body(body: Any, owner: str = "NATSPublisher") -> bytes:
    """Bytes pass through; ``str`` is UTF-8 text; anything else is encoded as JSON
    (:func:`loafer_core.kit.encode_body`)."""
    return kit.encode_body(body, owner)


def message_size(data: bytes, headers: Mapping[str, str] | None) -> int:
    """What the server counts against ``max_payload``: the body and the encoded headers
    (``NATS/1.0`` line, ``Key: value`` lines, blank line)."""
    if not headers:
        return len(data)
    size = len(b"NATS/1.0\r\n\r\n")
    for key, value in headers.items():
        size += len(key.encode()) + len(str(value).encode()) + 4
    return size + len(data)


class NATSPublisher:
    """Publish messages to a JetStream subject and wait for the publish acks.

    ``publish`` returns once the stream has stored the message; ``publish_many`` sends a
    batch pipelined (``pipeline`` acks awaited at a time). A message larger than the
    server's ``max_payload`` (1 MiB by default) raises :class:`MessageTooLarge`, naming
    the limit, before anything is sent; no stream capturing the subject, or a stream
    refusing the message, raises :class:`~loafer_nats.errors.PublishRejected`; a lost
    connection or a missing ack raises :class:`~loafer_core.errors.ProviderError` (the
    message may or may not be stored).

    Takes one :class:`~loafer_nats.settings.NATSPublisherSettings` (its docstring lists
    the settings), or the same values as flat keywords: ``subject`` (also positional),
    ``url``, ``stream``, ``pipeline``, ``timeout`` (one publish ack's longest wait),
    ``connect_timeout``, ``close_timeout``, ``reconnect_wait``, ``connection_name``,
    ``tls``, ``connection_options`` and ``type_header``. The URL's password or token never
    appears in logs or errors.

    Typed objects (a pydantic model, a dataclass, a msgspec Struct,
    :class:`~loafer_core.typed.Typed`) are published as JSON with their type in the
    ``type_header`` header (:func:`~loafer_core.typed.encode`), so that
    ``Handlers(discriminator=header("type"))`` takes them on their typed handlers. Each
    publish (and each ``publish_many`` batch) is traced when the process uses
    OpenTelemetry (:mod:`loafer_core.ext.otel`: a producer span, its W3C context in the
    message's headers).

    Use it as ``async with NATSPublisher("orders.new") as publisher:`` or call
    :meth:`connect` and :meth:`close`.
    """

    settings_type = NATSPublisherSettings
    #: Delayed publish (``delay=`` / ``at=``): emulated, a not-before header that
    #: loafer's NATSProvider holds the message back by (``nak(delay)``: one attempt).
    delay_support: ClassVar[Support] = Support.EMULATED
    #: The longest delay a publish may ask for (None: no limit).
    max_delay: ClassVar[float | None] = None

    def __init__(
        self, settings: NATSPublisherSettings | str | None = None, /, **options: Any
    ) -> None:
        self.settings = settings_of(NATSPublisherSettings, "NATSPublisher", settings, options)
        self._configure(self.settings)
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._delaying = DelayingPublisher(self, what="NATSPublisher", maximum=self.max_delay)

    def _configure(self, settings: NATSPublisherSettings) -> None:
        """The settings as the attributes the publisher reads."""
        connection, timeouts = settings.connection, settings.timeouts
        self._options, self._secrets = client_options(connection)
        self.subject = settings.subject
        self.stream = settings.stream
        self.pipeline = settings.pipeline
        self.timeout = float(timeouts.publish)
        self.type_header = settings.type_header
        self._url = connection.url
        self._connect_timeout = float(timeouts.connect)
        self._close_timeout = float(timeouts.close)
        self._reconnect_wait = float(timeouts.reconnect)
        self._connection_name = connection.name or "loafer:publisher"

    def description(self) -> Description:
        """The subject, the server (no secret): see
        :class:`~loafer_core.provider.Describable`."""
        return _describe.publisher(mask_url(self._url), self.subject, self.stream)

    def __repr__(self) -> str:
        return f"NATSPublisher(subject={self.subject!r}, url={mask_url(self._url)!r})"

    async def __aenter__(self) -> NATSPublisher:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def max_payload(self) -> int | None:
        """The server's ``max_payload`` (known once connected)."""
        client = self._client
        return client.max_payload if client is not None else None

    async def start(self) -> None:
        """Open it now (else the first publish does): the publisher lifecycle shared by
        every plugin, ``start()`` then ``close()``; the same as :meth:`connect`."""
        await self.connect()

    async def connect(self) -> None:
        """Connect (done on first publish otherwise; after ``close()``, only this opens
        it again)."""
        self._closed = False
        await self._ensure_open()

    async def _ensure_open(self) -> JetStreamContext:
        js = self._js
        if js is not None:
            return js
        async with self._lock:
            if self._closed:
                raise ProviderError(
                    f"NATSPublisher to {mask_url(self._url)}: closed (connect() opens it again)"
                )
            if self._js is None:
                client = await open_connection(
                    self._url,
                    name=self._connection_name,
                    connect_timeout=self._connect_timeout,
                    reconnect_wait=self._reconnect_wait,
                    secrets=self._secrets,
                    options=self._options,
                )
                if self._closed:  # close() came while connecting
                    await close_connection(client, self._close_timeout)
                    raise ProviderError(
                        f"NATSPublisher to {mask_url(self._url)}: closed while connecting"
                    )
                self._client = client
                self._js = client.jetstream(timeout=self.timeout)
            return self._js

    def _subject(self, subject: str | None) -> str:
        chosen = subject if subject is not None else self.subject
        if not chosen:
            raise ConfigurationError(
                "NATSPublisher: no subject; pass subject=... to the publisher or to publish()"
            )
        return chosen

    def _check_size(self, data: bytes, headers: Mapping[str, str] | None) -> None:
        limit = self.max_payload
        if limit is None or limit <= 0:
            return
        size = message_size(data, headers)
        if size > limit:
            raise MessageTooLarge(
                f"NATSPublisher: a message of {size} bytes (body {len(data)} bytes, with its "
                f"headers) exceeds the server's max_payload of {limit} bytes "
                f"({limit / 1048576:g} MiB); send a smaller body (store large payloads "
                "elsewhere and publish a reference), or raise max_payload on the server"
            )

    def _headers(self, headers: Mapping[str, Any] | None, msg_id: str | None) -> dict[str, str]:
        out = {str(k): str(v) for k, v in (headers or {}).items()}
        if msg_id is not None:
            out["Nats-Msg-Id"] = msg_id
        return out

    def _encode(
        self, body: Any, headers: dict[str, str] | None
    ) -> tuple[bytes, dict[str, str] | None]:
        """The body's bytes and its headers: a typed object's type header under the
        caller's ``headers`` (which win), else ``headers`` as they are."""
        if type(body) is bytes:  # the usual body: no further look
            return body, headers
        encoded = encode(body, header=self.type_header)
        if encoded is None:
            return encode_body(body), headers
        if not encoded.headers:
            return encoded.body, headers
        return encoded.body, {**encoded.headers, **headers} if headers else encoded.headers

    async def publish(
        self,
        body: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        subject: str | None = None,
        msg_id: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
    ) -> None:
        """Publish one message and wait for its publish ack.

        ``body``: bytes, str (UTF-8), a typed object (JSON, its type in ``type_header``) or
        a JSON-serialisable object. ``headers``: string values. ``msg_id``: JetStream's
        de-duplication id (``Nats-Msg-Id``). ``delay`` (seconds) or ``at`` (an aware
        datetime): emulated, stored at once with the ``x-loafer-not-before`` header that
        loafer's NATSProvider holds it back by (one delivery attempt spent).
        """
        target = self._subject(subject)
        headers = self._delaying.stamp(headers, delay, at)
        data, hdrs = self._encode(body, self._headers(headers, msg_id))
        with publish_span(SYSTEM, target, hdrs, message_id=msg_id) as sent:
            js = await self._ensure_open()
            self._check_size(data, sent)
            await self._send(js, target, data, sent)

    async def publish_many(
        self,
        bodies: Iterable[Any],
        *,
        headers: Mapping[str, Any] | None = None,
        subject: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
    ) -> int:
        """Publish many messages pipelined (``pipeline`` acks awaited at a time); return
        how many were stored (``delay``/``at`` as :meth:`publish`). Every body is
        checked against ``max_payload`` before its window is sent. Raises the first
        failure once its window has finished (others of it may be stored: publishing
        them again may duplicate them).

        Traced as one producer span for the whole batch (its context in every message;
        ``messaging.batch.message_count`` when ``bodies`` has a length)."""
        target = self._subject(subject)
        headers = self._delaying.stamp(headers, delay, at)
        count = len(bodies) if isinstance(bodies, Sized) else None
        with publish_span(SYSTEM, target, self._headers(headers, None), count=count) as sent:
            return await self._publish_many(bodies, target, dict(sent) if sent else None)

    async def _publish_many(
        self, bodies: Iterable[Any], target: str, hdrs: dict[str, str] | None
    ) -> int:
        js = await self._ensure_open()
        publish, timeout, stream, encode_one = js.publish, self.timeout, self.stream, self._encode
        sent = 0
        iterator = iter(bodies)
        while True:
            batch = [encode_one(b, hdrs) for b in itertools.islice(iterator, self.pipeline)]
            if not batch:
                return sent
            for data, own in batch:
                self._check_size(data, own)
            # js.publish itself, not a wrapper per message: as lean as a raw gather
            # (nats-py only ever adds the same expected-stream header to the headers)
            results = await asyncio.gather(
                *(
                    publish(target, data, timeout=timeout, stream=stream, headers=own)
                    for data, own in batch
                ),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    if isinstance(result, Exception) and not isinstance(result, LoaferError):
                        raise operation_error(
                            f"publishing to {target!r}", result, self._url, self._secrets
                        ) from None
                    raise result
            sent += len(batch)

    async def _send(
        self, js: JetStreamContext, subject: str, data: bytes, headers: Mapping[str, Any] | None
    ) -> None:
        with map_exceptions(
            lambda exc: operation_error(f"publishing to {subject!r}", exc, self._url, self._secrets)
        ):
            await js.publish(
                subject,
                data,
                timeout=self.timeout,
                stream=self.stream,
                headers=dict(headers) if headers else None,
            )

    async def close(self) -> None:
        """Flush and disconnect, within ``close_timeout``. Idempotent."""
        self._closed = True
        client, self._client = self._client, None
        self._js = None
        if client is not None:
            await close_connection(client, self._close_timeout)
