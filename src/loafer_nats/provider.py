"""NATS JetStream provider for loafer-core, built on nats-py.

One connection per provider; a durable pull consumer on a stream; pull requests sized to
the route's free capacity (see :mod:`loafer_nats._pull`).

Outcome mapping:

- ``ACCEPT`` -> ``ack``.
- ``RETRY(delay)`` -> ``nak(delay=delay)`` (the server redelivers after ``delay``);
  ``RETRY()`` -> ``nak()`` (redelivered at once).
- ``REJECT(reason)`` -> ``term`` (never redelivered). With ``dead_letter_subject``, the
  message is first republished there (same body and headers, plus the reason in the
  ``x-loafer-reject-reason`` header), the publish ack awaited, then termed: a crash in
  between leaves a duplicate dead letter (deduplicated by its ``Nats-Msg-Id`` within the
  dead-letter stream's window), never a loss.
- ``RELEASE`` -> ``nak()``. JetStream counts it as a delivery (``num_delivered``), so a
  released message comes back with its attempt raised by one.

``attempt`` is the delivery's ``num_delivered``. When a RETRY or RELEASE would exceed
the consumer's ``max_deliver`` (the server would never deliver the message again), the
message is dead-lettered (or, without a dead-letter subject, termed) instead, saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from loafer_core.deadletters import dead_headers
from loafer_core.errors import ConfigurationError, LoaferError, ProviderError
from loafer_core.outcome import Outcome, OutcomeKind
from loafer_core.provider import Capabilities, Delivery, Description, Support
from loafer_core.translator import JSONTranslator
from loafer_nats import _describe
from loafer_nats._connection import client_options, close_connection, open_connection
from loafer_nats._dead_letters import NATSDeadLetters
from loafer_nats._delayed import HoldBack
from loafer_nats._pull import Puller
from loafer_nats._topology import Topology, ensure, jetstream_error
from loafer_nats.errors import (
    mask_url,
    operation_error,
    scrub,
)
from loafer_nats.settings import NATSSettings, settings_of

__all__ = [
    "DEAD_LETTER_ID_HEADER",
    "REJECTED_FROM_HEADER",
    "REJECT_REASON_HEADER",
    "NATSProvider",
]

logger = logging.getLogger("loafer_nats")

REJECT_REASON_HEADER = "x-loafer-reject-reason"
"""Header set on dead-lettered copies: why the message was rejected."""
REJECTED_FROM_HEADER = "x-loafer-rejected-from"
"""Header set on dead-lettered copies: ``<stream>/<consumer>/<subject>`` it came from."""
DEAD_LETTER_ID_HEADER = "Nats-Msg-Id"
"""JetStream's de-duplication header: dead letters carry ``loafer-dead:<stream>:<seq>``."""
#: Longest reject reason written to the header (header values are one line).
MAX_REASON = 1000


class _Token:
    """A delivery's settlement handle: the message, settled yet."""

    __slots__ = ("message", "settled")

    def __init__(self, message: Msg) -> None:
        self.message = message
        self.settled = False


def _one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_REASON]


def _topology_of(settings: NATSSettings) -> Topology:
    """What ``start`` checks or creates, from the settings."""
    stream, consumer = settings.stream_setup, settings.consumer_setup
    return Topology(
        stream=settings.stream,
        consumer=settings.consumer_name,
        subjects=list(stream.subjects) if stream.subjects is not None else None,
        create=bool(settings.create),
        ack_wait=float(consumer.ack_wait),
        max_deliver=consumer.max_deliver,
        filter_subject=consumer.filter_subject,
        dead_letter_subject=settings.dead_letters.subject,
        dead_letter_stream=settings.dead_letters.stream,
        stream_options=dict(stream.options),
        consumer_options=dict(consumer.options),
        where=f"NATS at {mask_url(settings.connection.url)}",
    )


