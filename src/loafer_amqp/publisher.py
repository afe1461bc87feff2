"""AMQP 1.0 publisher: :class:`AMQPPublisher` sends and awaits the broker's outcome."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from proton import Delivery as ProtonDelivery
from proton import Message
from proton.reactor import AtLeastOnce, Container

from loafer_amqp._bridge import ConnectionSettings, ReactorClient, describe, logger, settings_from
from loafer_amqp.errors import PublishRefused
from loafer_amqp.settings import AMQPPublisherSettings
from loafer_core.errors import ProviderError
from loafer_core.ext.otel import publish_span
from loafer_core.kit import check_delay
from loafer_core.provider import Description, Support
from loafer_core.typed import encode

__all__ = ["AMQPPublisher"]

_SECTIONS = ("data", "value", "sequence")
_MESSAGE_OPTIONS = frozenset(
    {
        "message_id",
        "correlation_id",
        "subject",
        "content_type",
        "content_encoding",
        "reply_to",
        "group_id",
        "to",
        "ttl",
        "priority",
        "durable",
        "annotations",
        "body_section",
    }
)


def _build_message(body: Any, headers: Mapping[str, Any] | None, options: dict[str, Any]) -> Any:
    """Build a proton Message (reactor thread)."""
    section = options.get("body_section", "data")
    content_type = options.get("content_type")
    if section == "data":
        if isinstance(body, bytes | bytearray | memoryview):
            payload = bytes(body)
        elif isinstance(body, str):
            payload = body.encode("utf-8")
            # exactly text/plain (UTF-8): consumers such as FastStream match that exactly
            content_type = content_type or "text/plain"
        else:
            payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
            content_type = content_type or "application/json"
        message = Message(body=payload, inferred=True)
    elif section == "sequence":
        message = Message(body=list(body), inferred=True)
    else:
        message = Message(body=body, inferred=False)
    message.durable = bool(options.get("durable", True))
    if headers:
        properties: Any = {str(k): v for k, v in headers.items()}
        message.properties = properties
    if content_type:
        message.content_type = content_type
    for name in ("content_encoding", "subject", "reply_to", "group_id", "correlation_id"):
        if options.get(name) is not None:
            setattr(message, name, options[name])
    if options.get("message_id") is not None:
        message.id = options["message_id"]
    if options.get("to") is not None:
        message.address = options["to"]
    if options.get("ttl") is not None:
        message.ttl = float(options["ttl"])
    if options.get("priority") is not None:
        message.priority = int(options["priority"])
    if options.get("annotations"):
        message.annotations = dict(options["annotations"])
    return message


class _SenderClient(ReactorClient):
    """Reactor side of an :class:`AMQPPublisher`: one sender link, sends within credit."""

    def __init__(self, owner: AMQPPublisher, settings: ConnectionSettings, address: str) -> None:
        super().__init__(settings, label=f"sender:{address}")
        self.owner = owner
        self.address = address
        self._sender: Any = None
        self._pending: deque[tuple[int, Any, Mapping[str, Any] | None, dict[str, Any]]] = deque()
        self._inflight: dict[Any, int] = {}
        self.peak_in_flight = 0  # most messages awaiting an outcome at once (a statistic)

    def open_links(self, container: Container, session: Any) -> None:
        self._sender = container.create_sender(
            session,
            target=self.address,
            name=f"loafer-pub-{self.address}-{self.generation}",
            options=AtLeastOnce(),
        )

    def all_links_attached(self) -> bool:
        link = self._sender
        return bool(
            link is not None
            and link.state & link.REMOTE_ACTIVE
            and link.remote_target.address is not None
        )

    def describe_link(self, link: Any) -> str:
        return f"target address {self.address!r}"

    def links_ready(self) -> None:
        self._pump()

    def generation_lost(self, old_generation: int) -> None:
        self._sender = None
        if self._inflight:
            error = ProviderError(
                f"connection to the broker lost before it confirmed {len(self._inflight)} "
                "message(s); they may or may not have been delivered"
            )
            for pid in self._inflight.values():
                self.post(self.owner._resolve, pid, error)
            self._inflight.clear()

    def send_many(
        self, items: list[tuple[int, tuple[Any, Mapping[str, Any] | None, dict[str, Any]]]]
    ) -> None:
        if self._closing:
            error = ProviderError("AMQPPublisher is closed")
            for pid, _ in items:
                self.post(self.owner._resolve, pid, error)
            return
        for pid, (body, headers, options) in items:
            self._pending.append((pid, body, headers, options))

    def after_commands(self) -> None:
        self._pump()

    def _pump(self) -> None:
        link = self._sender
        if self._closing or link is None or not self.all_links_attached():
            return
        while self._pending and link.credit > 0:
            pid, body, headers, options = self._pending.popleft()
            try:
                message = _build_message(body, headers, options)
                dlv = link.send(message)
            except Exception as exc:
                self.post(self.owner._resolve, pid, exc)
                continue
            self._inflight[dlv] = pid
        self.peak_in_flight = max(self.peak_in_flight, len(self._inflight))

    def on_sendable(self, event: Any) -> None:
        try:
            if event.link == self._sender:
                self._pump()
        except Exception:
            logger.exception("%s: error sending", self.label)

    def _outcome(self, event: Any, error: BaseException | None) -> None:
        pid = self._inflight.pop(event.delivery, None)
        if pid is not None:
            self.post(self.owner._resolve, pid, error)

    def on_accepted(self, event: Any) -> None:
        self._outcome(event, None)

    def on_rejected(self, event: Any) -> None:
        condition = event.delivery.remote.condition
        self._outcome(
            event,
            PublishRefused(self.address, "rejected", describe(condition) if condition else None),
        )

    def on_released(self, event: Any) -> None:
        state = event.delivery.remote_state
        outcome = "modified" if state == ProtonDelivery.MODIFIED else "released"
        self._outcome(event, PublishRefused(self.address, outcome))

    def on_settled(self, event: Any) -> None:
        # Settled by the broker without one of the outcomes above.
        if event.delivery in self._inflight:
            self._outcome(
                event, PublishRefused(self.address, f"settled ({event.delivery.remote_state})")
            )

    def before_shutdown(self) -> None:
        error = ProviderError("AMQPPublisher closed before the broker confirmed the message")
        for pid, *_ in self._pending:
            self.post(self.owner._resolve, pid, error)
        self._pending.clear()
        for pid in self._inflight.values():
            self.post(self.owner._resolve, pid, error)
        self._inflight.clear()

    def forget_links(self) -> None:
        self._sender = None
        self._inflight.clear()  # the owner fails their publishes as the thread ends

    def on_thread_end(self, reason: str) -> None:
        self.owner._fail_all(ProviderError(f"AMQP reactor thread stopped: {reason}"))


class _Batch:
    """One ``publish``/``publish_many`` call waiting for its outcomes."""

    __slots__ = ("future", "remaining")

    def __init__(self, future: asyncio.Future[None], remaining: int) -> None:
        self.future = future
        self.remaining = remaining


_NO_DELAY = (
    "AMQP 1.0 has no delayed delivery (RabbitMQ's AMQP 1.0 plugin neither); publish with "
    "loafer_rabbit's RabbitPublisher (AMQP 0-9-1) for delays, or later"
)


class AMQPPublisher:
    """Send messages to one AMQP 1.0 address and await the broker's outcome.

    ``await publish(...)`` returns once the broker has *accepted* the message; a
    ``rejected``, ``released`` or ``modified`` outcome raises
    :class:`~loafer_amqp.errors.PublishRefused`, a lost connection before the outcome
    raises :class:`~loafer_core.errors.ProviderError` (the message may or may not have
    arrived). Concurrent ``publish`` calls are pipelined within the link's credit
    (``asyncio.gather`` many of them; there is no round trip per message).

    Takes one :class:`~loafer_amqp.settings.AMQPPublisherSettings`, or the same values
    as flat keywords, ``url`` and ``address`` first (positional or not): the connection
    options are those of :class:`~loafer_amqp.AMQPProvider`, plus ``durable``,
    ``timeout`` (the wait for an outcome) and ``type_header``. Use it as an async
    context manager, or call :meth:`start` / :meth:`close` (the first ``publish``
    starts it).

    Typed objects (a pydantic model, a dataclass, a msgspec Struct,
    :class:`~loafer_core.typed.Typed`) are sent as JSON with their type in the
    ``type_header`` application property (``None``: none; see
    :func:`~loafer_core.typed.encode`). Each publish is traced when the process uses
    OpenTelemetry (:mod:`loafer_core.ext.otel`: a producer span, its context in the
    application properties).
    """

    settings_type = AMQPPublisherSettings
    #: Delayed publish: none (AMQP 1.0 has no delay; ``delay=``/``at=`` raise
    #: ConfigurationError).
    delay_support: ClassVar[Support] = Support.NONE
    max_delay: ClassVar[float | None] = None

    def __init__(
        self,
        settings: AMQPPublisherSettings | str | None = None,
        address: str | None = None,
        /,
        **options: Any,
    ) -> None:
        self.settings = settings_from(
            AMQPPublisherSettings, "AMQPPublisher", settings, address, options
        )
        s = self.settings
        self._connection = ConnectionSettings.of(s)  # what the reactor thread connects with
        self.address = s.address
        self.durable = s.durable
        self.type_header = s.type_header
        self._timeout = s.timeout
        self._connect_timeout = s.timeouts.connect
        self._close_timeout = s.timeouts.close
        self._client: _SenderClient | None = None
        self._start_lock: asyncio.Lock | None = None
        self._futures: dict[int, _Batch] = {}
        self._next_id = 0
        self._closed = False

    @property
    def peak_in_flight(self) -> int:
        """Most messages that were awaiting the broker's outcome at once (pipelining depth)."""
        client = self._client
        return client.peak_in_flight if client is not None else 0

    def description(self) -> Description:
        """The address, the broker (no secret) and the AsyncAPI bindings: see
        :class:`~loafer_core.provider.Describable`."""
        return self._connection.description(self.address)

    def __repr__(self) -> str:
        return f"AMQPPublisher(url={self._connection.display_url!r}, address={self.address!r})"

    async def __aenter__(self) -> AMQPPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect and attach the sender (ConfigurationError for a refused address)."""
        if self._closed:
            raise ProviderError("AMQPPublisher is closed")
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            client = self._client
            if client is not None and client.dead is None:
                return
            client = _SenderClient(self, self._connection, self.address)
            self._client = client
            client.start_thread(asyncio.get_running_loop())
            try:
                await client.wait_ready(self._connect_timeout)
            except BaseException:
                await client.shutdown(self._close_timeout)
                raise

    def _check_options(self, options: dict[str, Any]) -> None:
        check_delay(
            options.pop("delay", None),
            options.pop("at", None),
            what="AMQPPublisher",
            refused=_NO_DELAY,
        )
        if not options:
            options["durable"] = self.durable
            return
        unknown = set(options) - _MESSAGE_OPTIONS
        if unknown:
            raise TypeError(f"unknown publish option(s): {', '.join(sorted(unknown))}")
        if options.get("body_section", "data") not in _SECTIONS:
            raise ValueError(f"body_section must be one of {_SECTIONS}")
        options.setdefault("durable", self.durable)

    async def _live(self) -> _SenderClient:
        client = self._client
        if client is None or client.dead is not None:
            await self.start()
            client = self._client
            assert client is not None
        return client

    async def publish(
        self, body: Any, *, headers: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        """Send ``body`` and return once the broker has accepted it.

        ``bytes`` go in a data section; ``str`` is UTF-8 encoded (``text/plain``); other
        values are JSON encoded (``application/json``). ``headers`` become application
        properties. Options: ``message_id``, ``correlation_id``, ``subject``,
        ``content_type``, ``content_encoding``, ``reply_to``, ``group_id``, ``to``, ``ttl``
        (seconds), ``priority``, ``durable``, ``annotations`` (message annotations) and
        ``body_section`` (``"data"``, or ``"value"``/``"sequence"`` to send the body as an
        AMQP value or sequence section).
        """
        self._check_options(options)
        encoded = encode(body, header=self.type_header)
        if encoded is not None:
            body = encoded.body
            headers = {**encoded.headers, **headers} if headers else encoded.headers
            options.setdefault("content_type", encoded.content_type)
        with publish_span(
            "amqp", self.address, headers, message_id=options.get("message_id")
        ) as sent:
            await self._send([(body, sent, options)])

    async def publish_many(
        self,
        bodies: Iterable[Any],
        *,
        headers: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """Send every body (same headers and options) and return once all are accepted.

        One hand-over to the reactor for the whole batch, sent within the link's credit;
        the first refusal or failure is raised (the others may have been accepted).
        """
        self._check_options(options)
        items: list[tuple[Any, Mapping[str, Any] | None, dict[str, Any]]] = []
        for body in bodies:
            encoded = encode(body, header=self.type_header)
            if encoded is None:
                items.append((body, headers, options))
            else:
                merged = {**encoded.headers, **headers} if headers else encoded.headers
                typed_options = {"content_type": encoded.content_type, **options}
                items.append((encoded.body, merged, typed_options))
        if not items:
            return
        with publish_span("amqp", self.address, None, count=len(items)) as injected:
            if injected:
                items = [(b, {**h, **injected} if h else injected, o) for b, h, o in items]
            await self._send(items)

    async def _send(
        self, items: list[tuple[Any, Mapping[str, Any] | None, dict[str, Any]]]
    ) -> None:
        client = self._client
        if client is None or client.dead is not None:
            client = await self._live()
        loop = asyncio.get_running_loop()
        batch = _Batch(loop.create_future(), len(items))
        first = self._next_id + 1
        self._next_id += len(items)
        pids = range(first, self._next_id + 1)
        futures = self._futures
        for pid in pids:
            futures[pid] = batch
        # A plain timer rather than asyncio.timeout(): cheaper per message.
        timer = (
            loop.call_later(self._timeout, self._expire, batch, len(items))
            if self._timeout is not None
            else None
        )
        try:
            client.call(client.send_many, list(zip(pids, items, strict=True)))
            await batch.future
        finally:
            if timer is not None:
                timer.cancel()
            if batch.remaining:
                for pid in pids:
                    futures.pop(pid, None)

    def _expire(self, batch: _Batch, count: int) -> None:
        if not batch.future.done():
            batch.future.set_exception(
                ProviderError(
                    f"no outcome from the broker within {self._timeout}s for "
                    f"{count} message(s) sent to {self.address!r}"
                )
            )

    def _resolve(self, pid: int, error: BaseException | None) -> None:
        batch = self._futures.pop(pid, None)
        if batch is None:
            return
        batch.remaining -= 1
        if batch.future.done():
            return
        if error is not None:
            batch.future.set_exception(error)
        elif batch.remaining == 0:
            batch.future.set_result(None)

    def _fail_all(self, error: BaseException) -> None:
        for pid in list(self._futures):
            self._resolve(pid, error)

    async def close(self) -> None:
        """Fail unconfirmed publishes with ProviderError and disconnect (idempotent)."""
        if self._closed:
            return
        self._closed = True
        client = self._client
        if client is not None:
            await client.shutdown(self._close_timeout)
        self._fail_all(ProviderError("AMQPPublisher closed"))
