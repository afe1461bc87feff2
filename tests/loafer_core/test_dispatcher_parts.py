"""The dispatcher's parts, each on its own: the shutdown clock, the provider starter,
the settler and the lease keeper (tests/loafer_core/test_dispatcher.py runs them
together)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from loafer_core._lease_keeper import LeaseKeeper
from loafer_core._provider_start import ProviderStarter
from loafer_core._settler import Settler
from loafer_core._shutdown_clock import ShutdownClock
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import ACCEPT, RELEASE, Outcome, OutcomeKind
from loafer_core.policy import Backoff
from loafer_core.provider import Capabilities, Delivery

QUICK = Backoff(base=0.001, cap=0.01)


def delivery(n: int = 1) -> Delivery:
    return Delivery(raw=b"x", body=b"x", message_id=f"m-{n}", attempt=1)


class Provider:
    """A provider whose start, settle and extend_leases fail as told."""

    def __init__(self, *, start_failures: int = 0, settle_failures: int = 0) -> None:
        self.capabilities = Capabilities(lease_extension=True)
        self.lease_duration = 0.3
        self.start_failures = start_failures
        self.settle_failures = settle_failures
        self.starts = 0
        self.settled: list[tuple[str | None, Outcome]] = []
        self.extended: list[list[str | None]] = []
        self.extended_twice = asyncio.Event()

    async def start(self, capacity: int) -> None:
        self.starts += 1
        if self.starts <= self.start_failures:
            raise OSError(f"broker not up yet ({self.starts})")

    async def fetch(self, max_messages: int) -> list[Delivery]:
        return []

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        if self.settle_failures:
            self.settle_failures -= 1
            raise OSError("settle failed")
        self.settled.append((delivery.message_id, outcome))

    async def extend_leases(self, deliveries: Sequence[Delivery], duration: float) -> None:
        self.extended.append([d.message_id for d in deliveries])
        if len(self.extended) >= 2:
            self.extended_twice.set()

    async def close(self) -> None:
        return None


async def test_the_clock_cuts_a_hanging_call_at_the_forced_grace_once_now_is_set() -> None:
    clock = ShutdownClock(close_timeout=30, forced_grace=0.05)
    assert await clock.bounded(asyncio.sleep(0)) is True
    clock.now.set()
    began = time.monotonic()
    assert await clock.bounded(asyncio.sleep(10)) is False
    assert time.monotonic() - began < 2


def test_the_clock_counts_the_shutdown_timeout_from_the_first_stop() -> None:
    clock = ShutdownClock(close_timeout=30, forced_grace=0.5)
    assert clock.time_left() == 30 and clock.drain_left(None) is None
    clock.shutdown_timeout = 5
    clock.stopped()
    first = clock.stopped_at
    clock.stopped()
    assert clock.stopped_at == first
    assert 4 < clock.time_left() <= 5
    clock.shutdown_timeout = 0  # past its deadline: the forced grace still
    assert clock.time_left() == 0.5


async def test_the_starter_retries_until_the_provider_starts() -> None:
    provider = Provider(start_failures=2)
    starter = ProviderStarter("r", provider, 10, QUICK, lambda: 1.0)
    async with asyncio.timeout(10):
        assert await starter(asyncio.Event()) is True
    assert provider.starts == 3 and starter.failures == 0
    assert starter.last_failure == "OSError: broker not up yet (2)"


async def test_the_starter_stops_when_asked_and_raises_a_configuration_error() -> None:
    stopped = asyncio.Event()
    stopped.set()
    provider = Provider(start_failures=10**6)
    async with asyncio.timeout(10):
        assert await ProviderStarter("r", provider, 1, QUICK, lambda: 1.0)(stopped) is False

    class Refused(Provider):
        async def start(self, capacity: int) -> None:
            raise ConfigurationError("no such queue")

    with pytest.raises(ConfigurationError, match="no such queue"):
        await ProviderStarter("r", Refused(), 1, QUICK, lambda: 1.0)(asyncio.Event())


def settler(provider: Provider, forgotten: list[Delivery], failed: list[Any]) -> Settler:
    clock = ShutdownClock(close_timeout=5, forced_grace=0.1)
    return Settler("r", provider, 3, QUICK, clock, forgotten.append, failed.append)


async def test_the_settler_tries_again_then_gives_up_and_frees_the_slot() -> None:
    provider = Provider(settle_failures=1)
    forgotten: list[Delivery] = []
    failed: list[Any] = []
    unit = settler(provider, forgotten, failed)
    async with asyncio.timeout(10):
        await unit.settle(delivery(1), ACCEPT)  # fails once, then settles
        provider.settle_failures = 10
        await unit.settle(delivery(2), ACCEPT)  # 3 tries in all, then given up
    assert provider.settled == [("m-1", ACCEPT)]
    assert unit.settled[OutcomeKind.ACCEPT] == 1 and unit.failures == 1
    assert [d.message_id for d in forgotten] == ["m-1", "m-2"] and failed == []


async def test_the_settler_releases_many_at_once() -> None:
    provider = Provider()
    forgotten: list[Delivery] = []
    unit = settler(provider, forgotten, [])
    async with asyncio.timeout(10):
        await unit.release_all([delivery(1), delivery(2)])
    assert sorted(provider.settled, key=str) == [("m-1", RELEASE), ("m-2", RELEASE)]
    assert unit.settled[OutcomeKind.RELEASE] == 2 and len(forgotten) == 2


async def test_the_lease_keeper_extends_what_is_unsettled_only() -> None:
    provider = Provider()
    held, settled = delivery(1), delivery(2)
    unsettled = {held: time.monotonic(), settled: time.monotonic()}
    del unsettled[settled]  # settled before the first tick
    task = LeaseKeeper("r", provider, unsettled, lambda exc: None).start()
    assert task is not None
    try:
        async with asyncio.timeout(10):
            await provider.extended_twice.wait()
    finally:
        task.cancel()
    assert provider.extended[:2] == [["m-1"], ["m-1"]]


def test_no_lease_keeper_without_lease_extension() -> None:
    provider = Provider()
    provider.capabilities = Capabilities()
    assert LeaseKeeper("r", provider, {}, lambda exc: None).start() is None


# -- KeyedQueue ------------------------------------------------------------------------


def _delivery(n: int, key: str) -> Delivery:
    return Delivery(raw=b"", body=b"", message_id=str(n), ordering_key=key)


def test_keyed_queue_runs_one_per_key_and_hands_on_in_arrival_order() -> None:
    from loafer_core._keyed_queue import KeyedQueue

    keyed = KeyedQueue()
    first, second, third, other = (_delivery(n, k) for n, k in enumerate("aaab"))
    assert keyed.admit(first, "a") and keyed.admit(other, "b")
    assert not keyed.admit(second, "a") and not keyed.admit(third, "a")
    assert len(keyed) == 2
    assert keyed.after("a", go_on=True) == (second, [])
    assert keyed.after("a", go_on=True) == (third, [])
    assert keyed.after("a", go_on=True) == (None, [])  # nothing waits: the key ends
    assert len(keyed) == 1
    assert keyed.admit(_delivery(9, "a"), "a")  # a new run of the key


def test_keyed_queue_ends_a_key_whose_message_comes_back() -> None:
    from loafer_core._keyed_queue import KeyedQueue

    keyed = KeyedQueue()
    first, second, third = (_delivery(n, "k") for n in range(3))
    keyed.admit(first, "k")
    keyed.admit(second, "k")
    keyed.admit(third, "k")
    assert keyed.after("k", go_on=False) == (None, [second, third])  # released, in order
    assert len(keyed) == 0
    assert keyed.after("k", go_on=True) == (None, [])


def test_keyed_queue_gives_up_its_waiting_deliveries_for_the_drain() -> None:
    from loafer_core._keyed_queue import KeyedQueue

    keyed = KeyedQueue()
    deliveries = [_delivery(n, k) for n, k in enumerate("aabb")]
    for delivery in deliveries:
        keyed.admit(delivery, delivery.ordering_key or "")
    assert keyed.take_waiting() == [deliveries[1], deliveries[3]]
    assert keyed.after("a", go_on=True) == (None, [])  # the running one ends its key
