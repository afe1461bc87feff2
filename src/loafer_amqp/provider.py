"""AMQP 1.0 consumer: :class:`AMQPProvider` (python-qpid-proton, reactor thread bridged to asyncio).

See ``docs/providers/amqp.md`` for the threading model, addresses per broker, the
outcome table and the reconnect behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any

from proton import Condition
from proton import Delivery as ProtonDelivery
from proton.reactor import AtLeastOnce, Container

from loafer_amqp._bridge import ConnectionSettings, ReactorClient, Timer, logger, settings_from
from loafer_amqp._convert import body_of, message_metadata
from loafer_amqp._credit import CreditGate
from loafer_amqp._peer import RABBITMQ_MODIFIED_SINCE, peer_outcome
from loafer_amqp._verify import verify_address
from loafer_amqp.settings import AMQPSettings, BrokerProfile
from loafer_amqp.translator import AMQPTranslator
from loafer_core.errors import ConfigurationError, LoaferError, ProviderError
from loafer_core.outcome import RELEASE, Outcome, OutcomeKind
from loafer_core.provider import Capabilities, Delivery, Description, Support

__all__ = ["RABBITMQ_MODIFIED_SINCE", "AMQPProvider", "BrokerProfile"]

#: Longest reason text sent in a `rejected` outcome's error condition.
MAX_REASON = 1024


class _Token:
    """Settlement handle of one delivery (asyncio side; holds no proton object)."""

    __slots__ = ("client", "generation", "owner", "seq", "settled")

    def __init__(self, owner: AMQPProvider, client: _ReceiverClient, seq: int, gen: int) -> None:
        self.owner = owner
        self.client = client
        self.seq = seq
        self.generation = gen
        self.settled = False

    def __repr__(self) -> str:
        return f"<AMQP delivery #{self.seq} gen {self.generation}>"


class _ReceiverClient(ReactorClient):
    """Reactor side of an :class:`AMQPProvider`: one receiver link with explicit credit."""

    def __init__(
        self,
        owner: AMQPProvider,
        settings: ConnectionSettings,
        address: str,
        capacity: int,
        profile: BrokerProfile,
    ) -> None:
        super().__init__(settings, label=f"receiver:{address}")
        self.owner = owner
        self.address = address
        self.capacity = capacity
        self.profile = profile
        self.use_modified = profile == "generic"
        self._receiver: Any = None
        self._seq = 0
        self._unsettled: dict[int, ProtonDelivery] = {}
        self._held: dict[int, Timer] = {}
        self._replenish_due = False
        self._paused = False
        self.credit_gate = CreditGate(capacity, self.label)

    # -- connection hooks (reactor thread)

    def check_peer(self, properties: dict[str, Any]) -> LoaferError | None:
        self.use_modified, error = peer_outcome(self.profile, properties)
        return error

    def open_links(self, container: Container, session: Any) -> None:
        self._receiver = container.create_receiver(
            session,
            source=self.address,
            name=f"loafer-{self.address}-{self.generation}",
            options=AtLeastOnce(),
        )

    def all_links_attached(self) -> bool:
        link = self._receiver
        return bool(
            link is not None
            and link.state & link.REMOTE_ACTIVE
            and link.remote_source.address is not None
        )

    def describe_link(self, link: Any) -> str:
        return f"address {self.address!r}"

    def links_ready(self) -> None:
        self.replenish()

    def generation_lost(self, old_generation: int) -> None:
        for task in self._held.values():
            task.cancel()
        if self._unsettled:
            logger.warning(
                "%s: %d unsettled deliveries dropped with the old connection/session; "
                "the broker redelivers them",
                self.label,
                len(self._unsettled),
            )
        self._held.clear()
        self._unsettled.clear()
        self._receiver = None
        self._replenish_due = False
        self.post(self.owner._purge, self, old_generation)

    def after_commands(self) -> None:
        self.request_replenish()

    def request_replenish(self) -> None:
        """Top up credit once the dispositions just made are encoded for the wire.

        proton writes a receiver's flow frame before pending dispositions; granting
        credit in the same turn would let the broker send a new message while it still
        counts the settled one as unacknowledged (capacity + 1 at the broker). So credit
        is granted when the reactor has handled every pending event (the transport has
        encoded the dispositions) and is about to wait for I/O.
        """
        self._replenish_due = True

    def before_wait(self) -> None:
        if self._replenish_due:
            self._replenish_due = False
            self.replenish()

    def replenish(self) -> None:
        """Grant credit so that credit + unsettled deliveries == capacity (never more),
        once the link's credit has drained (see :mod:`loafer_amqp._credit`)."""
        link = self._receiver
        if self._closing or self._paused or link is None or not self.all_links_attached():
            return
        grant = self.credit_gate.grant(link.credit, len(self._unsettled))
        if grant > 0:
            link.flow(grant)

    # -- messages (reactor thread)

    def on_message(self, event: Any) -> None:
        try:
            self._on_message(event)
        except Exception:
            logger.exception("%s: error handling an incoming message", self.label)

    def _on_message(self, event: Any) -> None:
        dlv = event.delivery
        if self._closing or event.link != self._receiver:
            return  # a late transfer on a dead link: the broker requeues it
        credit = self._receiver.credit
        self.credit_gate.received(credit)
        if credit <= 0:
            self.request_replenish()  # drained: settled slots may be granted again
        if self._paused:  # the credit granted before the drain began: give it straight back
            dlv.update(ProtonDelivery.RELEASED)
            dlv.settle()
            return
        self._seq += 1
        seq = self._seq
        try:
            message = event.message
            body, body_type = body_of(message)
            meta = message_metadata(message, self.address, body_type)
        except Exception as exc:
            logger.exception("%s: undecodable message rejected", self.label)
            dlv.local.condition = Condition("loafer:undecodable", f"cannot decode: {exc}"[:512])
            dlv.update(ProtonDelivery.REJECTED)
            dlv.settle()
            self.request_replenish()
            return
        self._unsettled[seq] = dlv
        attempt = meta["delivery_count"] + 1 if self.profile == "generic" else None
        meta["attempt"] = attempt
        meta["queue"] = self.address
        delivery = Delivery(
            raw=body,
            body=body,
            message_id=meta["message_id"],
            metadata=meta,
            attempt=attempt,
            token=_Token(self.owner, self, seq, self.generation),
        )
        self.post(self.owner._deliver, delivery)

    def pause_receiving(self) -> None:
        """A drain began: grant no more credit; release what still arrives."""
        self._paused = True

    def resume_receiving(self) -> None:
        """Fetching again after a pause: credit flows again."""
        if self._paused:
            self._paused = False
            self.request_replenish()

    # -- settlement (reactor thread; queued by the asyncio side)

    def settle_delivery(
        self, seq: int, generation: int, kind: OutcomeKind, delay: float | None, reason: str | None
    ) -> None:
        if generation != self.generation:
            logger.debug("%s: delivery #%d is from a dead session; not settled", self.label, seq)
            return
        dlv = self._unsettled.get(seq)
        if dlv is None or seq in self._held:
            return
        if kind is OutcomeKind.RETRY and delay and not self._closing:
            self._held[seq] = self.schedule(delay, lambda: self._retry_now(seq, generation))
            return
        self._apply(seq, dlv, kind, reason)

    def _retry_now(self, seq: int, generation: int) -> None:
        if generation != self.generation:
            return
        self._held.pop(seq, None)
        dlv = self._unsettled.get(seq)
        if dlv is not None:
            self._apply(seq, dlv, OutcomeKind.RETRY, None)
            self.request_replenish()

    def _apply(self, seq: int, dlv: ProtonDelivery, kind: OutcomeKind, reason: str | None) -> None:
        del self._unsettled[seq]
        self._held.pop(seq, None)
        if kind is OutcomeKind.ACCEPT:
            dlv.update(ProtonDelivery.ACCEPTED)
        elif kind is OutcomeKind.REJECT:
            dlv.local.condition = Condition("loafer:rejected", (reason or "rejected")[:MAX_REASON])
            dlv.update(ProtonDelivery.REJECTED)
        elif kind is OutcomeKind.RETRY and self.use_modified:
            dlv.local.failed = True
            dlv.update(ProtonDelivery.MODIFIED)
        else:  # RELEASE, or RETRY on a broker without `modified`
            dlv.update(ProtonDelivery.RELEASED)
        dlv.settle()

    def before_shutdown(self) -> None:
        # Held retries are settled now (as retries); everything else unsettled is released.
        for seq, task in list(self._held.items()):
            task.cancel()
            dlv = self._unsettled.get(seq)
            self._held.pop(seq, None)
            if dlv is not None:
                self._apply(seq, dlv, OutcomeKind.RETRY, None)
        for seq, dlv in list(self._unsettled.items()):
            self._apply(seq, dlv, OutcomeKind.RELEASE, None)
        if self._receiver is not None:
            self._receiver.close()

    def forget_links(self) -> None:
        self._receiver = None
        self._unsettled.clear()
        self._held.clear()

    def on_thread_end(self, reason: str) -> None:
        self.owner._wake()


