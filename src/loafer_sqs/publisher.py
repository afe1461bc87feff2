"""Publishers: ``SQSPublisher`` (SendMessageBatch) and ``SNSPublisher`` (PublishBatch).

Both keep one long-lived client, gather messages for a short linger into batches of at
most 10, retry per-entry failures that can succeed later, and raise
:class:`~loafer_core.errors.ProviderError` to the caller of :meth:`publish` for an entry
that still fails. Use them as async context managers, or call :meth:`close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from loafer_core.errors import ConfigurationError, ProviderError, PublishRefused
from loafer_core.ext.otel import publish_span
from loafer_core.kit import check_delay
from loafer_core.provider import Description, Support
from loafer_core.typed import encode
from loafer_sqs import _closing, _describe
from loafer_sqs._batch import Batcher, Failure, failures_in, refusal
from loafer_sqs._client import open_client
from loafer_sqs.errors import cause, is_missing_queue, protect, translate_error
from loafer_sqs.settings import SNSPublisherSettings, SQSPublisherSettings, settings_of

__all__ = ["SNSPublisher", "SQSPublisher", "encode_body", "message_attributes"]

logger = logging.getLogger("loafer_sqs")

#: SQS's longest ``DelaySeconds``: 15 minutes.
MAX_DELAY = 900.0


def encode_body(body: Any, encoder: Callable[[Any], str] = json.dumps) -> str:
    """The text SQS/SNS carries: ``str`` as is, UTF-8 ``bytes`` decoded, else ``encoder``.

    SQS bodies are text: bytes that are not UTF-8 raise ``ValueError`` (base64-encode
    binary payloads, or send them as a binary message attribute).
    """
    if isinstance(body, str):
        text = body
    elif isinstance(body, bytes | bytearray | memoryview):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                "SQS/SNS message bodies are text; these bytes are not UTF-8 "
                "(base64-encode binary payloads)"
            ) from exc
    else:
        text = encoder(body)
    if not text:
        raise ValueError("SQS/SNS message bodies must not be empty")
    return text


#: Message attributes SQS takes per message (and SNS delivers to SQS).
MAX_ATTRIBUTES = 10


def _with_trace(
    attributes: dict[str, Any], headers: Mapping[str, Any] | None, sent: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``attributes`` plus the trace context the producer span added to ``headers``
    (``sent``), when they fit in SQS's 10 attributes: a message that already has 10 is
    sent untraced rather than refused."""
    if sent is None or sent is headers:
        return attributes
    added = {k: v for k, v in sent.items() if headers is None or k not in headers}
    if added and len(attributes) + len(added) <= MAX_ATTRIBUTES:
        attributes.update(message_attributes(added))
    return attributes


