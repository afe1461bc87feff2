"""RabbitMQ (AMQP 0-9-1) provider for loafer-core, built on aio-pika.

One robust connection (``aio_pika.connect_robust``) per provider carries two channels:
a consuming channel whose ``basic.qos`` prefetch is the route's capacity (plus an
optional small headroom), and a publishing channel with publisher confirms used for
retries and emulated dead-lettering (always publish-then-ack: a crash in between gives
a duplicate, never a loss).

Outcome mapping:

- ``ACCEPT`` -> ``basic.ack``.
- ``REJECT`` -> ``basic.reject(requeue=False)`` (the queue's dead-letter exchange, if it
  has one); with ``dead_letter=True`` on a queue the provider did not declare, the
  message is published to the provider's dead-letter exchange, then acked.
- ``RELEASE`` -> ``basic.nack(requeue=True)`` (not counted as an attempt).
- ``RETRY()`` -> republished to the work queue with the attempt header incremented, then
  acked (so ``max_attempts`` works on classic queues too).
- ``RETRY(delay)`` -> published to the retry queue with a per-message TTL of ``delay``;
  the retry queue dead-letters expired messages back to the work queue. Then acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from loafer_core.deadletters import dead_headers
from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.kit import map_exceptions
from loafer_core.outcome import Outcome, OutcomeKind
from loafer_core.provider import Capabilities, Delivery, Description, Support
from loafer_core.settings import from_flat
from loafer_core.translator import JSONTranslator
from loafer_rabbit import _describe
from loafer_rabbit._acks import AckTracker
from loafer_rabbit._connection import close_connection, open_connection
from loafer_rabbit._dead_letters import RabbitDeadLetters
from loafer_rabbit._topology import (
    DEAD_LETTER_ARGUMENTS,
    declare_dead_letter,
    declare_retry_queue,
    declare_work_queue,
    retry_queue_arguments,
    work_queue_arguments,
)
from loafer_rabbit._verify import Entity, verify_topology
from loafer_rabbit.errors import (
    mask_url,
    operation_error,
    protect,
    scrub,
    vhost_of,
)
from loafer_rabbit.settings import DeadLetter, RabbitSettings

__all__ = [
    "ATTEMPT_HEADER",
    "MAX_RETRY_DELAY",
    "REJECT_REASON_HEADER",
    "RabbitProvider",
]

logger = logging.getLogger("loafer_rabbit")

ATTEMPT_HEADER = "x-loafer-attempt"
"""Application header carrying the attempt number of the next delivery of a retried message."""
REJECT_REASON_HEADER = "x-loafer-reject-reason"
"""Header set on messages the provider dead-letters itself (``dead_letter=True``)."""
#: Header naming the queue a provider-dead-lettered message came from.
REJECTED_FROM_HEADER = "x-loafer-rejected-from"
#: The longest per-message TTL RabbitMQ accepts (2**32 - 1 ms), in seconds.
MAX_RETRY_DELAY = (2**32 - 1) / 1000.0
#: Failed publishes (of a retry or dead-letter copy) of one delivery before it is requeued.
PUBLISH_ATTEMPTS = 3
#: The largest prefetch count AMQP 0-9-1 can express.
MAX_PREFETCH = 65535


def _attempt_of(headers: Mapping[str, Any]) -> int:
    value = headers.get(ATTEMPT_HEADER)
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return max(1, value)
    if isinstance(value, bytes | str):
        try:
            return max(1, int(value))
        except ValueError:
            return 1
    return 1


class _Token:
    """A delivery's settlement handle: the message, its channel generation, settled yet,
    and the publish of its copy (RETRY, emulated REJECT) once begun: a settle sent again
    (after a failure or a cancellation) awaits that publish instead of publishing again."""

    __slots__ = ("copying", "generation", "message", "settled")

    def __init__(self, message: AbstractIncomingMessage, generation: int) -> None:
        self.message = message
        self.generation = generation
        self.settled = False
        self.copying: asyncio.Future[None] | None = None


def _retrieved(future: asyncio.Future[None]) -> None:
    """Mark a copy's publish failure as seen (no settle may be left to await it)."""
    if not future.cancelled():
        future.exception()


def _is_dead(message: AbstractIncomingMessage) -> bool:
    """True when the channel the message arrived on is closed (its tag is meaningless now)."""
    try:
        return bool(message.channel.is_closed)
    except aiormq.exceptions.ChannelInvalidStateError:
        return True


