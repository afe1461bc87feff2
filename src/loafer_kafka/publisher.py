"""Producing to Kafka topics: ``publish`` returns once the broker has acknowledged the
record (its confirm: ``acks="all"`` by default, idempotent). Concurrent publishes share
batches (aiokafka's ``linger``); each awaits its own acknowledgement."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sized
from datetime import datetime
from typing import Any, ClassVar

from aiokafka import AIOKafkaProducer

from loafer_core import kit
from loafer_core.errors import ConfigurationError, LoaferError, ProviderError
from loafer_core.ext.otel import publish_span
from loafer_core.kit import check_delay, map_exceptions
from loafer_core.provider import Description, Support
from loafer_core.settings import settings_of
from loafer_core.typed import encode
from loafer_kafka import _client, _describe
from loafer_kafka.errors import mask_url, protect, secrets_of, translate
from loafer_kafka.settings import KafkaPublisherSettings

__all__ = ["KafkaPublisher", "encode_body"]

#: ``messaging.system`` of the spans.
SYSTEM = "kafka"


def encode_body(body: Any, owner: str = "KafkaPublisher") -> bytes:
    """Bytes pass through; ``str`` is UTF-8 text; anything else is encoded as JSON
    (:func:`loafer_core.kit.encode_body`)."""
    return kit.encode_body(body, owner)


_NO_DELAY = (
    "Kafka delivers a record once it is written (no per-record delay); publish later, or "
    "let the consuming route RETRY(delay) it"
)


def _key(key: str | bytes | None) -> bytes | None:
    return key.encode("utf-8") if isinstance(key, str) else key


class KafkaPublisher:
    """Produce records to a Kafka topic and wait for each one's acknowledgement.

    Takes one :class:`~loafer_kafka.settings.KafkaPublisherSettings` (its docstring
    lists the settings), or the same values as flat keywords: ``topic`` (also
    positional), ``acks``, ``idempotent``, ``linger``, ``max_batch_bytes``,
    ``compression``, ``type_header``, ``url``, ``ssl_context``, ``connection_options``,
    ``timeout``, ``connect_timeout``, ``close_timeout``.

    A record the broker refuses (too large, a missing topic) raises
    :class:`~loafer_core.errors.PublishRefused`; an unreachable broker or a send without
    an acknowledgement raises :class:`~loafer_core.errors.ProviderError` (the record may
    or may not be stored). Headers are the record's headers (values as UTF-8 text).
    Typed objects are produced as JSON with their type in the ``type_header`` header;
    each publish is traced when the process uses OpenTelemetry (its W3C context in the
    headers). ``key`` (or ``ordering_key``) is the record's key: one key, one partition,
    in order.

    Use it as ``async with KafkaPublisher("orders") as publisher:`` or call
    :meth:`start` and :meth:`close`.
    """

    settings_type = KafkaPublisherSettings
    #: Delayed publish: none (``delay=``/``at=`` raise ConfigurationError).
    delay_support: ClassVar[Support] = Support.NONE
    max_delay: ClassVar[float | None] = None

    def __init__(
        self, settings: KafkaPublisherSettings | str | None = None, /, **options: Any
    ) -> None:
        self.settings = settings_of(KafkaPublisherSettings, "KafkaPublisher", settings, options)
        s = self.settings
        self.topic = s.topic
        self.type_header = s.type_header
        self.timeout = float(s.timeouts.publish)
        self._hosts = _client.hosts_of(s.connection)
        self._secrets = secrets_of(s.connection.url)
        self._producer: AIOKafkaProducer | None = None
        self._opening: asyncio.Lock | None = None
        self._closed = False

    def description(self) -> Description:
        """The topic, the bootstrap servers (no credentials): see
        :class:`~loafer_core.provider.Describable`."""
        return _describe.publisher(mask_url(self.settings.connection.url), self._hosts, self.topic)

    def __repr__(self) -> str:
        return f"KafkaPublisher(topic={self.topic!r}, servers={self._hosts!r})"

    async def __aenter__(self) -> KafkaPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _error(self, what: str, exc: BaseException) -> LoaferError:
        return translate(what, exc, where=self._hosts, secrets=self._secrets, publishing=True)

    async def start(self) -> None:
        """Connect now (else the first publish does; after ``close()``, only this opens
        it again)."""
        self._closed = False
        await self._open()

    async def _open(self) -> AIOKafkaProducer:
        if self._closed:
            raise ProviderError(
                f"KafkaPublisher to {self.topic!r}: closed (start() opens it again)"
            )
        if self._producer is not None:
            return self._producer
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._producer is None:
                self._producer = await self._connect()
            return self._producer

    async def _connect(self) -> AIOKafkaProducer:
        s = self.settings
        protect(self._secrets)
        producer = AIOKafkaProducer(
            acks=s.acks,
            enable_idempotence=s.idempotent,
            linger_ms=int(s.linger * 1000),
            max_batch_size=s.max_batch_bytes,
            compression_type=s.compression,
            request_timeout_ms=int(self.timeout * 1000),
            **_client.options(s.connection, "loafer-publisher"),
        )
        try:
            with map_exceptions(lambda exc: self._error("connecting", exc)):
                async with asyncio.timeout(float(s.timeouts.connect)):
                    await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    def _record(self, body: Any, headers: Mapping[str, Any] | None) -> tuple[bytes, list[Any]]:
        pairs = {str(k): str(v) for k, v in (headers or {}).items()}
        if type(body) is bytes:
            data = body
        else:
            encoded = encode(body, header=self.type_header)
            if encoded is None:
                data = encode_body(body)
            else:
                data = encoded.body
                pairs = {**(encoded.headers or {}), **pairs}
        return data, [(k, v.encode("utf-8")) for k, v in pairs.items()]

    def _topic(self, topic: str | None) -> str:
        chosen = topic if topic is not None else self.topic
        if not chosen:
            raise ConfigurationError(
                "KafkaPublisher: no topic; pass topic=... to the publisher or to publish()"
            )
        return chosen

    async def publish(
        self,
        body: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        topic: str | None = None,
        key: str | bytes | None = None,
        ordering_key: str | None = None,
        partition: int | None = None,
        delay: float | None = None,
        at: datetime | None = None,
    ) -> None:
        """Produce one record and wait for its acknowledgement.

        ``body``: bytes, str (UTF-8), a typed object (JSON, its type in ``type_header``)
        or a JSON-serialisable object. ``headers``: the record's headers. ``key`` (or
        ``ordering_key``): the record's key. ``partition``: a partition of its own
        choosing instead of the key's. ``delay``/``at``: refused (ConfigurationError):
        Kafka has no delayed delivery.
        """
        check_delay(delay, at, what="KafkaPublisher", refused=_NO_DELAY)
        name = self._topic(topic)
        with publish_span(SYSTEM, name, headers) as sent:
            value, pairs = self._record(body, sent)
            producer = await self._open()
            with map_exceptions(lambda exc: self._error(f"producing to {name!r}", exc)):
                future = await producer.send(
                    name, value, key=_key(key or ordering_key), headers=pairs, partition=partition
                )
                async with asyncio.timeout(self.timeout):
                    await future

    async def publish_many(
        self,
        bodies: Iterable[Any],
        *,
        headers: Mapping[str, Any] | None = None,
        topic: str | None = None,
        key: str | bytes | None = None,
        ordering_key: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
    ) -> int:
        """Produce many records (pipelined) and wait for every acknowledgement; return
        how many were stored. Raises the first failure (others may be stored). Traced as
        one producer span for the batch. ``delay``/``at``: refused, as in
        :meth:`publish`."""
        check_delay(delay, at, what="KafkaPublisher", refused=_NO_DELAY)
        name = self._topic(topic)
        count = len(bodies) if isinstance(bodies, Sized) else None
        with publish_span(SYSTEM, name, headers, count=count) as sent:
            records = [self._record(body, sent) for body in bodies]
            producer = await self._open()
            raw_key = _key(key or ordering_key)
            with map_exceptions(lambda exc: self._error(f"producing to {name!r}", exc)):
                futures = [
                    await producer.send(name, value, key=raw_key, headers=pairs)
                    for value, pairs in records
                ]
                async with asyncio.timeout(self.timeout):
                    await asyncio.gather(*futures)
            return len(records)

    async def close(self) -> None:
        """Wait (up to ``close_timeout``) for sends under way, disconnect. Idempotent."""
        self._closed = True
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            async with asyncio.timeout(float(self.settings.timeouts.close)):
                await producer.flush()
        except Exception:  # a cancellation passes through
            pass
        finally:
            await producer.stop()