def message_attributes(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Headers -> SQS/SNS message attributes (str -> String, numbers -> Number, bytes ->
    Binary; a dict already in the ``{"DataType": ...}`` form passes through)."""
    attributes: dict[str, Any] = {}
    for name, value in (headers or {}).items():
        if isinstance(value, Mapping) and "DataType" in value:
            attributes[name] = dict(value)
        elif isinstance(value, bytes | bytearray):
            attributes[name] = {"DataType": "Binary", "BinaryValue": bytes(value)}
        elif isinstance(value, bool):
            attributes[name] = {"DataType": "String", "StringValue": str(value).lower()}
        elif isinstance(value, int | float):
            attributes[name] = {"DataType": "Number", "StringValue": repr(value)}
        else:
            attributes[name] = {"DataType": "String", "StringValue": str(value)}
    return attributes


@dataclass(eq=False, slots=True)
class _Entry:
    target: str
    body: str
    attributes: dict[str, Any]
    group_id: str | None
    deduplication_id: str | None
    delay: int | None = None
    subject: str | None = None


def _weigh(entry: _Entry) -> int:
    return len(entry.body.encode("utf-8")) + len(repr(entry.attributes))


class _BasePublisher:
    _service = "sqs"

    def _configure(self, settings: SQSPublisherSettings | SNSPublisherSettings) -> None:
        """The settings as the attributes the publisher reads, and its empty state."""
        self.type_header = settings.type_header
        self._close_timeout = float(settings.close_timeout)
        self._client_options = settings.client
        protect()  # botocore's loggers get their filter before anything logs
        self._linger = settings.linger
        self._encoder = settings.encoder
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()
        self._batchers: dict[str, Batcher[_Entry]] = {}
        self._targets: dict[str, str] = {}
        self._closed = False

    async def __aenter__(self) -> Any:
        await self._ensure_client()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the client now (else the first publish does): the publisher lifecycle
        shared by every plugin, ``start()`` then ``close()``."""
        await self._ensure_client()

    async def _ensure_client(self) -> Any:
        if self._closed:
            raise ProviderError(f"{type(self).__name__} is closed")
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    stack = contextlib.AsyncExitStack()
                    client = await open_client(
                        self._service, self._client_options, stack, max_pool_connections=16
                    )
                    if self._closed:  # close() came while the client opened
                        await _closing.release([], stack, self._service.upper())
                        raise ProviderError(f"{type(self).__name__} is closed")
                    self._client, self._stack = client, stack
        return self._client

    def _typed(
        self, body: Any, headers: Mapping[str, Any] | None
    ) -> tuple[Any, Mapping[str, Any] | None]:
        """A typed object's JSON text and its type header; other bodies as given."""
        encoded = encode(body, header=self.type_header)
        if encoded is None:
            return body, headers
        merged = {**encoded.headers, **headers} if headers else encoded.headers
        return encoded.body.decode("utf-8"), merged

    def _batcher(self, target: str) -> Batcher[_Entry]:
        batcher = self._batchers.get(target)
        if batcher is None:
            batcher = Batcher(
                f"publishing to {target}",
                self._send,
                describe=lambda e: f"a message to {e.target}",
                linger=self._linger,
                error_type=ProviderError,
                refused_type=PublishRefused,
                classify=refusal,
                weigh=_weigh,
            )
            self._batchers[target] = batcher
        return batcher

    async def _send(self, entries: Sequence[_Entry]) -> dict[int, Failure]:
        raise NotImplementedError

    async def _publish(self, entry: _Entry) -> None:
        await asyncio.shield(self._batcher(entry.target).submit(entry))

    async def flush(self) -> None:
        """Wait until everything published so far is sent."""
        for batcher in list(self._batchers.values()):
            await batcher.flush()

    async def close(self, timeout: float | None = None) -> None:
        """Send what is queued and close the client. Idempotent.

        Takes at most ``timeout`` or ``close_timeout`` seconds, whichever is shorter;
        past that (or when cancelled by its caller), the messages still unsent are given
        up: their ``publish()`` raises :class:`ProviderError`. The client, its
        connections and its tasks are released either way.
        """
        if self._closed:
            return
        self._closed = True
        bound = _closing.budget(self._close_timeout, timeout)
        try:
            async with asyncio.timeout(bound):
                for batcher in list(self._batchers.values()):
                    await batcher.flush()
        except TimeoutError:
            logger.warning(
                "closing the %s publisher took longer than %.1fs: giving up", self._service, bound
            )
        finally:
            tasks: list[asyncio.Task[None]] = []
            for batcher in self._batchers.values():
                tasks.extend(batcher.abort()[1])
            stack, self._stack = self._stack, None
            self._client = None
            await _closing.release(tasks, stack, self._service.upper())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(client={self._client_options!r})"


class SQSPublisher(_BasePublisher):
    """Publish to SQS queues with ``SendMessageBatch`` (10 per call, short linger).

    Takes one :class:`~loafer_sqs.settings.SQSPublisherSettings` (its docstring lists
    the settings), or the same values as flat keywords: ``SQSPublisher(queue=None, *,
    linger=0.02, encoder=json.dumps, close_timeout=10.0, type_header="type",
    **client_options)``, the client options as :class:`~loafer_sqs.SQSProvider`'s
    (``region_name``, ``endpoint_url``, credentials...).

    Typed objects (a pydantic model, a dataclass, a msgspec Struct,
    :class:`~loafer_core.typed.Typed`) are sent as JSON with their type in the
    ``type_header`` attribute (:func:`~loafer_core.typed.encode`). Each publish is
    traced when the process uses OpenTelemetry (:mod:`loafer_core.ext.otel`: a producer
    span, its context in the message attributes).
    """

    _service = "sqs"
    settings_type = SQSPublisherSettings
    #: Delayed publish (``delay=`` / ``at=``): native, ``DelaySeconds`` (standard queues;
    #: a FIFO queue refuses a per-message delay: its own ``DelaySeconds`` applies).
    delay_support: ClassVar[Support] = Support.NATIVE
    #: SQS holds a message back 15 minutes at most.
    max_delay: ClassVar[float | None] = MAX_DELAY

    def __init__(
        self, settings: SQSPublisherSettings | str | None = None, /, **options: Any
    ) -> None:
        self.settings = settings_of(SQSPublisherSettings, "SQSPublisher", settings, options)
        self._configure(self.settings)
        self.queue = self.settings.queue

    def description(self) -> Description:
        """The queue, the endpoint (no credential) and the AsyncAPI bindings: see
        :class:`~loafer_core.provider.Describable`."""
        return _describe.sqs_publisher(self.queue, self._client_options)

    async def _url(self, queue: str) -> str:
        if queue.startswith(("http://", "https://")):
            return queue
        url = self._targets.get(queue)
        if url is None:
            client = await self._ensure_client()
            try:
                response = await client.get_queue_url(QueueName=queue)
            except Exception as exc:
                if is_missing_queue(exc):
                    raise ConfigurationError(f"SQS queue {queue!r} does not exist") from cause(exc)
                raise translate_error(exc, f"looking up queue {queue!r}") from cause(exc)
            url = str(response["QueueUrl"])
            self._targets[queue] = url
        return url

    async def publish(
        self,
        body: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        queue: str | None = None,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        **options: Any,
    ) -> None:
        """Send one message; returns once SQS has it.

        ``headers`` become message attributes. On FIFO queues ``group_id`` is required
        and ``deduplication_id`` defaults to a fresh UUID (pass ``content_based=True``
        to leave it to the queue's content-based deduplication). ``delay`` (seconds) or
        ``at`` (an aware datetime) is ``DelaySeconds``, rounded up to whole seconds, at
        most 900 (15 minutes); standard queues only (a FIFO queue refuses it: a
        ConfigurationError).
        """
        unknown = sorted(options.keys() - {"content_based", "message_attributes"})
        if unknown:
            raise ConfigurationError(
                f"unknown publish option(s) {unknown}; see SQSPublisher.publish's arguments"
            )
        target = queue or self.queue
        if not target:
            raise ConfigurationError("SQSPublisher.publish needs a queue (queue=...)")
        body, headers = self._typed(body, headers)
        text = encode_body(body, self._encoder)
        fifo = target.rstrip("/").endswith(".fifo")
        scheduled = check_delay(
            delay,
            at,
            what=f"SQSPublisher to {target!r}",
            maximum=MAX_DELAY,
            refused=_FIFO_DELAY if fifo else None,
        )
        if fifo:
            if not group_id:
                raise ConfigurationError(f"publishing to the FIFO queue {target!r} needs group_id")
            if deduplication_id is None and not options.get("content_based"):
                deduplication_id = uuid.uuid4().hex
        elif group_id is not None or deduplication_id is not None:
            raise ConfigurationError("group_id/deduplication_id are for FIFO queues (.fifo)")
        url = await self._url(target)
        await self._ensure_client()
        name = target.rstrip("/").rsplit("/", 1)[-1]
        attributes = message_attributes(headers)
        attributes.update(message_attributes(options.get("message_attributes")))
        with publish_span("aws_sqs", name, headers) as sent:
            attributes = _with_trace(attributes, headers, sent)
            seconds = None if scheduled is None else scheduled.seconds
            await self._publish(_Entry(url, text, attributes, group_id, deduplication_id, seconds))

    async def _send(self, entries: Sequence[_Entry]) -> dict[int, Failure]:
        batch: list[dict[str, Any]] = []
        for index, entry in enumerate(entries):
            item: dict[str, Any] = {"Id": str(index), "MessageBody": entry.body}
            if entry.attributes:
                item["MessageAttributes"] = entry.attributes
            if entry.group_id is not None:
                item["MessageGroupId"] = entry.group_id
            if entry.deduplication_id is not None:
                item["MessageDeduplicationId"] = entry.deduplication_id
            if entry.delay is not None:
                item["DelaySeconds"] = entry.delay
            batch.append(item)
        response = await self._client.send_message_batch(QueueUrl=entries[0].target, Entries=batch)
        return failures_in(response, len(entries))


_FIFO_DELAY = (
    "a FIFO queue takes no per-message delay (SQS refuses DelaySeconds on it); set the "
    "queue's DelaySeconds attribute, or publish to a standard queue"
)
_SNS_DELAY = (
    "SNS delivers at once; publish to the subscribed SQS queues with SQSPublisher(delay=...) "
    "or set DelaySeconds on those queues"
)


class SNSPublisher(_BasePublisher):
    """Publish to SNS topics with ``PublishBatch`` (10 per call, short linger).

    Takes one :class:`~loafer_sqs.settings.SNSPublisherSettings`, or the same values as
    flat keywords: ``SNSPublisher(topic=None, *, ...)``, ``topic`` the default topic ARN
    (or name, looked up with ``ListTopics``), the other keywords as
    :class:`SQSPublisher`'s.

    Typed objects and tracing as :class:`SQSPublisher` (the type and the
    trace context go in the SNS message attributes, which reach SQS subscribers as
    message attributes with raw delivery, in the envelope's ``MessageAttributes``
    without).
    """

    _service = "sns"
    settings_type = SNSPublisherSettings
    #: Delayed publish: none (SNS has no delay; ``delay=``/``at=`` raise
    #: ConfigurationError).
    delay_support: ClassVar[Support] = Support.NONE
    max_delay: ClassVar[float | None] = None

    def __init__(
        self, settings: SNSPublisherSettings | str | None = None, /, **options: Any
    ) -> None:
        self.settings = settings_of(SNSPublisherSettings, "SNSPublisher", settings, options)
        self._configure(self.settings)
        self.topic = self.settings.topic

    def description(self) -> Description:
        """The topic, the endpoint (no credential) and the AsyncAPI bindings: see
        :class:`~loafer_core.provider.Describable`."""
        return _describe.sns_publisher(self.topic, self._client_options)

    async def _arn(self, topic: str) -> str:
        if topic.startswith("arn:"):
            return topic
        arn = self._targets.get(topic)
        if arn is None:
            client = await self._ensure_client()
            try:
                paginator = client.get_paginator("list_topics")
                async for page in paginator.paginate():
                    for item in page.get("Topics", []):
                        if str(item["TopicArn"]).rsplit(":", 1)[-1] == topic:
                            arn = str(item["TopicArn"])
                            break
                    if arn:
                        break
            except Exception as exc:
                raise translate_error(exc, f"looking up topic {topic!r}") from cause(exc)
            if arn is None:
                raise ConfigurationError(f"SNS topic {topic!r} does not exist")
            self._targets[topic] = arn
        return arn

    async def publish(
        self,
        body: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        topic: str | None = None,
        subject: str | None = None,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        **options: Any,
    ) -> None:
        """Publish one message to the topic; returns once SNS has it. ``delay``/``at``
        are refused (ConfigurationError): SNS has no delay."""
        check_delay(delay, at, what="SNSPublisher", refused=_SNS_DELAY)
        if options:
            raise ConfigurationError(f"unknown publish option(s) {sorted(options)}")
        target = topic or self.topic
        if not target:
            raise ConfigurationError("SNSPublisher.publish needs a topic (topic=...)")
        body, headers = self._typed(body, headers)
        text = encode_body(body, self._encoder)
        arn = await self._arn(target)
        if arn.endswith(".fifo"):
            if not group_id:
                raise ConfigurationError(f"publishing to the FIFO topic {target!r} needs group_id")
            if deduplication_id is None:
                deduplication_id = uuid.uuid4().hex
        await self._ensure_client()
        with publish_span("aws_sns", arn.rsplit(":", 1)[-1], headers) as sent:
            attributes = _with_trace(message_attributes(headers), headers, sent)
            entry = _Entry(arn, text, attributes, group_id, deduplication_id)
            entry.subject = subject
            await self._publish(entry)

    async def _send(self, entries: Sequence[_Entry]) -> dict[int, Failure]:
        batch: list[dict[str, Any]] = []
        for index, entry in enumerate(entries):
            item: dict[str, Any] = {"Id": str(index), "Message": entry.body}
            if entry.attributes:
                item["MessageAttributes"] = entry.attributes
            if entry.subject is not None:
                item["Subject"] = entry.subject
            if entry.group_id is not None:
                item["MessageGroupId"] = entry.group_id
            if entry.deduplication_id is not None:
                item["MessageDeduplicationId"] = entry.deduplication_id
            batch.append(item)
        response = await self._client.publish_batch(
            TopicArn=entries[0].target, PublishBatchRequestEntries=batch
        )
        return failures_in(response, len(entries))
