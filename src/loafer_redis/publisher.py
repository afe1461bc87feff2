"""Publishing to a Redis stream: ``XADD``, pipelined for batches."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sized
from datetime import datetime
from typing import Any, ClassVar

import redis.asyncio

from loafer_core import kit
from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.ext.otel import MESSAGE_ID, publish_span
from loafer_core.kit import DelayedPublish, check_delay, map_exceptions
from loafer_core.provider import Description, Support
from loafer_core.typed import encode
from loafer_redis import _describe, _scheduled
from loafer_redis._connection import open_client
from loafer_redis.errors import mask_url, operation_error, protect, publish_error
from loafer_redis.settings import RedisPublisherSettings, settings_from

__all__ = ["RedisPublisher"]

#: ``messaging.system`` of the producer spans (what the tracing middleware names a
#: ``loafer_redis`` route's consumer spans by).
SYSTEM = "redis"


def _encode(body: Any) -> bytes:
    return kit.encode_body(body, "RedisPublisher")


def _field(name: str, value: Any) -> bytes | str | int | float:
    if isinstance(value, bytes | str | int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    raise ConfigurationError(
        f"RedisPublisher: header {name!r} is a {type(value).__name__}; stream fields hold "
        "str, bytes, int or float"
    )


class RedisPublisher:
    """Add messages to a Redis stream (``XADD``), the body in one field and each header
    in a field of its own.

    ``publish`` returns the new entry's id once Redis has it; ``publish_many`` sends a
    batch pipelined (``pipeline`` commands per round trip, no transaction) and returns
    how many were added. A failure raises :class:`~loafer_core.errors.ProviderError`
    (in ``publish_many``, the earlier windows were added: publishing them again
    duplicates them).

    Takes one :class:`~loafer_redis.settings.RedisPublisherSettings`, or the same values
    as flat keywords (``RedisPublisher("orders", url=..., maxlen=1000)``): the stream, the
    connection (``url``: the password is masked), the timeouts (``connect``, ``call``),
    trimming (``maxlen``, ``approximate``), the body field, ``pipeline``, the pool's size
    and ``type_header``, documented there. ``settings`` holds them; ``stream``,
    ``maxlen``, ``approximate``, ``body_field``, ``pipeline`` and ``type_header`` are
    read from them.

    Typed objects (a pydantic model, a dataclass, a msgspec Struct,
    :class:`~loafer_core.typed.Typed`) are added as JSON with their type in the
    ``type_header`` field (:func:`~loafer_core.typed.encode`), so that
    ``Handlers(discriminator=header("type"))`` takes them on their typed handlers. Each
    publish (and each ``publish_many`` batch) is traced when the process uses
    OpenTelemetry (:mod:`loafer_core.ext.otel`: a producer span, its W3C context in the
    entry's header fields).

    ``delay=`` (seconds) or ``at=`` (an aware datetime) holds a message back: it waits
    in the sorted set ``<stream>:scheduled`` and is added to the stream when due, by
    this publisher while it runs and by every :class:`~loafer_redis.RedisProvider` of the
    stream (``docs/scheduling.md``).

    Use it as ``async with RedisPublisher("orders", url=...) as publisher:`` or call
    :meth:`close` when done (it connects on first use).
    """

    settings_type = RedisPublisherSettings
    #: Delayed publish (``delay=`` / ``at=``): emulated, a sorted set beside the stream
    #: and a Lua mover (run by the publisher and by the stream's providers).
    delay_support: ClassVar[Support] = Support.EMULATED
    #: The longest delay a publish may ask for (None: no limit).
    max_delay: ClassVar[float | None] = None

    def __init__(
        self, settings: RedisPublisherSettings | str | None = None, /, **options: Any
    ) -> None:
        self.settings = settings = settings_from(
            RedisPublisherSettings, "RedisPublisher", settings, options
        )
        protect(settings.connection.url)
        self.stream = settings.stream
        self._url = settings.connection.url
        self.maxlen = settings.trimming.maxlen
        self.approximate = bool(settings.trimming.approximate)
        self.body_field = settings.body_field
        self.pipeline = settings.pipeline
        self.type_header = settings.type_header
        self._socket_timeout = float(settings.timeouts.call)
        self._connect_timeout = float(settings.timeouts.connect)
        self._max_connections = settings.max_connections
        self._connection_options = dict(settings.connection.options or {})
        self._client: redis.asyncio.Redis | None = None
        self._mover: _scheduled.Mover | None = None
        self._closed = False
        # the start of every XADD: key, trimming, id
        head: list[Any] = ["XADD", self.stream]
        if self.maxlen is not None:
            head += ["MAXLEN", "~" if self.approximate else "=", self.maxlen]
        head.append("*")
        self._head = tuple(head)

    def description(self) -> Description:
        """The stream, the server (no secret): see
        :class:`~loafer_core.provider.Describable`."""
        return _describe.publisher(mask_url(self._url), self.stream, self.maxlen)

    def __repr__(self) -> str:
        return f"RedisPublisher(stream={self.stream!r}, url={mask_url(self._url)!r})"

    async def __aenter__(self) -> RedisPublisher:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _ensure(self) -> redis.asyncio.Redis:
        client = self._client
        if client is None:
            if self._closed:
                raise ProviderError(
                    f"RedisPublisher to {mask_url(self._url)}: closed (start() opens it again)"
                )
            client = self._client = open_client(
                self._url,
                socket_timeout=self._socket_timeout,
                connect_timeout=self._connect_timeout,
                max_connections=self._max_connections,
                options=self._connection_options,
            )
        return client

    async def start(self) -> None:
        """Open it now (else the first publish does): the publisher lifecycle shared by
        every plugin, ``start()`` then ``close()``; the same as :meth:`connect`."""
        await self.connect()

    async def connect(self) -> None:
        """Connect and check Redis answers (a PING); done on first publish otherwise
        (after ``close()``, only this, or :meth:`start`, opens it again)."""
        self._closed = False
        client = self._ensure()
        with map_exceptions(lambda exc: operation_error("connecting", exc, self._url)):
            async with asyncio.timeout(self._connect_timeout + self._socket_timeout):
                await client.ping()

    def _typed(
        self, body: Any, headers: Mapping[str, Any] | None
    ) -> tuple[bytes, Mapping[str, Any] | None]:
        """The body's bytes and its headers: a typed object's type header under the
        caller's ``headers`` (which win), else ``headers`` as they are."""
        if type(body) is bytes:  # the usual body: no further look
            return body, headers
        encoded = encode(body, header=self.type_header)
        if encoded is None:
            return _encode(body), headers
        if not encoded.headers:
            return encoded.body, headers
        return encoded.body, {**encoded.headers, **headers} if headers else encoded.headers

    def _fields(self, headers: Mapping[str, Any] | None) -> tuple[Any, ...]:
        """The header fields of an ``XADD`` (name, value, ...), checked."""
        if not headers:
            return ()
        args: list[Any] = []
        for name, value in headers.items():
            if name == self.body_field:
                raise ConfigurationError(
                    f"RedisPublisher: header {name!r} would overwrite the body field"
                )
            args += (name, _field(name, value))
        return tuple(args)

    def _head_for(self, stream: str | None) -> tuple[Any, ...]:
        return self._head if stream is None else (self._head[0], stream, *self._head[2:])

    def command(
        self, body: Any, headers: Mapping[str, Any] | None = None, stream: str | None = None
    ) -> tuple[Any, ...]:
        """The ``XADD`` command (as arguments) ``publish`` would send (untraced)."""
        data, headers = self._typed(body, headers)
        return (*self._head_for(stream), self.body_field, data, *self._fields(headers))

    async def publish(
        self,
        body: Any,
        *,
        headers: Mapping[str, Any] | None = None,
        stream: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
        **options: Any,
    ) -> str:
        """Add one message; return its entry id (a delayed one: ``scheduled:`` and its
        member's prefix, the entry id being known only when it is added).

        ``body``: bytes, str (UTF-8), a typed object (JSON, its type in ``type_header``)
        or a JSON-serialisable object; ``headers``: str, bytes, int or float values, one
        field each; ``stream``: another stream than the publisher's; ``delay`` (seconds)
        or ``at`` (an aware datetime): added no earlier, through ``<stream>:scheduled``.
        Traced as a producer span (``publish <stream>``, the entry id as
        ``messaging.message.id``).
        """
        if options:
            raise ConfigurationError(
                f"RedisPublisher.publish: unknown option(s) {sorted(options)}; it takes "
                "headers=, stream=, delay= and at="
            )
        data, headers = self._typed(body, headers)
        target = stream or self.stream
        scheduled = check_delay(delay, at, what=f"RedisPublisher to {target!r}")
        span = publish_span(SYSTEM, target, headers)
        with span as sent:
            args = (*self._head_for(stream), self.body_field, data, *self._fields(sent))
            if scheduled is not None:
                return await self._schedule(target, [args], scheduled)
            client = self._ensure()
            with map_exceptions(
                lambda exc: publish_error(f"adding to stream {target!r}", exc, self._url)
            ):
                async with asyncio.timeout(self._socket_timeout):
                    entry_id = await client.execute_command(*args)  # type: ignore[no-untyped-call]
            text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            recording = getattr(span, "span", None)  # a producer span: name the entry
            if recording is not None:
                recording.set_attribute(MESSAGE_ID, text)
        return text

    async def publish_many(
        self,
        bodies: Iterable[Any],
        *,
        headers: Mapping[str, Any] | None = None,
        stream: str | None = None,
        delay: float | None = None,
        at: datetime | None = None,
    ) -> int:
        """Add many messages, ``pipeline`` per round trip; return how many were added
        (``delay``/``at`` as :meth:`publish`: scheduled, ``pipeline`` per script call).

        Traced as one producer span for the whole batch (its context in every entry;
        ``messaging.batch.message_count`` when ``bodies`` has a length)."""
        target = stream or self.stream
        scheduled = check_delay(delay, at, what=f"RedisPublisher to {target!r}")
        count = len(bodies) if isinstance(bodies, Sized) else None
        with publish_span(SYSTEM, target, headers, count=count) as sent:
            if scheduled is None:
                return await self._publish_many(bodies, sent, stream)
            added = 0
            batch: list[tuple[Any, ...]] = []
            for body in bodies:
                batch.append(self.command(body, sent, stream))
                if len(batch) >= self.pipeline:
                    await self._schedule(target, batch, scheduled)
                    added, batch = added + len(batch), []
            if batch:
                await self._schedule(target, batch, scheduled)
            return added + len(batch)

    async def _schedule(
        self, target: str, commands: list[tuple[Any, ...]], scheduled: DelayedPublish
    ) -> str:
        """Add ``commands`` (whole ``XADD`` commands) to ``target``'s scheduled set, due after
        the delay; return the first member's prefix as ``scheduled:<prefix>``."""
        client = self._ensure()
        members = [_scheduled.pack(args[2:]) for args in commands]
        what = f"scheduling {len(members)} entries for stream {target!r}"
        with map_exceptions(lambda exc: publish_error(what, exc, self._url)):
            async with asyncio.timeout(self._socket_timeout + len(members) / 1000):
                await client.eval(
                    _scheduled.SCHEDULE,
                    1,
                    _scheduled.key_of(target),
                    scheduled.milliseconds,
                    *members,
                )
        if self._mover is None:
            self._mover = _scheduled.Mover(
                client, what=repr(self), url=self._url, keep_polling=False
            )
        self._mover.watch(target)
        return f"scheduled:{members[0][:32].decode()}"

    async def _publish_many(
        self, bodies: Iterable[Any], headers: Mapping[str, Any] | None, stream: str | None
    ) -> int:
        client = self._ensure()
        size = self.pipeline
        head = (*self._head_for(stream), self.body_field)
        fields = self._fields(headers)  # the same for every entry but a typed one
        typed, merged = self._typed, self._fields
        added = 0
        batch: list[tuple[Any, ...]] = []
        for body in bodies:
            if type(body) is bytes:  # the usual body: no further look
                batch.append((*head, body, *fields))
            else:
                data, own = typed(body, headers)
                batch.append((*head, data, *(fields if own is headers else merged(own))))
            if len(batch) >= size:
                added += await self._send(client, batch, stream)
                batch = []
        if batch:
            added += await self._send(client, batch, stream)
        return added

    async def _send(
        self, client: redis.asyncio.Redis, batch: list[tuple[Any, ...]], stream: str | None
    ) -> int:
        pipe = client.pipeline(transaction=False)
        for args in batch:
            pipe.execute_command(*args)
        what = f"adding {len(batch)} entries to stream {stream or self.stream!r}"
        with map_exceptions(lambda exc: publish_error(what, exc, self._url)):
            async with asyncio.timeout(self._socket_timeout + len(batch) / 1000):
                results = await pipe.execute(raise_on_error=True)
        return len(results)

    async def close(self) -> None:
        """Disconnect. Idempotent; a later publish raises ProviderError (until
        :meth:`start` opens it again)."""
        self._closed = True
        mover, self._mover = self._mover, None
        if mover is not None:
            await mover.stop(self._socket_timeout)
        client, self._client = self._client, None
        if client is not None:
            try:
                async with asyncio.timeout(self._socket_timeout):
                    await client.aclose(close_connection_pool=True)
            except Exception:  # a cancellation passes through
                return
