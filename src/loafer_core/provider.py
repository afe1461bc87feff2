"""The provider contract: what a broker plugin implements.

A provider consumes from one queue. The dispatcher calls, in order:

1. ``await provider.start(capacity)`` once: connect, check the queue exists (raise
   :class:`~loafer_core.errors.ConfigurationError` with what to fix if it does not),
   size prefetch/credit to ``capacity`` (the route's ``max_concurrency``).
2. ``await provider.fetch(n)`` repeatedly, with ``n`` the route's free capacity: return
   between 0 and ``n`` deliveries. It may wait (long poll) but should return within
   about 20 seconds, and it must be cancellable: a cancelled fetch hands nothing out
   (what it received stays buffered and is released at ``close``).
3. ``await provider.settle(delivery, outcome)`` once per delivery (it may batch
   internally; it returns once the settlement is done or safely queued to be flushed
   by ``close``).
4. ``await provider.close()``: flush pending settlements, release anything fetched and
   not handed out, disconnect. Idempotent.

Transient failures raise :class:`~loafer_core.errors.ProviderError` (the dispatcher
retries with backoff); wrong configuration raises ``ConfigurationError`` (fatal).

Optional abilities are separate small protocols: :class:`LeaseExtender`,
:class:`Drainable`, :class:`Publisher`, :class:`HealthChecker`, :class:`Backlog`.
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
    "Drainable",
    "HealthChecker",
    "LeaseExtender",
    "Provider",
    "Publisher",
    "Reconnects",
    "Support",
    "Verifiable",
]


class Support(enum.Enum):
    """How a provider supports an ability: not at all, natively, or emulated client-side."""

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
        """Settle one delivery with ``outcome``."""
        ...

    async def close(self) -> None:
        """Flush settlements, release unhanded deliveries, disconnect. Idempotent."""
        ...


@runtime_checkable
class LeaseExtender(Protocol):
    """Optional: the provider's deliveries hold a lease (visibility timeout) that can be extended.

    ``lease_duration`` is the lease a fetched delivery starts with, in seconds (``None``
    when its deliveries hold no lease); the dispatcher calls :meth:`extend_leases` for
    deliveries still unsettled every third of it, and stops once they are settled.
    """

    @property
    def lease_duration(self) -> float | None:
        """Seconds a delivery stays leased after fetch or extension (None: no lease)."""
        ...

    async def extend_leases(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Extend each delivery's lease to ``seconds`` from now."""
        ...


@runtime_checkable
class Drainable(Protocol):
    """Optional: told when a drain begins, so pushed deliveries stop arriving at once.

    Providers the broker pushes to (a prefetch buffer, AMQP credit) implement it: stop
    receiving and give back what is buffered, so those messages are available to other
    consumers now rather than at :meth:`Provider.close`. A later ``fetch`` may resume.
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
