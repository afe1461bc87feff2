"""The conformance kit catches what it claims to: each new kit test fails a provider that
is deliberately broken in the one way it checks (and passes the same provider fixed).

The broken providers are the embedded memory provider with one fault each.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import loafer_core.testing
from loafer_core.memory import MemoryProvider
from loafer_core.outcome import ACCEPT, RELEASE, Outcome, OutcomeKind
from loafer_core.provider import Delivery, Provider
from loafer_core.testing.contract import ProviderContract
from tests.loafer_core.test_memory_contract import TestMemoryContract as MemoryKit

pytestmark = pytest.mark.memory


class QuickKit(MemoryKit):
    """The memory kit with short bounds, so that a failure is seen quickly."""

    timeout = 15.0
    redelivery_timeout = 1.5
    retry_delay = 0.2
    retry_delay_late = 1.0
    duplicate_window = 0.5
    provider_class: type[MemoryProvider] = MemoryProvider
    lease: float | None = 0.5

    async def create_queue(self, queue: str) -> None:
        await super().create_queue(queue)
        self.broker = type(self.broker)()
        self.broker.declare(queue, lease=self.lease)

    async def make_provider(self, queue: str) -> Provider:
        return self.provider_class(self.broker, queue, wait=0.2)


# -- a delayed retry that comes back too late ----------------------------------------------


class LateRetry(MemoryProvider):
    """Waits twenty times the delay asked for (seconds read as twentieths of minutes)."""

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        if outcome.kind is OutcomeKind.RETRY and outcome.delay:
            outcome = Outcome(OutcomeKind.RETRY, delay=outcome.delay * 20)
        await super().settle(delivery, outcome)


def test_a_late_delayed_retry_fails_the_kit() -> None:
    class Kit(QuickKit):
        provider_class = LateRetry

    with pytest.raises(AssertionError, match="late by more than retry_delay_late"):
        Kit().test_retry_with_delay_waits()


# -- a lease that never lapses, a lapse that counts no attempt -----------------------------


class LeaseNeverLapses(MemoryProvider):
    """Says its deliveries hold a lease; the queue has none (they never come back)."""

    @property
    def lease_duration(self) -> float | None:
        return 0.5


class UncountedLapse(MemoryProvider):
    """Counts attempts itself, on RETRY only: a lapsed lease counts nothing."""

    counts: dict[str, int]

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        counts = self.__dict__.setdefault("counts", {})
        deliveries = await super().fetch(max_messages)
        for d in deliveries:
            d.attempt = counts.setdefault(str(d.message_id), 1)
        return deliveries

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        if outcome.kind is OutcomeKind.RETRY:
            self.counts[str(delivery.message_id)] += 1
        await super().settle(delivery, outcome)


def test_a_lease_that_never_lapses_fails_the_kit() -> None:
    class Kit(QuickKit):
        provider_class = LeaseNeverLapses
        lease = None

    with pytest.raises(AssertionError, match=r"not delivered again within .* lease that lapsed"):
        Kit().test_a_lapsed_lease_redelivers_and_counts_an_attempt()


def test_a_lapse_that_counts_no_attempt_fails_the_kit() -> None:
    class Kit(QuickKit):
        provider_class = UncountedLapse

    with pytest.raises(AssertionError, match="a lapsed lease did not count an attempt"):
        Kit().test_a_lapsed_lease_redelivers_and_counts_an_attempt()


def test_the_lapse_test_is_skipped_without_a_lease() -> None:
    class Kit(QuickKit):
        lease = None

    with pytest.raises(pytest.skip.Exception, match="hold no lease"):
        Kit().test_a_lapsed_lease_redelivers_and_counts_an_attempt()


# -- deliveries buffered and dropped at close ----------------------------------------------


class Buffering(MemoryProvider):
    """Takes a whole capacity's worth from the broker and hands out what is asked."""

    drops = True
    buffer: list[Delivery]
    capacity = 1

    async def start(self, capacity: int) -> None:
        await super().start(capacity)
        self.capacity = capacity
        self.buffer = []

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        if not self.buffer:
            self.buffer.extend(await super().fetch(self.capacity))
        out, self.buffer = self.buffer[:max_messages], self.buffer[max_messages:]
        return out

    async def close(self) -> None:
        held, self.buffer = self.buffer, []
        if not self.drops:
            for delivery in held:
                await super().settle(delivery, RELEASE)
        await super().close()


class BufferReleased(Buffering):
    drops = False


@pytest.mark.parametrize(("provider_class", "fails"), [(Buffering, True), (BufferReleased, False)])
def test_a_provider_dropping_its_buffer_at_close_fails_the_kit(
    provider_class: type[MemoryProvider], fails: bool
) -> None:
    class Kit(QuickKit):
        lease = None  # dropped deliveries are lost for good (not back after a lease)

    Kit.provider_class = provider_class
    if not fails:
        Kit().test_close_gives_back_what_was_not_handed_out()
        return
    with pytest.raises(AssertionError, match="4 of the 4 messages not handed out"):
        Kit().test_close_gives_back_what_was_not_handed_out()


# -- a cancelled fetch whose read completes afterwards ---------------------------------------