def _settings_of(settings: RabbitSettings | str | None, options: dict[str, Any]) -> RabbitSettings:
    """The provider's settings: ``settings`` itself, or built from the flat keywords (a
    first positional string is the queue)."""
    if isinstance(settings, RabbitSettings):
        if options:
            raise ConfigurationError(
                f"RabbitProvider: got a RabbitSettings and keywords {sorted(options)}; give "
                "one or the other (settings.replace(...) changes a settings object)"
            )
        return settings
    if settings is not None:
        if "queue" in options:
            raise ConfigurationError(
                "RabbitProvider: the queue given twice (positional and queue=)"
            )
        options = {"queue": settings, **options}
    return from_flat(RabbitSettings, "RabbitProvider", options)


def _queue_entity(
    what: str, name: str, arguments: Mapping[str, Any], *, durable: bool = True
) -> Entity:
    """A queue ``start`` declares: fine when missing, its settings checked when present."""
    declared = dict(arguments)
    return Entity(
        what,
        name,
        passive=lambda ch: ch.declare_queue(name, passive=True),
        declare=lambda ch: ch.declare_queue(name, durable=durable, arguments=declared),
        required=False,
    )


class RabbitProvider:
    """Consume one RabbitMQ queue through aio-pika, with at-least-once delivery.

    Takes one :class:`~loafer_rabbit.settings.RabbitSettings`, or the same values as flat
    keywords (``RabbitProvider("orders", url=..., declare=True, dead_letter=True)``; a
    first positional string is the queue): the settings' docstring lists each of them.
    ``settings`` holds what it was built with; ``queue``, ``retry_queue``,
    ``dead_letter_exchange`` and ``dead_letter_queue`` are the names in use (defaults
    resolved), ``url`` the broker URL with its password masked.
    """

    default_translator = JSONTranslator()
    settings_type = RabbitSettings

    def __init__(self, settings: RabbitSettings | str | None = None, /, **options: Any) -> None:
        self.settings = _settings_of(settings, options)
        protect(self._url)  # aio-pika logs the URL's query string: mask it
        self._set_names(self.settings)
        self._set_state()

    def _set_names(self, settings: RabbitSettings) -> None:
        """The names in use, defaults resolved, and the values the hot paths read."""
        queue = self.queue = settings.queue
        self.retry_queue = settings.retries.queue or f"{queue}.retry"
        self.dead_letter_exchange = settings.dead_letters.exchange or f"{queue}.dlx"
        self.dead_letter_queue = settings.dead_letters.queue or f"{queue}.dead"
        self._connection_name = settings.connection.name or f"loafer:{queue}"
        self._dead_letter: DeadLetter = settings.dead_letters.mode
        self._delayed_retry = settings.retries.delayed
        self._poll_timeout = float(settings.timeouts.poll)
        self._publish_timeout = float(settings.timeouts.publish)

    def _set_state(self) -> None:
        """The connection's and the deliveries' state, before ``start``."""
        #: Retry queues declared so far.
        self.retry_queues: set[str] = set()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._backlog_channel: AbstractRobustChannel | None = None
        self._backlog_lock = asyncio.Lock()
        self._queue_obj: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        # Deliveries received and not handed out yet. Each carries its channel's
        # generation: it groups dead deliveries per lost channel (each loss is logged once)
        # and tells which AckTracker knows its tag.
        self._buffer: deque[_Token] = deque()
        self._generation = 0
        self._current_channel: object = None
        self._acks = AckTracker()
        self._pending_acks: list[_Token] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._logged_generations: set[int] = set()
        #: Deliveries dropped because their channel was lost (RabbitMQ requeued them).
        self.dropped_deliveries = 0
        self._reconnects = 0  # consuming channel reopened after a loss
        self._ready = asyncio.Event()
        self._started = False
        self._starting: asyncio.Task[None] | None = None
        self._closed = False
        self._warned_no_delay = False
        self._publish_failures: dict[int, int] = {}
        self._paused = False
        self._pause_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._callback = self._on_message
        self.prefetch = 0

    @property
    def _url(self) -> str:
        """The broker URL as given (with its password: for connecting and scrubbing)."""
        return self.settings.connection.url

    @property
    def _connection_options(self) -> Mapping[str, Any]:
        return self.settings.connection.options or {}

    # -- description ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The broker URL with its password masked."""
        return mask_url(self._url)

    @property
    def vhost(self) -> str:
        """The virtual host the URL names."""
        return vhost_of(self._url)

    def describe(self) -> str:
        """A short description for logs (no secrets)."""
        return f"rabbit queue {self.queue!r} on vhost {self.vhost!r}"

    def description(self) -> Description:
        """The queue, the broker (no secret) and the AsyncAPI bindings: see
        :class:`~loafer_core.provider.Describable`."""
        return _describe.provider(self.settings)

    def __repr__(self) -> str:
        return f"RabbitProvider(queue={self.queue!r}, url={self.url!r})"

    @property
    def _native_dead_letter(self) -> bool:
        declared = self.settings.topology.declare
        return self._dead_letter == "queue" or (self._dead_letter is True and declared)

    @property
    def capabilities(self) -> Capabilities:
        """Delayed retry via a TTL retry queue, attempts counted in a header, dead-lettering
        when configured, uncounted RELEASE; no ordering keys, no leases."""
        if self._dead_letter is False:
            dead_letter = Support.NONE
        elif self._native_dead_letter:
            dead_letter = Support.NATIVE
        else:
            dead_letter = Support.EMULATED
        return Capabilities(
            delayed_retry=Support.EMULATED if self._delayed_retry else Support.NONE,
            dead_letter=dead_letter,
            attempt_count=Support.EMULATED,
            release_uncounted=Support.NATIVE,
            ordering_keys=Support.NONE,
            lease_extension=Support.NONE,
            max_retry_delay=MAX_RETRY_DELAY if self._delayed_retry else None,
        )

    # -- verification ---------------------------------------------------------------------

    async def verify(self) -> None:
        """Check the set-up as ``start`` would, consuming and changing nothing.

        On a short-lived connection: the work queue exists (a passive declare; with
        ``declare=True`` a missing one is fine), and what ``start`` would declare that
        exists already has the settings ``start`` declares it with. What ``start`` would
        create is not created. No consumer, no ``basic.get``: no message is delivered.
        ConfigurationError for what is wrong (a missing queue, different settings,
        refused credentials or permissions), ProviderError when RabbitMQ cannot be
        reached within ``connect_timeout``. Safe to cancel; closes what it opened.
        """
        await verify_topology(
            self._url,
            self._entities(),
            timeout=self.settings.timeouts.connect,
            close_timeout=self.settings.timeouts.close,
            connection_name=f"{self._connection_name}:verify",
            ssl_context=self.settings.connection.tls,
            options=self._connection_options,
        )

    def _entities(self) -> list[Entity]:
        """What ``start`` checks or declares, in the order it does."""
        entities: list[Entity] = []
        if self._dead_letter is True:
            dlx, dlq = self.dead_letter_exchange, self.dead_letter_queue
            entities.append(
                Entity(
                    "dead-letter exchange",
                    dlx,
                    passive=lambda ch: ch.declare_exchange(dlx, passive=True),
                    declare=lambda ch: ch.declare_exchange(
                        dlx, aio_pika.ExchangeType.DIRECT, durable=True
                    ),
                    required=False,
                )
            )
            entities.append(_queue_entity("dead-letter queue", dlq, DEAD_LETTER_ARGUMENTS))
        queue, topology = self.queue, self.settings.topology
        if topology.declare:
            arguments = work_queue_arguments(
                queue,
                queue_type=topology.queue_type,
                dead_letter_exchange=(
                    self.dead_letter_exchange if self._dead_letter is True else None
                ),
                arguments=topology.arguments or {},
            )
            entities.append(_queue_entity("queue", queue, arguments, durable=topology.durable))
        else:
            entities.append(
                Entity("queue", queue, passive=lambda ch: ch.declare_queue(queue, passive=True))
            )
        if self._delayed_retry and not self.settings.retries.tiers:
            retry = retry_queue_arguments(queue)
            entities.append(_queue_entity("retry queue", self.retry_queue, retry))
        return entities

    # -- start-up -------------------------------------------------------------------------

    async def start(self, capacity: int) -> None:
        """Connect, check or declare the queues, set the prefetch to ``capacity`` and consume.

        Safe to cancel, and to ``close()`` meanwhile (it then raises ProviderError): what
        it opened so far is closed before it returns.
        """
        if self._closed:
            raise ProviderError(f"{self.describe()}: provider already closed")
        if self._started:
            return
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigurationError(
                f"RabbitProvider.start: capacity must be >= 1, got {capacity!r}"
            )
        if self._starting is not None:
            raise ProviderError(f"{self.describe()}: already starting")
        self.prefetch = min(capacity + self.settings.prefetch_headroom, MAX_PREFETCH)
        # Its own task, so that close() can end it without cancelling our caller.
        task = asyncio.get_running_loop().create_task(
            self._start(), name=f"loafer:{self.queue}:start"
        )
        self._starting = task
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._closed and current is not None and not current.cancelling():
                raise ProviderError(f"{self.describe()}: closed while starting") from None
            raise
        finally:
            self._starting = None
        self._started = True

    async def _connect(self) -> AbstractRobustConnection:
        options: dict[str, Any] = {
            "reconnect_interval": self.settings.timeouts.reconnect,
            **self._connection_options,
        }
        return await open_connection(
            self._url,
            timeout=self.settings.timeouts.connect,
            close_timeout=self.settings.timeouts.close,
            connection_name=self._connection_name,
            ssl_context=self.settings.connection.tls,
            options=options,
        )

    async def _start(self) -> None:
        try:
            await self._open()
        except BaseException:
            await self._disconnect()
            raise

    async def _open(self) -> None:
        self._connection = await self._connect()
        with map_exceptions(
            lambda exc: operation_error(f"starting {self.describe()}", exc, self._url)
        ):
            self._channel = channel = await self._open_channel(publisher_confirms=False)
            # per consumer: quorum queues refuse a channel-wide (global) prefetch. So after
            # a pause (stop_fetching) a new consumer's prefetch does not count what the old
            # one handed out; the dispatcher never fetches again after a drain.
            await channel.set_qos(prefetch_count=self.prefetch)
            self._publish_channel = await self._open_channel(publisher_confirms=True)
            # Fires when the consuming channel is reopened, after a reconnection too.
            channel.reopen_callbacks.add(self._on_reconnect)
            if self._dead_letter is True:
                await self._declare_dead_letter()
            self._queue_obj = await self._declare_work_queue(channel)
            if self._delayed_retry and not self.settings.retries.tiers:
                await self._declare_retry_queue(self.retry_queue)
            self._consumer_tag = await self._queue_obj.consume(self._callback, no_ack=False)
        logger.info("%s: consuming (prefetch %d) from %s", self.describe(), self.prefetch, self.url)

    async def _open_channel(self, *, publisher_confirms: bool) -> AbstractRobustChannel:
        assert self._connection is not None
        channel = self._connection.channel(
            publisher_confirms=publisher_confirms, on_return_raises=publisher_confirms
        )
        await channel
        return channel

    async def _declare_work_queue(self, channel: AbstractRobustChannel) -> AbstractQueue:
        topology = self.settings.topology
        return await declare_work_queue(
            channel,
            self.queue,
            url=self._url,
            declare=topology.declare,
            queue_type=topology.queue_type,
            durable=topology.durable,
            dead_letter_exchange=self.dead_letter_exchange if self._dead_letter is True else None,
            arguments=topology.arguments or {},
        )

    def retry_queue_for(self, delay: float) -> str:
        """The retry queue a ``RETRY(delay)`` goes to (see ``retry_tiers``)."""
        if not self.settings.retries.tiers:
            return self.retry_queue
        ms = max(1, min(round(delay * 1000), 2**32 - 1))
        return f"{self.retry_queue}.{1 << (ms - 1).bit_length()}ms"

    async def _declare_retry_queue(self, name: str) -> None:
        assert self._publish_channel is not None
        await declare_retry_queue(self._publish_channel, name, work_queue=self.queue, url=self._url)
        self.retry_queues.add(name)

    async def _declare_dead_letter(self) -> None:
        assert self._publish_channel is not None
        await declare_dead_letter(
            self._publish_channel,
            exchange=self.dead_letter_exchange,
            queue=self.dead_letter_queue,
            routing_key=self.queue,
            url=self._url,
        )

    # -- consuming ------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # A coroutine function, as aio-pika expects (it wraps a plain function in one
        # anyway, with a DeprecationWarning per delivery). It never suspends.
        try:
            channel = message.channel
        except aiormq.exceptions.ChannelInvalidStateError:
            return  # its channel is already gone: RabbitMQ requeues it
        if channel is not self._current_channel:
            # A new channel (after a reconnection): its delivery tags start again at 1.
            self._current_channel = channel
            self._generation += 1
            self._acks = AckTracker()
        tag = message.delivery_tag
        if tag is not None:
            self._acks.delivered(tag)
        token = _Token(message, self._generation)
        if self._paused or self._closed:
            # Pushed before the broker saw our basic.cancel: hand it straight back.
            task = asyncio.get_running_loop().create_task(self._requeue(token))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return
        self._buffer.append(token)
        self._ready.set()

    async def _requeue(self, token: _Token) -> None:
        try:
            await token.message.nack(requeue=True)
        except Exception:
            return  # the channel is gone: the broker requeues it anyway
        token.settled = True
        self._settled_singly(token)

    def _pause(self) -> None:
        """Stop consuming and requeue the buffer, in the background (fetch was cancelled)."""
        if self._paused or self._closed:
            return
        self._paused = True
        self._pause_task = asyncio.get_running_loop().create_task(
            self._stop_consuming(), name=f"loafer:{self.queue}:pause"
        )

    async def stop_fetching(self) -> None:
        """A drain begins: stop consuming and requeue the buffer at once.

        (:class:`loafer_core.provider.Drainable`; a later ``fetch`` consumes again.)
        """
        if self._closed or not self._started:
            return
        self._pause()
        task = self._pause_task
        if task is not None:
            with contextlib.suppress(Exception):
                await task

    async def _resume(self) -> None:
        task, self._pause_task = self._pause_task, None
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        queue = self._queue_obj
        assert queue is not None
        doing = f"consuming from {self.describe()}"
        with map_exceptions(lambda exc: operation_error(doing, exc, self._url)):
            async with asyncio.timeout(self._publish_timeout):
                tag = await queue.consume(self._callback, no_ack=False)
        self._consumer_tag = tag
        self._paused = False

    @property
    def reconnects(self) -> int:
        """Times the consuming channel was reopened after a lost connection or channel
        (the ``loafer_reconnects`` metric; :class:`~loafer_core.provider.Reconnects`)."""
        return self._reconnects

    async def _on_reconnect(self, *_: Any) -> None:
        self._reconnects += 1
        dead = [token for token in self._buffer if _is_dead(token.message)]
        if dead:
            self._buffer = deque(t for t in self._buffer if not _is_dead(t.message))
            for token in dead:
                self._note_dead(token.generation)
        logger.info("%s: consuming again after a reconnect", self.describe())

    def _note_dead(self, generation: int) -> None:
        """Count a delivery dropped because its channel is gone; log once per lost channel."""
        self.dropped_deliveries += 1
        if generation not in self._logged_generations:
            self._logged_generations.add(generation)
            logger.warning(
                "%s: the channel was lost; deliveries received on it are dropped unsettled "
                "(RabbitMQ requeues them: expect redeliveries). Logged once per lost channel.",
                self.describe(),
            )

    def _consumer_active(self) -> bool:
        channel = self._channel
        if channel is None or channel.is_closed or self._connection is None:
            return False
        if self._connection.is_closed:
            return False
        # aio-pika keeps the live aiormq channel in ``_channel``; reading it never waits
        # (``get_underlay_channel`` on a robust channel waits for the reconnection).
        raw = getattr(getattr(channel, "_channel", None), "channel", None)
        if raw is None or raw.is_closed:
            return False
        return self._consumer_tag in raw.consumers

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        """Return up to ``max_messages`` buffered deliveries, waiting up to ``poll_timeout``.

        Cancelling it hands nothing out, and pauses consumption: the consumer is cancelled
        and the buffered deliveries are requeued at once (a stopping dispatcher cancels a
        fetch in progress, so nothing more is pushed to the route while it drains); the
        next ``fetch`` consumes again. Deliveries received on a channel that has since been lost
        are dropped (RabbitMQ requeued them). Raises ProviderError when, after a quiet
        wait, the consumer is not active (connection lost, queue deleted).
        """
        if not self._started or self._closed:
            if self._closed:
                return []
            raise ProviderError(f"{self.describe()}: fetch before start")
        if max_messages < 1:
            return []
        if self._paused:
            await self._resume()
        if not self._buffer:
            self._ready.clear()
            try:
                async with asyncio.timeout(self._poll_timeout):
                    await self._ready.wait()
                    if len(self._buffer) < max_messages:
                        # Let deliveries already read from the socket reach the buffer:
                        # one fetch then hands out a batch instead of one message.
                        await asyncio.sleep(0)
            except TimeoutError:
                if not self._closed and not self._consumer_active():
                    raise ProviderError(
                        f"{self.describe()}: not consuming (connection lost, or the consumer "
                        "was cancelled by the broker, e.g. the queue was deleted); "
                        "reconnecting in the background"
                    ) from None
                return []
            except asyncio.CancelledError:
                self._pause()
                raise
        out: list[Delivery] = []
        buffer = self._buffer
        while buffer and len(out) < max_messages:
            token = buffer.popleft()
            if _is_dead(token.message):
                self._note_dead(token.generation)
                continue
            out.append(self._delivery(token))
        if not buffer:
            self._ready.clear()
        return out

    def _delivery(self, token: _Token) -> Delivery:
        message = token.message
        raw_headers = message.headers
        headers = dict(raw_headers) if raw_headers else {}
        count = headers.get("x-delivery-count")
        metadata = {
            "message_id": message.message_id,
            "correlation_id": message.correlation_id,
            "headers": headers,
            "routing_key": message.routing_key,
            "exchange": message.exchange,
            "redelivered": bool(message.redelivered),
            "delivery_count": count if isinstance(count, int) else None,
            "content_type": message.content_type,
            "content_encoding": message.content_encoding,
            "reply_to": message.reply_to,
            "type": message.type,
            "app_id": message.app_id,
            "timestamp": message.timestamp,
            "priority": message.priority,
            "queue": self.queue,
        }
        body = message.body
        attempt = metadata["attempt"] = _attempt_of(headers)
        return Delivery(
            raw=body,
            body=body,
            message_id=message.message_id,
            metadata=metadata,
            attempt=attempt,
            token=token,
        )

    # -- settling -------------------------------------------------------------------------

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Settle one delivery (see the module docstring for the mapping).

        A delivery whose channel was lost is dropped (RabbitMQ has requeued it). Broker
        errors raise ProviderError; the delivery then stays unsettled (safe to retry).
        """
        token = delivery.token
        if not isinstance(token, _Token):
            raise ProviderError(f"{self.describe()}: {delivery!r} was not fetched from RabbitMQ")
        if token.settled:
            logger.warning(
                "%s: message %s settled twice (%r ignored)",
                self.describe(),
                delivery.message_id,
                outcome,
            )
            return
        message, generation = token.message, token.generation
        if _is_dead(message):
            token.settled = True
            self._note_dead(generation)
            return
        kind = outcome.kind
        if kind is OutcomeKind.ACCEPT:
            # Queued: acks are coalesced and sent by _flush_acks (close() flushes them).
            token.settled = True
            self._pending_acks.append(token)
            if self._flush_task is None:
                self._flush_task = asyncio.get_running_loop().create_task(self._flush_acks())
            return
        try:
            if kind is OutcomeKind.RELEASE:
                await message.nack(requeue=True)
            elif kind is OutcomeKind.REJECT:
                await self._reject(message, delivery, outcome.reason)
            else:
                await self._retry(message, delivery, outcome.delay)
        except aiormq.exceptions.ChannelInvalidStateError:
            token.settled = True
            self._note_dead(generation)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if _is_dead(message):
                token.settled = True
                self._note_dead(generation)
                return
            raise operation_error(
                f"settling message {delivery.message_id} with {outcome!r}", exc, self._url
            ) from None
        token.settled = True
        self._settled_singly(token)

    def _settled_singly(self, token: _Token) -> None:
        tag = token.message.delivery_tag
        if tag is not None and token.generation == self._generation:
            self._acks.settled(tag)

    async def _flush_acks(self) -> None:
        """Send the queued acks: one ``multiple`` ack for the settled prefix of the channel's
        outstanding tags, single acks for the rest."""
        try:
            while self._pending_acks:
                batch, self._pending_acks = self._pending_acks, []
                live: list[_Token] = []
                for token in batch:
                    if token.generation != self._generation or _is_dead(token.message):
                        self._note_dead(token.generation)
                    else:
                        live.append(token)
                if not live:
                    continue
                try:
                    channel = live[0].message.channel
                    highest, singles = self._acks.plan(
                        t.message.delivery_tag for t in live if t.message.delivery_tag is not None
                    )
                    if highest is not None:
                        await channel.basic_ack(highest, multiple=True)
                    for tag in singles:
                        await channel.basic_ack(tag)
                except aiormq.exceptions.ChannelInvalidStateError:
                    for token in live:
                        self._note_dead(token.generation)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the channel is failing: the broker requeues
                    logger.warning(
                        "%s: sending %d acks failed (%s); RabbitMQ will redeliver them",
                        self.describe(),
                        len(live),
                        scrub(str(exc), self._url),
                    )
        finally:
            self._flush_task = None

    def _copy(
        self,
        message: AbstractIncomingMessage,
        headers: dict[str, Any],
        expiration: float | None = None,
    ) -> aio_pika.Message:
        return aio_pika.Message(
            message.body,
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=message.delivery_mode,
            priority=message.priority,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            message_id=message.message_id,
            timestamp=message.timestamp,
            type=message.type,
            app_id=message.app_id,
            expiration=expiration,
        )

    async def _publish(self, message: aio_pika.Message, exchange: str, routing_key: str) -> None:
        channel = self._publish_channel
        if channel is None:
            raise ProviderError(f"{self.describe()}: not started")
        if exchange:
            target = await channel.get_exchange(exchange, ensure=False)
        else:
            target = channel.default_exchange
        await target.publish(
            message, routing_key=routing_key, mandatory=True, timeout=self._publish_timeout
        )

    async def _retry(
        self, message: AbstractIncomingMessage, delivery: Delivery, delay: float | None
    ) -> None:
        headers = dict(message.headers or {})
        headers.pop("x-delivery-count", None)
        headers[ATTEMPT_HEADER] = (delivery.attempt or _attempt_of(headers)) + 1
        if delay and not self._delayed_retry:
            if not self._warned_no_delay:
                self._warned_no_delay = True
                logger.warning(
                    "%s: RETRY(delay=%s) asked, but delayed retries are disabled "
                    "(delayed_retry=False); retrying at once",
                    self.describe(),
                    delay,
                )
            delay = None
        if delay:
            ttl = max(1, min(round(delay * 1000), 2**32 - 1)) / 1000.0
            copy = self._copy(message, headers, ttl)
            target = self.retry_queue_for(delay)
            await self._publish_then_ack(message, delivery, copy, "", target, retry_queue=True)
        else:
            copy = self._copy(message, headers)
            await self._publish_then_ack(message, delivery, copy, "", self.queue)

    async def _reject(
        self, message: AbstractIncomingMessage, delivery: Delivery, reason: str | None
    ) -> None:
        if self._dead_letter is not True or self._native_dead_letter:
            await message.reject(requeue=False)
            return
        headers = dict(message.headers or {})
        headers.pop("x-delivery-count", None)
        headers[REJECT_REASON_HEADER] = reason or "rejected"
        headers[REJECTED_FROM_HEADER] = self.queue
        headers.update(
            dead_headers(headers, reason=reason, attempts=delivery.attempt, origin=self.queue)
        )
        copy = self._copy(message, headers)
        await self._publish_then_ack(message, delivery, copy, self.dead_letter_exchange, self.queue)

    def dead_letter_store(self) -> RabbitDeadLetters:
        """The dead-letter queue's store (:class:`~loafer_core.deadletters.HasDeadLetters`):
        a replay publishes each message to the work queue, awaits the confirm, then acks it
        off the dead-letter queue (at least once). ConfigurationError with
        ``dead_letter=False``; with ``dead_letter="queue"`` the queue's own dead-letter
        queue is not known here."""
        if self._dead_letter is not True:
            raise ConfigurationError(
                f"{self.describe()}: the provider knows no dead-letter queue "
                f"(dead_letter={self._dead_letter!r}); use dead_letter=True"
            )
        return RabbitDeadLetters(
            self._url,
            self.dead_letter_queue,
            self.queue,
            native=self._native_dead_letter,
            timeout=self._publish_timeout,
        )

    async def _publish_then_ack(
        self,
        message: AbstractIncomingMessage,
        delivery: Delivery,
        copy: aio_pika.Message,
        exchange: str,
        routing_key: str,
        *,
        retry_queue: bool = False,
    ) -> None:
        """Publish ``copy`` (confirmed), then ack ``message``: a crash in between leaves a
        duplicate, never a loss.

        A failed publish raises ProviderError (the dispatcher retries the settle); after
        ``PUBLISH_ATTEMPTS`` failures for one delivery, the message is requeued with
        ``basic.nack`` instead, so it never stays unacknowledged (holding a prefetch slot)
        for the rest of the connection's life.
        """
        key = id(message)
        token = delivery.token
        assert isinstance(token, _Token)
        try:
            # Published once per delivery: cancelled while it waits for the confirm, the
            # publish goes on, and a settle sent again awaits it rather than publishing a
            # second copy.
            copying = token.copying
            if copying is None:
                copying = token.copying = asyncio.ensure_future(
                    self._publish_copy(copy, exchange, routing_key, retry_queue=retry_queue)
                )
                copying.add_done_callback(_retrieved)
            try:
                await asyncio.shield(copying)
            except asyncio.CancelledError:
                if copying.cancelled():
                    token.copying = None
                raise
            except Exception:
                token.copying = None  # not published: a settle sent again tries again
                raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if _is_dead(message):
                self._publish_failures.pop(key, None)
                raise aiormq.exceptions.ChannelInvalidStateError() from None
            failures = self._publish_failures.get(key, 0) + 1
            error = operation_error(f"publishing to {routing_key!r}", exc, self._url)
            if failures < PUBLISH_ATTEMPTS:
                self._publish_failures[key] = failures
                raise error from None
            self._publish_failures.pop(key, None)
            logger.error(
                "%s: could not publish message %s to %r after %d tries (%s); requeued it "
                "with basic.nack instead (this redelivery is not counted as an attempt)",
                self.describe(),
                delivery.message_id,
                routing_key,
                failures,
                error,
            )
            await message.nack(requeue=True)
            return
        self._publish_failures.pop(key, None)
        await message.ack()

    async def _publish_copy(
        self, copy: aio_pika.Message, exchange: str, routing_key: str, *, retry_queue: bool
    ) -> None:
        if retry_queue and routing_key not in self.retry_queues:
            await self._declare_retry_queue(routing_key)
        try:
            await self._publish(copy, exchange, routing_key)
        except aiormq.exceptions.PublishError:
            # Unroutable: the retry or dead-letter queue was deleted. Declare again, once.
            if routing_key in self.retry_queues and not exchange:
                await self._declare_retry_queue(routing_key)
            elif exchange == self.dead_letter_exchange:
                await self._declare_dead_letter()
            else:
                raise
            await self._publish(copy, exchange, routing_key)

    # -- health and shutdown --------------------------------------------------------------

    async def health(self) -> bool:
        """True while connected and consuming."""
        return self._started and not self._closed and self._consumer_active()

    async def backlog(self) -> int | None:
        """Messages ready in the work queue (a passive declare's message count, on a
        channel of its own, so a refusal cannot close the consuming or publishing one);
        ``None`` when not connected or the broker did not answer within
        ``publish_timeout``."""
        if not self._started or self._closed or self._connection is None:
            return None
        async with self._backlog_lock:
            try:
                async with asyncio.timeout(self._publish_timeout):
                    channel = self._backlog_channel
                    if channel is None or channel.is_closed:
                        channel = self._backlog_channel = await self._connection.channel()
                    queue = await channel.declare_queue(self.queue, passive=True, robust=False)
            except Exception as exc:  # a cancellation passes through
                logger.debug("%s: backlog not read: %s", self.describe(), type(exc).__name__)
                channel, self._backlog_channel = self._backlog_channel, None
                if channel is not None and not channel.is_closed:  # not to be reopened
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(1.0):
                            await channel.close()
                return None
        count = getattr(queue.declaration_result, "message_count", None)
        return count if isinstance(count, int) else None

    async def close(self) -> None:
        """Stop consuming, requeue buffered deliveries, disconnect. Idempotent.

        Bounded, even on a dead broker: a start in progress is ended, the goodbyes
        (pending acks, consumer cancel, requeues) get ``close_timeout``, closing the
        connection what is left of it (at least a second). What could not be said goes
        back to the queue when the connection ends.
        """
        if self._closed:
            return
        self._closed = True
        self._ready.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.timeouts.close
        try:
            starting = self._starting
            if starting is not None and not starting.done():
                starting.cancel()  # it closes what it opened before it ends
                await asyncio.wait({starting}, timeout=self.settings.timeouts.close)
            async with asyncio.timeout_at(deadline):
                task, self._pause_task = self._pause_task, None
                if task is not None:
                    with contextlib.suppress(Exception):
                        await task
                if self._flush_task is not None:
                    with contextlib.suppress(Exception):
                        await self._flush_task
                if self._pending_acks:
                    await self._flush_acks()
                await self._stop_consuming()
        except TimeoutError:
            logger.warning(
                "%s: the broker did not answer within close_timeout (%ss); disconnecting "
                "(RabbitMQ requeues whatever was not acked)",
                self.describe(),
                self.settings.timeouts.close,
            )
        finally:
            await self._disconnect(max(1.0, deadline - loop.time()))

    async def _stop_consuming(self) -> None:
        queue, tag = self._queue_obj, self._consumer_tag
        self._consumer_tag = None
        if queue is not None and tag is not None:
            try:
                async with asyncio.timeout(5):
                    await queue.cancel(tag)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug(
                    "%s: cancelling the consumer failed: %s",
                    self.describe(),
                    scrub(str(exc), self._url),
                )
        pending = [t for t in self._buffer if not _is_dead(t.message)]
        self._buffer.clear()
        self._ready.clear()
        if pending:
            results = await asyncio.gather(
                *(t.message.nack(requeue=True) for t in pending), return_exceptions=True
            )
            for token, result in zip(pending, results, strict=True):
                if not isinstance(result, BaseException):
                    self._settled_singly(token)
            failed = sum(1 for r in results if isinstance(r, BaseException))
            logger.info(
                "%s: released %d unhandled deliveries back to the queue%s",
                self.describe(),
                len(pending) - failed,
                f" ({failed} left to the broker's requeue on disconnect)" if failed else "",
            )

    async def _disconnect(self, timeout: float | None = None) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._publish_channel = self._backlog_channel = None
        if connection is not None:
            await close_connection(connection, timeout or self.settings.timeouts.close, self._url)
