"""Publishing to a Pub/Sub topic: ``publish`` returns once the service has answered with
the message's id (its confirm). Concurrent publishes to a topic share calls (up to
``max_batch`` messages, 9 MB); messages with an ordering key are sent one call at a time
per key, in the order ``publish`` was called."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence, Sized
from datetime import datetime
from typing import Any, ClassVar

from loafer_core import kit
from loafer_core.errors import ConfigurationError, LoaferError, ProviderError, PublishRefused
from loafer_core.ext.otel import publish_span
from loafer_core.kit import Batcher, Batching, Failure, check_delay, map_exceptions
from loafer_core.provider import Description, Support
from loafer_core.settings import settings_of
from loafer_core.typed import encode
from loafer_pubsub import _describe
from loafer_pubsub._api import Api, api_root, encode_message, secrets_of
from loafer_pubsub.errors import ApiError, mask_url, protect, scrub, translate
from loafer_pubsub.settings import PubSubPublisherSettings

__all__ = ["MAX_MESSAGE", "PubSubPublisher", "encode_body"]

#: ``messaging.system`` of the spans (the semantic conventions' name for Pub/Sub).
SYSTEM = "gcp_pubsub"
#: Pub/Sub's largest message (data and attributes), bytes.
MAX_MESSAGE = 10_000_000
#: The most one publish call carries, bytes (the request limit is 10 MB, base64 counted).
MAX_CALL = 9_000_000
#: Publish calls of one ``publish_many`` in flight at once.
CONCURRENT_CALLS = 4


def encode_body(body: Any, owner: str = "PubSubPublisher") -> bytes:
    """Bytes pass through; ``str`` is UTF-8 text; anything else is encoded as JSON
    (:func:`loafer_core.kit.encode_body`)."""
    return kit.encode_body(body, owner)


def _weight(message: Mapping[str, Any]) -> int:
    attributes = message.get("attributes") or {}
    return len(message["data"]) + sum(len(k) + len(v) + 8 for k, v in attributes.items()) + 64


_NO_DELAY = (
    "Google Cloud Pub/Sub delivers at once (no per-message delay); publish later, or "
    "use a subscription's retry policy for delays after a failure"
)


class PubSubPublisher:
    """Publish messages to a Pub/Sub topic and wait for the service's message ids.

    Takes one :class:`~loafer_pubsub.settings.PubSubPublisherSettings` (its docstring
    lists the settings), or the same values as flat keywords: ``topic`` (also
    positional), ``project``, ``max_batch``, ``linger``, ``type_header``,
    ``emulator_host``, ``api_root``, ``service_file``, ``timeout``, ``close_timeout``.

    A message the service refuses (too large, an invalid attribute, a missing topic)
    raises :class:`~loafer_core.errors.PublishRefused`; an unreachable service or a call
    without an answer raises :class:`~loafer_core.errors.ProviderError` (the message may
    or may not be stored). Headers are the message's attributes (string values). Typed
    objects are published as JSON with their type in the ``type_header`` attribute; each
    publish is traced when the process uses OpenTelemetry (its W3C context in the
    attributes).

    Use it as ``async with PubSubPublisher("orders", project="shop") as publisher:`` or
    call :meth:`start` and :meth:`close`.
    """

    settings_type = PubSubPublisherSettings
    #: Delayed publish: none (Pub/Sub delivers at once; ``delay=``/``at=`` raise
    #: ConfigurationError).
    delay_support: ClassVar[Support] = Support.NONE
    max_delay: ClassVar[float | None] = None

    def __init__(
        self, settings: PubSubPublisherSettings | str | None = None, /, **options: Any
    ) -> None:
        self.settings = settings_of(PubSubPublisherSettings, "PubSubPublisher", settings, options)
        s = self.settings
        self.topic = s.topic
        self.project = s.project
        self.type_header = s.type_header
        self.timeout = float(s.timeouts.publish)
        self._root, self._emulator = api_root(s.endpoint)
        self._api: Api | None = None
        self._secrets: tuple[str, ...] = ()
        self._batchers: dict[str, Batcher[dict[str, Any]]] = {}
        self._keys: dict[tuple[str, str], asyncio.Lock] = {}
        self._closed = False

    def description(self) -> Description:
        """The topic, the API's host (no credentials): see
        :class:`~loafer_core.provider.Describable`."""
        binding = _describe.bindings(self.settings.schema, self.settings.schema_encoding)
        return _describe.publisher(mask_url(self._root), self._emulator, self.topic, binding)

    def __repr__(self) -> str:
        return f"PubSubPublisher(topic={self.topic!r}, project={self.project!r})"

    async def __aenter__(self) -> PubSubPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open it now (else the first publish does; after ``close()``, only this opens
        it again). The API is stateless HTTP: nothing is checked here."""
        self._closed = False
        self._open()

    def _open(self) -> Api:
        if self._closed:
            raise ProviderError(
                f"PubSubPublisher to {self.topic!r}: closed (start() opens it again)"
            )
        if self._api is None:
            self._secrets = secrets_of(self.settings.endpoint)
            protect(self._secrets)
            self._api = Api(self.settings.endpoint, self.project)
        return self._api

    def _topic_path(self, topic: str | None) -> str:
        chosen = topic if topic is not None else self.topic
        if not chosen:
            raise ConfigurationError(
                "PubSubPublisher: no topic; pass topic=... to the publisher or to publish()"
            )
        return f"projects/{self.project}/topics/{chosen}"

    def _message(
        self, body: Any, headers: Mapping[str, Any] | None, ordering_key: str | None
    ) -> dict[str, Any]:
        attributes = {str(k): str(v) for k, v in (headers or {}).items()}
        if type(body) is bytes:
            data = body
        else:
            encoded = encode(body, header=self.type_header)
            if encoded is None:
                data = encode_body(body)
            else:
                data = encoded.body
                attributes = {**(encoded.headers or {}), **attributes}
        if len(data) > MAX_MESSAGE:
            raise PublishRefused(
                f"PubSubPublisher: a {len(data)}-byte body exceeds Pub/Sub's message limit "
                f"of {MAX_MESSAGE} bytes; store large payloads elsewhere and publish a reference"
            )
        if not data and not attributes:
            raise PublishRefused(
                "PubSubPublisher: Pub/Sub refuses a message with neither data nor attributes"
            )
        return encode_message(data, attributes, ordering_key)

    def _error(self, what: str, exc: BaseException) -> LoaferError:
        return translate(
            what, exc, where=mask_url(self._root), secrets=self._secrets, publishing=True
        )

    async def publish(
        self,
        body: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        topic: str | None = None,
        ordering_key: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
    ) -> None:
        """Publish one message and wait for its message id.

        ``body``: bytes, str (UTF-8), a typed object (JSON, its type in ``type_header``)
        or a JSON-serialisable object. ``headers``: the attributes (string values).
        ``ordering_key``: Pub/Sub's ordering key (messages of one key, published one
        after another, are delivered in order to subscriptions with message ordering).
        ``delay``/``at``: refused (ConfigurationError): Pub/Sub has no delayed delivery.
        """
        check_delay(delay, at, what="PubSubPublisher", refused=_NO_DELAY)
        path = self._topic_path(topic)
        with publish_span(SYSTEM, path.rsplit("/", 1)[-1], headers) as sent:
            message = self._message(body, sent, ordering_key)
            api = self._open()
            if ordering_key:
                await self._send_in_order(api, path, ordering_key, [message])
                return
            await asyncio.shield(self._batcher(path).submit(message))

    async def publish_many(
        self,
        bodies: Iterable[Any],
        *,
        headers: Mapping[str, Any] | None = None,
        topic: str | None = None,
        ordering_key: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
    ) -> int:
        """Publish many messages (calls of up to ``max_batch``); return how many were
        stored. Raises the first failure (others may be stored: publishing them again may
        duplicate them). Traced as one producer span for the batch. ``delay``/``at``:
        refused, as in :meth:`publish`."""
        check_delay(delay, at, what="PubSubPublisher", refused=_NO_DELAY)
        path = self._topic_path(topic)
        count = len(bodies) if isinstance(bodies, Sized) else None
        with publish_span(SYSTEM, path.rsplit("/", 1)[-1], headers, count=count) as sent:
            messages = [self._message(body, sent, ordering_key) for body in bodies]
            api = self._open()
            if ordering_key:
                await self._send_in_order(api, path, ordering_key, messages)
            else:
                await self._send_chunks(api, path, messages)
            return len(messages)

    async def _send_chunks(self, api: Api, path: str, messages: Sequence[dict[str, Any]]) -> None:
        """Calls of up to ``max_batch`` messages (and 9 MB), :data:`CONCURRENT_CALLS` at a
        time; the first failure is raised once its window has finished."""
        chunks: list[list[dict[str, Any]]] = [[]]
        weight = 0
        for message in messages:
            size = _weight(message)
            if chunks[-1] and (
                len(chunks[-1]) >= self.settings.max_batch or weight + size > MAX_CALL
            ):
                chunks.append([])
                weight = 0
            chunks[-1].append(message)
            weight += size
        for start in range(0, len(chunks), CONCURRENT_CALLS):
            window = chunks[start : start + CONCURRENT_CALLS]
            results = await asyncio.gather(
                *(api.publish(path, chunk, self.timeout) for chunk in window if chunk),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, Exception):
                    raise self._error(f"publishing to {path!r}", result) from None
                if isinstance(result, BaseException):
                    raise result

    async def _send_in_order(
        self, api: Api, path: str, key: str, messages: Sequence[dict[str, Any]]
    ) -> None:
        lock = self._keys.setdefault((path, key), asyncio.Lock())
        async with lock:  # FIFO: one call at a time per key, in publish order
            step = self.settings.max_batch
            for start in range(0, len(messages), step):
                with map_exceptions(lambda exc: self._error(f"publishing to {path!r}", exc)):
                    await api.publish(path, messages[start : start + step], self.timeout)

    def _batcher(self, path: str) -> Batcher[dict[str, Any]]:
        batcher = self._batchers.get(path)
        if batcher is None:
            batcher = Batcher(
                f"PubSubPublisher to {path!r}",
                lambda messages: self._send(path, messages),
                describe=lambda message: f"a message to {path!r}",
                batching=Batching(
                    linger=self.settings.linger,
                    max_batch=self.settings.max_batch,
                    max_weight=MAX_CALL,
                    attempts=3,
                ),
                weigh=_weight,
                error_type=ProviderError,
                refused_type=PublishRefused,
                classify=self._classify,
                scrub=lambda exc: scrub(str(exc), self._secrets),
            )
            self._batchers[path] = batcher
        return batcher

    def _classify(self, exc: Exception) -> Failure | None:
        error = self._error("publishing", exc)
        if isinstance(error, PublishRefused | ConfigurationError):
            return Failure(str(error), retry=False, refused=True)
        return None

    async def _send(self, path: str, messages: Sequence[dict[str, Any]]) -> dict[int, Failure]:
        api = self._api
        if api is None:
            return dict.fromkeys(range(len(messages)), Failure("closed", retry=False))
        try:
            await api.publish(path, messages, self.timeout)
        except ApiError as exc:
            if exc.status != 400 or len(messages) == 1:
                raise
            # one message the service refuses fails the whole call: send each alone
            failures: dict[int, Failure] = {}
            for index, message in enumerate(messages):
                try:
                    await api.publish(path, [message], self.timeout)
                except Exception as one:  # a cancellation passes through
                    failure = self._classify(one)
                    failures[index] = failure or Failure(scrub(str(one), self._secrets), True)
            return failures
        return {}

    async def close(self) -> None:
        """Wait (up to ``close_timeout``) for publishes under way, close the HTTP session.
        Idempotent."""
        self._closed = True
        batchers, self._batchers = list(self._batchers.values()), {}
        try:
            async with asyncio.timeout(float(self.settings.timeouts.close)):
                for batcher in batchers:
                    await batcher.flush()
        except TimeoutError:
            for batcher in batchers:
                _, tasks = batcher.abort()
                await asyncio.gather(*tasks, return_exceptions=True)
        api, self._api = self._api, None
        if api is not None:
            await api.close()