class CancelDropping(MemoryProvider):
    """Reads in a task of its own (like a blocking read in a thread): cancelled, the fetch
    drops what that read returns; with ``keeps``, it buffers it for the next fetch and
    releases it at close (the recipe of docs/writing-a-provider.md)."""

    keeps = False
    buffer: list[Delivery]

    async def start(self, capacity: int) -> None:
        await super().start(capacity)
        self.buffer = []

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        if self.buffer:
            out, self.buffer = self.buffer[:max_messages], self.buffer[max_messages:]
            return out
        reading = asyncio.ensure_future(super().fetch(max_messages))
        try:
            return await asyncio.shield(reading)
        except asyncio.CancelledError:
            if self.keeps:
                reading.add_done_callback(self._keep)
            raise

    def _keep(self, reading: asyncio.Future[Sequence[Delivery]]) -> None:
        if not reading.cancelled() and reading.exception() is None:
            self.buffer.extend(reading.result())

    async def close(self) -> None:
        await asyncio.sleep(0.05)  # (a real one waits for its reads to end)
        held, self.buffer = self.buffer, []
        for delivery in held:
            await super().settle(delivery, RELEASE)
        await super().close()


class CancelKeeping(CancelDropping):
    keeps = True


@pytest.mark.parametrize(
    ("provider_class", "fails"), [(CancelDropping, True), (CancelKeeping, False)]
)
def test_a_provider_dropping_a_cancelled_read_fails_the_kit(
    provider_class: type[MemoryProvider], fails: bool
) -> None:
    class Kit(QuickKit):
        lease = None

    Kit.provider_class = provider_class
    if not fails:
        Kit().test_a_cancelled_fetch_loses_nothing()
        return
    with pytest.raises(AssertionError, match="3 of 3 messages that arrived as a fetch"):
        Kit().test_a_cancelled_fetch_loses_nothing()


# -- a RETRY re-published again by a second settle ----------------------------------------


class Republishing(MemoryProvider):
    """RETRY publishes a copy (waiting for a "confirm"), then acks the original; with
    ``remembers``, a settle sent again for the same delivery does not publish again."""

    remembers = False
    published: set[Any]

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        if outcome.kind is not OutcomeKind.RETRY:
            await super().settle(delivery, outcome)
            return
        published = self.__dict__.setdefault("published", set())
        if not (self.remembers and delivery.token in published):
            published.add(delivery.token)
            self.broker.publish(self.queue, delivery.raw)
        await asyncio.sleep(0.05)  # the broker's confirm
        await super().settle(delivery, ACCEPT)


class RepublishingOnce(Republishing):
    remembers = True


@pytest.mark.parametrize(
    ("test", "provider_class", "fails"),
    [
        ("test_settling_twice_is_harmless", Republishing, True),
        ("test_settling_twice_is_harmless", RepublishingOnce, False),
        ("test_a_settle_cut_short_and_sent_again_is_not_duplicated", Republishing, True),
        ("test_a_settle_cut_short_and_sent_again_is_not_duplicated", RepublishingOnce, False),
    ],
)
def test_a_settle_publishing_twice_fails_the_kit(
    test: str, provider_class: type[MemoryProvider], fails: bool
) -> None:
    class Kit(QuickKit):
        pass

    Kit.provider_class = provider_class
    run = getattr(Kit(), test)
    if not fails:
        run()
        return
    with pytest.raises(AssertionError, match='"retry"}\' was delivered again'):
        run()


# -- a provider that cannot be closed after a failed start ----------------------------------


class CloseNeedsStart(MemoryProvider):
    """Its close uses what only a successful start sets."""

    async def start(self, capacity: int) -> None:
        await super().start(capacity)
        self.session = object()

    async def close(self) -> None:
        del self.session  # AttributeError when start failed
        await super().close()


class HalfStarted(MemoryProvider):
    """A failed start leaves a flag set that makes the next one fail differently."""

    starting = False

    async def start(self, capacity: int) -> None:
        if self.starting:
            raise RuntimeError("already starting")
        self.starting = True
        await super().start(capacity)


@pytest.mark.parametrize(
    ("provider_class", "error"),
    [(CloseNeedsStart, AttributeError), (HalfStarted, AssertionError)],
)
def test_a_provider_that_mishandles_a_failed_start_fails_the_kit(
    provider_class: type[MemoryProvider], error: type[BaseException]
) -> None:
    class Kit(QuickKit):
        pass

    Kit.provider_class = provider_class
    with pytest.raises(error):
        Kit().test_a_failed_start_can_be_retried_and_closed()


# -- the kit itself --------------------------------------------------------------------------


def test_the_kit_uses_no_private_attribute_of_core() -> None:
    """The kit drives core only through its public API (``manager.status()``, not the
    manager's dispatchers): a plugin author's suite must not break on an internal change."""
    package = Path(loafer_core.testing.__file__).parent
    found: list[str] = []
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                owner = node.value
                if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                    found.append(f"{path.name}:{node.lineno}: .{node.attr}")
            elif isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                found.extend(
                    f"{path.name}:{node.lineno}: from {node.module} import {alias.name}"
                    for alias in node.names
                    if (any(_private(p) for p in parts) or _private(alias.name))
                    # the kit's own private modules are the kit, not core's internals
                    and not node.module.startswith("loafer_core.testing._")
                )
    assert not found, "the kit reaches into core's private names: " + ", ".join(found)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_every_kit_test_is_a_plain_method() -> None:
    """The kit's tests need no asyncio pytest plugin: each is a sync method."""
    tests = [n for n in dir(ProviderContract) if n.startswith("test_")]
    assert len(tests) >= 22
    assert not [n for n in tests if asyncio.iscoroutinefunction(getattr(ProviderContract, n))]
