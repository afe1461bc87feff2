"""The provider contract: what a broker plugin implements.

A provider consumes from one queue. The dispatcher calls, in order:

1. ``await provider.start(capacity)``: connect, check the queue exists (raise
   :class:`~loafer_core.errors.ConfigurationError` with what to fix if it does not),
   size prefetch/credit to ``capacity`` (the route's ``max_concurrency``). A start that
   raises anything but ``ConfigurationError`` is called again, on the same object, after
   a backoff, until it succeeds or the route is stopped (``close`` is not called in
   between): a failed start must leave nothing half-open that a second start would
   trip over. ``close`` is called after a start that failed for good
   (``ConfigurationError``), after one cancelled by a stop, and by ``loafer check`` after
   any start (of a provider without :class:`Verifiable`): it must cope with a provider
   that never started.
2. ``await provider.fetch(n)`` repeatedly, with ``n`` the route's free capacity: return
   between 0 and ``n`` deliveries. It may wait (long poll) but should return within
   about 20 seconds, and it must be cancellable (a stop cancels it): a cancelled fetch
   hands nothing out, and what it received (or a read whose reply comes after the
   cancellation) stays the provider's, handed out by a later fetch or released by
   :meth:`Drainable.stop_fetching` or ``close``; it is not lost.
3. ``await provider.settle(delivery, outcome)`` for each delivery (it may batch
   internally; it returns once the settlement is done or safely queued to be flushed
   by ``close``). Normally once; but it **may be called again for the same delivery**:
   the dispatcher retries a settle that raised (up to 5 tries, with backoff), and sends
   again a settle the shutdown's deadline cancelled. A repeated settle must have no
   further effect: in particular a RETRY or REJECT that re-publishes a copy must not
   publish a second one (remember that the copy was published, or is being published).
4. ``await provider.close()``: flush pending settlements, release anything fetched and
   not handed out, disconnect. Idempotent. Bounded by the manager (``close_timeout``,
   the shutdown's deadline): past it, it is cancelled.

Which calls may overlap (each from its own task):

- ``fetch`` is never called while another ``fetch`` runs; it overlaps ``settle`` (of
  other deliveries), ``extend_leases`` and, as a drain begins, ``stop_fetching`` (the
  fetch is cancelled first, but may still be unwinding).
- ``settle`` calls overlap one another (up to ``max_concurrency`` at once, each for a
  different delivery), and an ``extend_leases`` that includes the same delivery: an
  extension arriving after the settle must not undo it (hide a RELEASED message again).
- ``close`` is called once every worker and the lease loop have ended, after the final
  releases; a settle that ignored its cancellation may in theory still be running.

Leases (:class:`LeaseExtender`): the dispatcher calls ``extend_leases(deliveries,
lease_duration)`` (never more than ``lease_duration``) every third of the lease for the
deliveries still unsettled; a provider may cap it at the broker's limit. A delivery
whose lease lapses (its handler ran longer and nothing extended it) is the broker's
again: it is delivered again, **counting an attempt** where the provider counts
attempts (so ``max_attempts`` also ends a message whose handler always overruns); the
first delivery's handler is not stopped, and its late settle should be ignored (or
raise :class:`~loafer_core.errors.ProviderError`) rather than applied to the new
delivery; where the broker cannot tell them apart, say so in your documentation.

Deliveries (:class:`Delivery`): fill ``message_id`` (the broker's id), ``attempt`` (1 on
the first delivery, where the broker counts) and ``ordering_key`` (where claimed); in
``metadata``, give at least ``message_id``, ``headers`` (the application headers, a
mapping: what :func:`loafer_core.header` and the kit read), ``attempt`` and ``queue``,
then whatever else the broker tells (routing key, receive count, attributes).

Transient failures raise :class:`~loafer_core.errors.ProviderError` (the dispatcher
retries with backoff); wrong configuration raises ``ConfigurationError`` (fatal).

Optional abilities are separate small protocols: :class:`LeaseExtender`,
:class:`Drainable`, :class:`Publisher`, :class:`Verifiable`, :class:`HealthChecker`,
:class:`Backlog`, :class:`Describable` (also for publishers). The conformance kit
(:class:`loafer_core.testing.ProviderContract`) tests this contract;
``docs/writing-a-provider.md`` walks through an example.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from loafer_core.outcome import Outcome

__all__ = [
    "Backlog",
    "Capabilities",
    "Delivery",
    "Describable",
    "Description",
    "Drainable",
    "HealthChecker",
    "LeaseExtender",
    "Provider",
    "Publisher",
    "PublisherLifecycle",
    "Reconnects",
    "Server",
    "Support",
    "Verifiable",
]


class Support(enum.Enum):
    """How a provider supports an ability: not at all, natively, or emulated client-side.

    Core treats ``NATIVE`` and ``EMULATED`` alike: a route needing an ability is refused
    only where it is ``NONE``. The difference is for the people running the service
    (shown by ``loafer providers`` and in each provider's documentation):

    - ``NATIVE``: the broker does it itself, in the settlement (SQS's visibility timeout
      for a delayed retry, RabbitMQ's dead-letter exchange, a database transaction).
    - ``EMULATED``: the plugin builds it from other operations, so it has a cost or a
      window the native form has not: a copy published then the original acknowledged
      (a crash in between leaves a duplicate), a header the plugin rewrites to count
      attempts, a delivery held unsettled in the consumer for a delay (redelivered at
      once if the consumer dies).
    """

    NONE = "none"
    NATIVE = "native"
    EMULATED = "emulated"

    def __bool__(self) -> bool:
        return self is not Support.NONE


def _support(value: Support | bool) -> Support:
    if isinstance(value, Support):
        return value
    return Support.NATIVE if value else Support.NONE


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do; routes that need more fail at start-up.

    Booleans are accepted for every field and stored as :class:`Support`.

    - ``delayed_retry``: ``RETRY(delay)`` waits ``delay`` seconds before redelivery.
    - ``dead_letter``: ``REJECT`` moves the message somewhere inspectable.
    - ``attempt_count``: deliveries carry ``attempt`` (1 on first delivery), so
      ``max_attempts`` can work.
    - ``release_uncounted``: ``RELEASE`` redelivers without counting an attempt.
    - ``ordering_keys``: deliveries may carry an ``ordering_key``.
    - ``lease_extension``: the provider implements :class:`LeaseExtender`.
    - ``max_retry_delay``: the longest delay ``RETRY`` may ask for, if limited.
    - ``retry_waits``: a plain ``RETRY`` (no delay) is redelivered only after a wait of
      the broker's own (SQS's visibility timeout), so routes do not add their default
      retry backoff (:data:`~loafer_core.policy.DEFAULT_RETRY`) to it.
    """

    delayed_retry: Support | bool = Support.NONE
    dead_letter: Support | bool = Support.NONE
    attempt_count: Support | bool = Support.NONE
    release_uncounted: Support | bool = Support.NONE
    ordering_keys: Support | bool = Support.NONE
    lease_extension: Support | bool = Support.NONE
    max_retry_delay: float | None = None
    retry_waits: Support | bool = Support.NONE

    def __post_init__(self) -> None:
        for name in (
            "delayed_retry",
            "dead_letter",
            "attempt_count",
            "release_uncounted",
            "ordering_keys",
            "lease_extension",
            "retry_waits",
        ):
            object.__setattr__(self, name, _support(getattr(self, name)))


@dataclass(eq=False, slots=True)
class Delivery:
    """One message handed out by a provider, until it is settled.

    - ``raw``: the message as the provider gives it to translators (documented by each
      provider; ``bytes`` for most, the SQS message dict for SQS). Never mutated.
    - ``body``: the payload (``bytes`` or ``str``, or the object a memory queue holds).
    - ``message_id``: the broker's id, for logs.
    - ``metadata``: what the provider knows (headers, ids, attributes); merged under the
      translator's metadata before the handler sees it.
    - ``attempt``: 1 on the first delivery, where the provider counts (else ``None``).
    - ``ordering_key``: deliveries with the same key are handled one at a time, in order.
    - ``token``: provider-private settlement handle (receipt handle, delivery tag, ...).
    - ``error``: set by the route when the translator or handler raised (what the error
      handler was given), for middlewares to see; ``None`` otherwise.
    """

    raw: Any
    body: Any = None
    message_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    attempt: int | None = None
    ordering_key: str | None = None
    token: Any = None
    error: BaseException | None = None

    def __repr__(self) -> str:
        return (
            f"Delivery(message_id={self.message_id!r}, attempt={self.attempt!r}, "
            f"ordering_key={self.ordering_key!r})"
        )


@runtime_checkable
class Provider(Protocol):
    """A source of deliveries from one queue. See the module docstring for the lifecycle."""

    @property
    def capabilities(self) -> Capabilities:
        """What this provider supports natively."""
        ...

    async def start(self, capacity: int) -> None:
        """Connect and validate; size prefetch/credit to ``capacity``."""
        ...

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        """Return up to ``max_messages`` deliveries (possibly none after a wait)."""
        ...

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Settle one delivery with ``outcome``; called again for the same delivery (a
        retry, a resend after a cancellation), it has no further effect."""
        ...

    async def close(self) -> None:
        """Flush settlements, release unhanded deliveries, disconnect. Idempotent."""
        ...


@runtime_checkable
class LeaseExtender(Protocol):
    """Optional: the provider's deliveries hold a lease (visibility timeout) that can be extended.

    ``lease_duration`` is the lease a fetched delivery starts with, in seconds (``None``
    when its deliveries hold no lease); the dispatcher calls :meth:`extend_leases` for
    deliveries still unsettled every third of it, and stops once they are settled. A
    provider whose deliveries hold a lease it cannot extend still gives
    ``lease_duration`` (with ``lease_extension`` not claimed): ``loafer check`` compares
    it with the route's ``handler_timeout`` and the kit tests that a lapsed lease
    redelivers.
    """

    @property
    def lease_duration(self) -> float | None:
        """Seconds a delivery stays leased after fetch or extension (None: no lease)."""
        ...

    async def extend_leases(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Extend each delivery's lease to ``seconds`` from now (the dispatcher passes
        ``lease_duration``). A delivery settled meanwhile must stay as settled."""
        ...


@runtime_checkable
class Drainable(Protocol):
    """Optional: told when a drain begins, so pushed deliveries stop arriving at once.

    Providers the broker pushes to (a prefetch buffer, AMQP credit) implement it: stop
    receiving and give back what is buffered, so those messages are available to other
    consumers now rather than at :meth:`Provider.close` (which comes only once in-flight
    handlers finished, up to the shutdown timeout). A pull provider that buffers (a batch
    read larger than asked, the reply of a cancelled fetch) gains the same by it. Called
    once, as the drain begins, while handlers still run and settle. A later ``fetch``
    may resume.
    """

    async def stop_fetching(self) -> None:
        """Stop receiving; return buffered, unhanded deliveries to the broker."""
        ...


@runtime_checkable
class Publisher(Protocol):
    """Optional: put a message on the broker."""

    async def publish(
        self, body: Any, *, headers: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        """Publish one message; returns once the broker has it."""
        ...


@runtime_checkable
class PublisherLifecycle(Protocol):
    """Optional, and what every bundled publisher has: open and close a publisher.

    ``start()`` connects (and checks the target exists where the broker tells it),
    idempotent; raising ``ConfigurationError`` for what no retry fixes (a missing
    exchange, refused credentials). ``close()`` flushes what it buffers and disconnects
    within a bounded time; idempotent; a ``publish`` after it is refused. The manager
    calls both for a route's ``publish_to`` publishers (``PublisherService``); ``async
    with publisher:`` does too.
    """

    async def start(self) -> None:
        """Connect (idempotent)."""
        ...

    async def close(self) -> None:
        """Flush, then disconnect within a bounded time (idempotent)."""
        ...


@runtime_checkable
class Verifiable(Protocol):
    """Optional: check the set-up without consuming anything (``loafer check``).

    Connect, verify that the queue exists and read its settings (what :attr:`capabilities`
    depends on, such as a dead-letter queue), then disconnect, leaving nothing open. A
    provider without it is checked by :meth:`Provider.start` then :meth:`Provider.close`,
    which may take messages and give them back (a redelivery).
    """

    async def verify(self) -> None:
        """Raise ``ConfigurationError`` for what is wrong (a missing queue, refused
        credentials) and ``ProviderError`` when the broker cannot be reached."""
        ...


@runtime_checkable
class HealthChecker(Protocol):
    """Optional: report whether the provider can reach its broker."""

    async def health(self) -> bool:
        """True when the broker is reachable and the queue consumable."""
        ...


@runtime_checkable
class Reconnects(Protocol):
    """Optional: how many times the provider got its broker connection back after losing it.

    Read by the metrics (``loafer_reconnects``) each time they are collected: a plain
    attribute or property, counting from 0 at construction, never decreasing.
    """

    @property
    def reconnects(self) -> int:
        """Connections (or channels, sessions) re-established after a loss so far."""
        ...


@runtime_checkable
class Backlog(Protocol):
    """Optional: how many messages wait in the queue, where the broker tells it cheaply.

    For metrics (``loafer_queue_backlog``, for autoscalers): one bounded, cheap broker
    call (a passive declare's message count, SQS's ``ApproximateNumberOfMessages``), on
    the provider's existing connection, made every few seconds while the route runs.
    """

    async def backlog(self) -> int | None:
        """Messages ready in the queue (approximate), or ``None`` when it cannot be told
        now (not connected, the broker did not answer in time). Never raises for a
        broker failure."""
        ...


@dataclass(frozen=True)
class Server:
    """The broker a provider or publisher talks to, as an AsyncAPI server: never a user
    name or password.

    ``protocol`` (``"amqp"``, ``"sqs"``, ``"redis"``...), ``host`` (``host:port``),
    ``protocol_version``, ``pathname`` (a database number, a vhost), ``description``
    (the transport: "NATS over TLS") and ``variables`` (AsyncAPI server variables, for
    a ``{region}`` in the host).
    """

    protocol: str
    host: str
    protocol_version: str | None = None
    pathname: str | None = None
    description: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Description:
    """What a provider or publisher says of itself (:class:`Describable`): read by
    ``loafer asyncapi`` and tracing, so that neither needs a plugin's private parts.

    :param kind: the plugin's short name (``"rabbit"``, ``"sqs"``): AsyncAPI's
        ``x-loafer-provider``.
    :param system: OpenTelemetry's ``messaging.system`` (``"rabbitmq"``, ``"aws_sqs"``).
    :param destination: the queue, address, subject or stream (the channel's address),
        None when unknown (a publisher that names it per message).
    :param address: the broker's URL with every secret masked, None when unknown.
    :param server: the AsyncAPI server, None for an in-process channel.
    :param bindings: AsyncAPI channel bindings by protocol (``{"amqp": {...}}``).
    :param operation_bindings: AsyncAPI operation bindings by protocol.
    :param summary: the channel's description, for people.
    :param extensions: ``x-loafer-*`` fields of the AsyncAPI operation.
    """

    kind: str
    system: str
    destination: str | None
    address: str | None = None
    server: Server | None = None
    bindings: Mapping[str, Any] = field(default_factory=dict)
    operation_bindings: Mapping[str, Any] = field(default_factory=dict)
    summary: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Describable(Protocol):
    """Optional, for providers and publishers: describe the channel without connecting.

    ``loafer asyncapi`` writes a channel, server and bindings from it, tracing names the
    system and destination from it. It must not connect, nor show a secret.
    """

    def description(self) -> Description:
        """What this provider or publisher consumes from or sends to, and where."""
        ...