class AMQPProvider:
    """Consume from one AMQP 1.0 address with explicit, bounded credit.

    Takes one :class:`~loafer_amqp.settings.AMQPSettings`, or the same values as flat
    keywords, ``url`` and ``address`` first (positional or not)::

        AMQPProvider("amqp://broker:5672", "/amq/queue/orders", broker="rabbitmq")
        AMQPProvider(AMQPSettings(address="/amq/queue/orders",
                                  connection=Connection(url="amqp://broker:5672"),
                                  broker="rabbitmq"))

    The settings (:attr:`settings`) document each value: the address, the ``broker``
    outcome profile, SASL (``user``, ``password``, ...), TLS (``ssl_*``), the timeouts
    (``connect_timeout``, ``fetch_wait``, ...), ``batch_window`` and
    ``max_retry_delay``. A wrong value is a ``ConfigurationError`` at construction.
    """

    default_translator = AMQPTranslator()
    settings_type = AMQPSettings

    def __init__(
        self,
        settings: AMQPSettings | str | None = None,
        address: str | None = None,
        /,
        **options: Any,
    ) -> None:
        self.settings = settings_from(AMQPSettings, "AMQPProvider", settings, address, options)
        s = self.settings
        self._connection = ConnectionSettings.of(s)  # what the reactor thread connects with
        self.address = s.address
        self.broker: BrokerProfile = s.broker
        self._connect_timeout = s.timeouts.connect
        self._close_timeout = s.timeouts.close
        self._fetch_wait = s.timeouts.poll
        self._batch_window = s.batch_window
        self._max_retry_delay = s.max_retry_delay
        self._init_state()

    def _init_state(self) -> None:
        """The state of a provider not started yet."""
        self._capacity = 0
        self._client: _ReceiverClient | None = None
        self._reconnects_before = 0  # recoveries of the clients replaced
        self._buffer: deque[Delivery] = deque()
        self._receiving_paused = False
        self._arrived: asyncio.Event | None = None
        self._min_generation = 0
        self._restart_due = False
        self._closed = False

    def description(self) -> Description:
        """The address, the broker (no secret) and the AsyncAPI bindings: see
        :class:`~loafer_core.provider.Describable`."""
        return self._connection.description(self.address)

    def __repr__(self) -> str:
        return (
            f"AMQPProvider(url={self._connection.display_url!r}, address={self.address!r}, "
            f"broker={self.broker!r})"
        )

    def describe(self) -> str:
        """Short description for logs (no credentials)."""
        return f"amqp {self.address} at {self._connection.display_url}"

    @property
    def capabilities(self) -> Capabilities:
        """What this provider does; RETRY delays are held client-side (EMULATED)."""
        return Capabilities(
            delayed_retry=Support.EMULATED,
            dead_letter=Support.NATIVE,
            attempt_count=Support.NATIVE if self.broker == "generic" else Support.NONE,
            release_uncounted=Support.NATIVE,
            ordering_keys=Support.NONE,
            lease_extension=Support.NONE,
            max_retry_delay=self._max_retry_delay,
        )

    @property
    def retry_outcome(self) -> str:
        """The AMQP outcome RETRY is sent as on this connection: ``modified`` or ``released``."""
        client = self._client
        modified = client.use_modified if client is not None else self.broker == "generic"
        return "modified" if modified else "released"

    @property
    def peer_properties(self) -> dict[str, Any]:
        """The broker's connection properties (product, version, ...), once connected."""
        client = self._client
        return dict(client.peer_properties) if client is not None else {}

    @property
    def reconnects(self) -> int:
        """Times the links were attached again after the connection or session was lost
        (the ``loafer_reconnects`` metric; :class:`~loafer_core.provider.Reconnects`)."""
        client = self._client
        return self._reconnects_before + (client.recoveries if client is not None else 0)

    @property
    def deliveries_beyond_credit(self) -> int:
        """Deliveries the broker sent beyond the credit granted, on the current reactor
        thread (a statistic; 0 unless the broker breaks the credit bound: see the docs)."""
        client = self._client
        return client.credit_gate.beyond_credit if client is not None else 0

    async def verify(self) -> None:
        """Check the address as ``start`` would, receiving nothing.

        A connection of its own: it opens (credentials, the broker's properties checked
        against ``broker``), attaches a receiver link to the address with no credit (so
        the broker refuses an unknown address and sends nothing), then detaches and
        closes; its reactor thread has ended when this returns, also when cancelled.
        ConfigurationError for a refused address or login, ProviderError when the broker
        cannot be reached within ``connect_timeout``. On RabbitMQ, ``/queue/NAME``
        declares a missing queue on attach, as ``start`` would; ``/amq/queue/NAME``
        declares nothing.
        """
        await verify_address(
            self._connection,
            self.address,
            check_peer=lambda properties: peer_outcome(self.broker, properties)[1],
            connect_timeout=self._connect_timeout,
            close_timeout=self._close_timeout,
        )

    async def start(self, capacity: int) -> None:
        """Connect, attach the receiver and grant ``capacity`` credit.

        Raises ConfigurationError for an unknown address or refused credentials (with
        the broker's error text) and ProviderError when the broker cannot be reached.
        """
        if self._closed:
            raise ProviderError("AMQPProvider is closed")
        if self._client is not None and self._client.dead is None:
            raise ProviderError("AMQPProvider.start() called twice")
        # (After a failed start, the dispatcher calls start() again: that is allowed.)
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ConfigurationError(f"capacity must be a positive int, got {capacity!r}")
        self._capacity = capacity
        self._arrived = asyncio.Event()
        await self._open()

    async def _open(self) -> None:
        client = _ReceiverClient(self, self._connection, self.address, self._capacity, self.broker)
        old = self._client
        if old is not None:
            self._reconnects_before += old.recoveries
        self._client = client
        self._buffer.clear()
        self._min_generation = 0  # generations count per client
        client.start_thread(asyncio.get_running_loop())
        try:
            await client.wait_ready(self._connect_timeout)
        except BaseException:
            await client.shutdown(self._close_timeout)
            raise
        logger.info("%r started with credit %d", self, self._capacity)

    # -- callbacks from the reactor (event loop thread)

    def _deliver(self, delivery: Delivery) -> None:
        token = delivery.token
        assert isinstance(token, _Token)
        if token.client is not self._client or token.generation < self._min_generation:
            return
        if self._receiving_paused:
            # the drain began while it was on its way: back to the broker at once
            token.settled = True
            client = token.client
            with contextlib.suppress(ProviderError):  # reactor gone: the broker requeues it
                client.call(
                    client.settle_delivery, token.seq, token.generation, RELEASE.kind, None, None
                )
            return
        self._buffer.append(delivery)
        self._wake()

    def _purge(self, client: _ReceiverClient, old_generation: int) -> None:
        if client is not self._client:
            return
        self._min_generation = max(self._min_generation, old_generation + 1)
        kept = [d for d in self._buffer if d.token.generation > old_generation]
        dropped = len(self._buffer) - len(kept)
        if dropped:
            logger.info("%r: %d buffered deliveries dropped with the old session", self, dropped)
        self._buffer = deque(kept)

    def _wake(self) -> None:
        if self._arrived is not None:
            self._arrived.set()

    # -- the Provider protocol

    async def _live_client(self) -> _ReceiverClient:
        if self._closed:
            raise ProviderError("AMQPProvider is closed")
        client = self._client
        if client is None:
            raise ProviderError("AMQPProvider.start() has not been called")
        if client.dead is None:
            return client
        if not self._restart_due:
            self._restart_due = True
            self._buffer.clear()
            raise ProviderError(f"AMQP reactor thread stopped ({client.dead}); will restart it")
        self._restart_due = False
        await self._open()
        self._reconnects_before += 1  # a new reactor thread, connected again
        assert self._client is not None
        return self._client

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        """Up to ``max_messages`` deliveries; waits up to ``fetch_wait`` for the first one.

        Buffered deliveries are returned at once; after an empty wait, up to
        ``batch_window`` more for the rest of the burst. Cancelling hands nothing out.
        """
        client = await self._live_client()
        if self._receiving_paused:
            self._receiving_paused = False
            client.call(client.resume_receiving)
        if max_messages <= 0:
            return []
        assert self._arrived is not None
        if not self._buffer:
            try:
                async with asyncio.timeout(self._fetch_wait):
                    while not self._buffer and client.dead is None and not self._closed:
                        self._arrived.clear()
                        await self._arrived.wait()
            except TimeoutError:
                return []
            if self._closed:
                return []
            if client.dead is not None and not self._buffer:
                await self._live_client()  # raises ProviderError
            # The first one is here: give the rest of its burst a moment to land, so that
            # a fetch after an idle spell returns a batch rather than a single delivery.
            if self._batch_window and len(self._buffer) < max_messages:
                try:
                    async with asyncio.timeout(self._batch_window):
                        while len(self._buffer) < max_messages and client.dead is None:
                            self._arrived.clear()
                            await self._arrived.wait()
                except TimeoutError:
                    pass
        out: list[Delivery] = []
        while self._buffer and len(out) < max_messages:
            out.append(self._buffer.popleft())
        return out

    async def stop_fetching(self) -> None:
        """A drain begins: release buffered deliveries at once and grant no more credit.

        (:class:`loafer_core.provider.Drainable`.) Deliveries the broker sends on credit
        granted earlier are released as they arrive; a later ``fetch`` grants credit again.
        """
        client = self._client
        if self._closed or client is None or client.dead is not None:
            return
        client.call(client.pause_receiving)
        self._receiving_paused = True
        buffered = list(self._buffer)
        self._buffer.clear()
        for delivery in buffered:
            await self.settle(delivery, RELEASE)
        if buffered:
            logger.info(
                "%r: released %d buffered deliveries as the drain began", self, len(buffered)
            )

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Queue the settlement for the reactor thread (flushed by :meth:`close` at the latest).

        Deliveries of a connection or session that has since died are not settled: the
        broker has already requeued them.
        """
        token = delivery.token
        if not isinstance(token, _Token) or token.owner is not self:
            raise ValueError(f"{delivery!r} was not fetched from this provider")
        if token.settled:
            logger.warning("%r: %r settled twice; ignored", self, delivery)
            return
        token.settled = True
        client = token.client
        if client is not self._client or client.dead is not None:
            logger.info("%r: %r belongs to a dead connection; not settled", self, delivery)
            return
        delay = outcome.delay
        if delay is not None and delay > self._max_retry_delay:
            logger.warning(
                "%r: RETRY delay %.1fs capped at max_retry_delay=%.1fs",
                self,
                delay,
                self._max_retry_delay,
            )
            delay = self._max_retry_delay
        try:
            client.call(
                client.settle_delivery,
                token.seq,
                token.generation,
                outcome.kind,
                delay,
                outcome.reason,
            )
        except ProviderError:
            logger.info("%r: reactor gone; %r will be redelivered", self, delivery)

    async def close(self) -> None:
        """Release every unsettled delivery (held retries are settled as retries), disconnect."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        self._wake()
        client = self._client
        if client is not None:
            await client.shutdown(self._close_timeout)

    async def health(self) -> bool:
        """True while the reactor runs and the receiver link is attached."""
        client = self._client
        return bool(client is not None and client.dead is None and client.attached)