class NATSProvider:
    """Consume a JetStream stream through a durable pull consumer, at least once.

    Takes one :class:`~loafer_nats.settings.NATSSettings` (its docstring lists the
    settings), or the same values as flat keywords: ``NATSProvider("ORDERS",
    url="nats://127.0.0.1:4222", consumer="billing", poll_timeout=2)`` is
    ``NATSProvider(NATSSettings(stream="ORDERS", consumer="billing",
    timeouts=Timeouts(poll=2, ...)))``. The flat names: ``stream`` (also positional),
    ``url``, ``consumer``, ``create``, ``subjects``, ``filter_subject``, ``ack_wait``,
    ``max_deliver``, ``dead_letter_subject``, ``dead_letter_stream``, ``stream_options``,
    ``consumer_options``, ``poll_timeout``, ``publish_timeout``, ``connect_timeout``,
    ``close_timeout``, ``reconnect_wait``, ``connection_name``, ``tls``,
    ``connection_options``. A wrong value is a ConfigurationError naming it; the URL's
    ``user:password@`` or ``token@`` never appears in logs, errors or reprs.
    """

    default_translator = JSONTranslator()
    settings_type = NATSSettings

    def __init__(self, settings: NATSSettings | str | None = None, /, **options: Any) -> None:
        self.settings = settings_of(NATSSettings, "NATSProvider", settings, options)
        self._configure(self.settings)
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._puller: Puller | None = None
        self._hold_back: HoldBack | None = None
        self._ack_wait: float | None = None
        self._max_deliver: int | None = None
        self._started = False
        self._starting: asyncio.Task[None] | None = None
        self._closed = False
        self._paused = False
        #: Messages given back (nak'ed) unhandled by a drain or close.
        self.released_unhandled = 0

    def _configure(self, settings: NATSSettings) -> None:
        """The settings as the attributes the provider reads."""
        connection, timeouts = settings.connection, settings.timeouts
        self._options, self._secrets = client_options(connection)
        self.stream = settings.stream
        self.consumer = settings.consumer_name
        self.dead_letter_subject = settings.dead_letters.subject
        self._url = connection.url
        self._topology = _topology_of(settings)
        self._poll_timeout = float(timeouts.poll)
        self._publish_timeout = float(timeouts.publish)
        self._connect_timeout = float(timeouts.connect)
        self._close_timeout = float(timeouts.close)
        self._reconnect_wait = float(timeouts.reconnect)
        self._connection_name = connection.name or f"loafer:{self.stream}"

    # -- description ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server URL with its password or token masked."""
        return mask_url(self._url)

    @property
    def address(self) -> str:
        """The stream's name: the destination the tracing middleware names a delivery's
        consumer span by (``process <stream>``, ``messaging.destination.name``)."""
        return self.stream

    def describe(self) -> str:
        """A short description for logs (no secrets)."""
        return f"nats consumer {self.consumer!r} of stream {self.stream!r}"

    def description(self) -> Description:
        """The stream and consumer, the server (no secret) and the AsyncAPI bindings: see
        :class:`~loafer_core.provider.Describable`."""
        return _describe.provider(self.url, self.stream, self.consumer)

    def __repr__(self) -> str:
        return f"NATSProvider(stream={self.stream!r}, consumer={self.consumer!r}, url={self.url!r})"

    @property
    def capabilities(self) -> Capabilities:
        """Delayed retry (``nak(delay)``), attempts (``num_delivered``), lease extension
        (``in_progress``), dead-lettering when a dead-letter subject is set (emulated:
        JetStream has none). RELEASE counts a delivery; no ordering keys."""
        return Capabilities(
            delayed_retry=Support.NATIVE,
            dead_letter=Support.EMULATED if self.dead_letter_subject else Support.NONE,
            attempt_count=Support.NATIVE,
            release_uncounted=Support.NONE,
            ordering_keys=Support.NONE,
            lease_extension=Support.NATIVE,
            max_retry_delay=None,
            retry_waits=Support.NONE,
        )

    @property
    def lease_duration(self) -> float | None:
        """The consumer's ``ack_wait`` (read at start; the configured one before)."""
        return self._ack_wait if self._ack_wait is not None else self._topology.ack_wait

    @property
    def max_deliver(self) -> int | None:
        """The consumer's delivery limit, read at start (``None``: unlimited)."""
        return self._max_deliver

    # -- connection -----------------------------------------------------------------------

    async def _connect(self, name: str) -> Client:
        return await open_connection(
            self._url,
            name=name,
            connect_timeout=self._connect_timeout,
            reconnect_wait=self._reconnect_wait,
            secrets=self._secrets,
            options=self._options,
            on_reconnect=self._on_reconnect,
        )

    def _on_reconnect(self) -> None:
        puller = self._puller
        if puller is not None:
            puller.forget_request()  # the server may have dropped it with the connection

    def _error(self, what: str, exc: BaseException) -> LoaferError:
        config = jetstream_error(exc, self._topology.where)
        if config is not None:
            return config
        return operation_error(what, exc, self._url, self._secrets)

    async def verify(self) -> None:
        """Check the stream, the consumer (a pull consumer with explicit acks) and the
        dead-letter stream as ``start`` would, creating and consuming nothing, on a
        short-lived connection. ConfigurationError for what is wrong, ProviderError when
        the server cannot be reached."""
        client = await self._connect(f"{self._connection_name}:verify")
        try:
            js = client.jetstream(timeout=self._publish_timeout)
            await ensure(js, self._topology, check_only=True)
        except LoaferError:
            raise
        except Exception as exc:
            raise self._error(f"checking {self.describe()}", exc) from None
        finally:
            await close_connection(client, self._close_timeout)

    # -- start-up -------------------------------------------------------------------------

    async def start(self, capacity: int) -> None:
        """Connect, check (or create) the stream and consumer, read ``ack_wait`` and
        ``max_deliver``. Safe to cancel and to ``close()`` meanwhile."""
        if self._closed:
            raise ProviderError(f"{self.describe()}: provider already closed")
        if self._started:
            return
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigurationError(f"NATSProvider.start: capacity must be >= 1, got {capacity!r}")
        if self._starting is not None:
            raise ProviderError(f"{self.describe()}: already starting")
        task = asyncio.get_running_loop().create_task(
            self._start(capacity), name=f"loafer:nats:{self.stream}:start"
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

    async def _start(self, capacity: int) -> None:
        client = await self._connect(self._connection_name)
        try:
            js = client.jetstream(timeout=self._publish_timeout)
            info = await ensure(js, self._topology)
            config = info.config
            self._ack_wait = float(config.ack_wait) if config.ack_wait else 30.0
            max_deliver = config.max_deliver
            self._max_deliver = max_deliver if max_deliver and max_deliver > 0 else None
            pending = config.max_ack_pending
            if pending and 0 < pending < capacity:
                logger.warning(
                    "%s: the consumer's max_ack_pending (%d) is below the route's "
                    "max_concurrency (%d): at most %d messages are handled at once",
                    self.describe(),
                    pending,
                    capacity,
                    pending,
                )
            puller = Puller(
                client,
                api_prefix=js._prefix,
                stream=self.stream,
                consumer=self.consumer,
                intake=self._intake,
                sweep=lambda: js.consumer_info(
                    self.stream, self.consumer, timeout=min(self._publish_timeout, 5.0)
                ),
            )
            await puller.subscribe()
        except BaseException as exc:
            await close_connection(client, self._close_timeout)
            if isinstance(exc, LoaferError) or not isinstance(exc, Exception):
                raise
            raise self._error(f"starting {self.describe()}", exc) from None
        self._client, self._js, self._puller = client, js, puller
        self._hold_back = HoldBack(self.describe(), self._max_deliver)
        logger.info(
            "%s: consuming from %s (ack_wait %ss, max_deliver %s)",
            self.describe(),
            self.url,
            self._ack_wait,
            self._max_deliver or "unlimited",
        )

    # -- consuming ------------------------------------------------------------------------

    def _intake(self, msg: Msg) -> bool:
        """A delivered message: always kept. One arriving during a drain or close (before
        the server saw our UNSUB) is given back with the rest of the buffer once the
        subscription is drained: a nak now would have it redelivered to the same
        waiting request, counting deliveries for nothing."""
        return True

    async def _give_back(self, messages: Sequence[Msg]) -> None:
        """nak unhandled messages, so that they are available again at once (JetStream
        counts it as a delivery). One already delivered ``max_deliver`` times would never
        come back: it is dead-lettered when a dead-letter subject is set (else nak'ed,
        with a warning: it stays in the stream, undelivered)."""
        if not messages:
            return
        given = 0
        for msg in messages:
            try:
                limit = self._max_deliver
                if limit is not None and msg.metadata.num_delivered >= limit:
                    reason = (
                        f"max_deliver ({limit}) reached: fetched, not handled before the "
                        "route stopped"
                    )
                    if self.dead_letter_subject:
                        logger.warning("%s: %s; dead-lettered", self.describe(), reason)
                        await self._reject(msg, None, reason)
                        given += 1
                        continue
                    logger.warning(
                        "%s: %s; nak'ed, the server will not deliver it again",
                        self.describe(),
                        reason,
                    )
                await msg.nak()
                given += 1
            except Exception as exc:
                logger.debug("%s: nak of an unhandled message failed: %r", self.describe(), exc)
        self.released_unhandled += given
        if given < len(messages):
            logger.warning(
                "%s: %d unhandled messages could not be given back; the server redelivers "
                "them after ack_wait",
                self.describe(),
                len(messages) - given,
            )

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        """Return up to ``max_messages`` deliveries, waiting up to ``poll_timeout``.

        Asks the server for ``max_messages`` only when no pull request is live and
        nothing is buffered. Cancelling it hands nothing out and loses nothing (what
        arrives stays buffered, and is nak'ed back by ``stop_fetching`` or ``close``).
        """
        if self._closed:
            return []
        puller, client = self._puller, self._client
        if not self._started or puller is None or client is None:
            raise ProviderError(f"{self.describe()}: fetch before start")
        if max_messages < 1:
            return []
        if self._paused:
            self._paused = False
        loop = asyncio.get_running_loop()
        if not puller.buffer:
            deadline = loop.time() + self._poll_timeout
            # a stop_fetching() during this wait ends it: no new pull request then
            while not puller.buffer and not self._closed and not self._paused:
                if puller.error is not None:
                    error, puller.error = puller.error, None
                    raise ProviderError(f"{self.describe()}: {error}")
                if client.is_closed:
                    raise ProviderError(f"{self.describe()}: the connection is closed")
                now = loop.time()
                if now >= deadline:
                    break
                if not puller.live(now):
                    try:
                        await puller.pull(max_messages, self._poll_timeout)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        raise self._error("pulling messages", exc) from None
                puller.ready.clear()
                wait_until = min(deadline, puller.deadline() or deadline)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(wait_until):
                        await puller.ready.wait()
        taken = puller.take(max_messages)
        if self._hold_back is not None:  # delayed publishes not yet due: nak'ed back
            taken = self._hold_back.due(taken)
        return [self._delivery(msg) for msg in taken]

    def _delivery(self, msg: Msg) -> Delivery:
        meta = msg.metadata
        headers = dict(msg.headers) if msg.headers else {}
        seq = meta.sequence.stream
        message_id = headers.get("Nats-Msg-Id") or f"{meta.stream}:{seq}"
        metadata = {
            "headers": headers,
            "subject": msg.subject,
            "stream": meta.stream,
            "consumer": meta.consumer,
            "stream_sequence": seq,
            "consumer_sequence": meta.sequence.consumer,
            "num_delivered": meta.num_delivered,
            "num_pending": meta.num_pending,
            "timestamp": meta.timestamp,
            "message_id": message_id,
            "attempt": meta.num_delivered,
            "queue": meta.stream,
        }
        data = msg.data
        return Delivery(
            raw=data,
            body=data,
            message_id=message_id,
            metadata=metadata,
            attempt=meta.num_delivered,
            token=_Token(msg),
        )

    async def stop_fetching(self) -> None:
        """A drain begins (:class:`~loafer_core.provider.Drainable`): stop the pull
        subscription (the server drops our waiting request) and nak back every buffered,
        unhanded message at once. A later ``fetch`` pulls again."""
        if self._closed or not self._started or self._puller is None:
            return
        self._paused = True
        puller = self._puller
        try:
            async with asyncio.timeout(self._close_timeout):
                await puller.stop()
        except TimeoutError:
            logger.warning(
                "%s: stopping the pull subscription took more than close_timeout (%ss)",
                self.describe(),
                self._close_timeout,
            )
        await self._give_back(puller.take(len(puller.buffer)))

    # -- settling -------------------------------------------------------------------------

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Settle one delivery (see the module docstring for the mapping). A broker error
        raises ProviderError and leaves the delivery unsettled (safe to retry)."""
        token = delivery.token
        if not isinstance(token, _Token):
            raise ProviderError(f"{self.describe()}: {delivery!r} was not fetched from NATS")
        if token.settled:
            logger.warning(
                "%s: message %s settled twice (%r ignored)",
                self.describe(),
                delivery.message_id,
                outcome,
            )
            return
        msg = token.message
        kind = outcome.kind
        try:
            if kind is OutcomeKind.ACCEPT:
                await msg.ack()
            elif kind is OutcomeKind.REJECT:
                await self._reject(msg, delivery, outcome.reason or "rejected")
            elif self._exhausted(delivery):
                reason = (
                    f"max_deliver ({self._max_deliver}) reached: the server would not "
                    f"deliver it again ({kind.name} asked)"
                )
                logger.warning(
                    "%s: message %s: %s; %s",
                    self.describe(),
                    delivery.message_id,
                    reason,
                    "dead-lettered" if self.dead_letter_subject else "terminated",
                )
                await self._reject(msg, delivery, reason)
            elif kind is OutcomeKind.RETRY and outcome.delay:
                await msg.nak(delay=outcome.delay)
            else:
                await msg.nak()
        except (asyncio.CancelledError, LoaferError):
            raise
        except Exception as exc:
            raise self._error(
                f"settling message {delivery.message_id} with {outcome!r}", exc
            ) from None
        token.settled = True

    def _exhausted(self, delivery: Delivery) -> bool:
        limit = self._max_deliver
        return limit is not None and (delivery.attempt or 0) >= limit

    async def _reject(self, msg: Msg, delivery: Delivery | None, reason: str) -> None:
        """Dead-letter (when a subject is set: publish, await its ack) then ``term``."""
        subject = self.dead_letter_subject
        if subject:
            js = self._js
            if js is None:
                raise ProviderError(f"{self.describe()}: not started")
            headers = dict(msg.headers or {})
            headers.pop("Nats-Expected-Stream", None)
            seq = msg.metadata.sequence.stream
            headers[REJECT_REASON_HEADER] = _one_line(reason) or "rejected"
            headers[REJECTED_FROM_HEADER] = f"{self.stream}/{self.consumer}/{msg.subject}"
            headers[DEAD_LETTER_ID_HEADER] = f"loafer-dead:{self.stream}:{seq}"
            headers.update(
                dead_headers(
                    headers,
                    reason=reason,
                    attempts=delivery.attempt if delivery is not None else None,
                    origin=msg.subject,
                )
            )
            try:
                await js.publish(subject, msg.data, timeout=self._publish_timeout, headers=headers)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                message_id = delivery.message_id if delivery is not None else seq
                raise self._error(
                    f"dead-lettering message {message_id} to {subject!r}", exc
                ) from None
        await msg.term()

    def dead_letter_store(self) -> NATSDeadLetters:
        """The dead-letter stream's store (:class:`~loafer_core.deadletters.HasDeadLetters`):
        a replay publishes each message to the subject it came from (awaiting the
        stream's ack, with a ``Nats-Msg-Id`` the stream de-duplicates), then deletes it
        from the dead-letter stream. ConfigurationError without a dead-letter subject."""
        if not self.dead_letter_subject:
            raise ConfigurationError(
                f"{self.describe()}: no dead_letter_subject: REJECT keeps nothing to read"
            )
        return NATSDeadLetters(
            self._url,
            self.dead_letter_subject,
            self._options,
            self._secrets,
            timeout=self._publish_timeout,
        )

    async def extend_leases(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Reset the ack timer of each unsettled delivery (``in_progress``, +WPI): the
        server extends it by the consumer's ``ack_wait``, whatever ``seconds`` says."""
        try:
            for delivery in deliveries:
                token = delivery.token
                if isinstance(token, _Token) and not token.settled:
                    await token.message.in_progress()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self._error("extending leases", exc) from None

    # -- health and shutdown --------------------------------------------------------------

    async def health(self) -> bool:
        """True while started and connected."""
        client = self._client
        return self._started and not self._closed and client is not None and client.is_connected

    async def backlog(self) -> int | None:
        """Messages not yet delivered to the consumer (its ``num_pending``, one consumer
        info request); ``None`` when not connected or no answer within
        ``publish_timeout``."""
        js, client = self._js, self._client
        if js is None or client is None or self._closed or not client.is_connected:
            return None
        try:
            info = await js.consumer_info(self.stream, self.consumer, timeout=self._publish_timeout)
        except Exception as exc:  # a cancellation passes through
            logger.debug(
                "%s: backlog not read: %s", self.describe(), scrub(repr(exc), self._secrets)
            )
            return None
        pending = info.num_pending
        return pending if isinstance(pending, int) else None

    async def close(self) -> None:
        """Stop pulling, nak back unhanded messages, flush acks, disconnect. Idempotent,
        bounded by ``close_timeout``."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._close_timeout
        puller = self._puller
        if puller is not None:
            puller.ready.set()
        try:
            starting = self._starting
            if starting is not None and not starting.done():
                starting.cancel()
                await asyncio.wait({starting}, timeout=self._close_timeout)
            async with asyncio.timeout_at(deadline):
                if self._hold_back is not None:
                    await self._hold_back.wait(self._close_timeout / 2)
                if puller is not None:
                    await puller.stop()
                    left = puller.take(len(puller.buffer))
                    await self._give_back(left)
                    if left:
                        logger.info(
                            "%s: gave back %d unhandled messages", self.describe(), len(left)
                        )
        except TimeoutError:
            logger.warning(
                "%s: close took more than close_timeout (%ss); disconnecting (what was not "
                "acked is redelivered after ack_wait)",
                self.describe(),
                self._close_timeout,
            )
        finally:
            client, self._client = self._client, None
            self._js = None
            if client is not None:
                await close_connection(client, max(1.0, deadline - loop.time()))
