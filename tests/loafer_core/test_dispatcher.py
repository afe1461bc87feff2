from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from loafer_core import (
    ACCEPT,
    REJECT,
    RETRY,
    ConfigurationError,
    Manager,
    ProviderError,
    Route,
)
from loafer_core.dispatcher import Dispatcher
from loafer_core.memory import HISTORY, MemoryBroker, MemoryProvider
from loafer_core.outcome import Outcome, OutcomeKind
from loafer_core.policy import Backoff
from loafer_core.provider import Capabilities, Delivery
from loafer_core.testing import eventually


async def test_same_key_in_order_different_keys_concurrently(broker: MemoryBroker) -> None:
    for i in range(5):
        for key in ("a", "b"):
            broker.publish("q", f"{key}{i}", ordering_key=key)
    order: dict[str, list[str]] = {"a": [], "b": []}
    active: dict[str, int] = {"a": 0, "b": 0}
    overlap = asyncio.Event()
    both_running = 0

    async def handler(content: str, metadata: Any) -> bool:
        nonlocal both_running
        key = content[0]
        active[key] += 1
        assert active[key] == 1, "two messages of one key ran at once"
        both_running = max(both_running, sum(1 for v in active.values() if v))
        if both_running == 2:
            overlap.set()
        await asyncio.sleep(0.01)
        order[key].append(content)
        active[key] -= 1
        return True

    route = Route(MemoryProvider(broker, "q", wait=0.1), handler, max_concurrency=10)
    async with Manager([route]):
        await broker.wait_idle("q", timeout=10)
    assert order == {"a": [f"a{i}" for i in range(5)], "b": [f"b{i}" for i in range(5)]}
    assert overlap.is_set(), "different keys never ran concurrently"


async def test_retry_in_a_key_is_not_overtaken(broker: MemoryBroker) -> None:
    for i in range(4):
        broker.publish("q", f"g{i}", ordering_key="g")
    handled: list[str] = []
    failed_once: set[str] = set()

    async def handler(content: str, metadata: Any) -> Outcome:
        if content == "g1" and content not in failed_once:
            failed_once.add(content)
            return RETRY(0.05)
        handled.append(content)
        return ACCEPT

    route = Route(MemoryProvider(broker, "q", wait=0.1), handler, max_concurrency=10)
    async with Manager([route]):
        await broker.wait_idle("q", timeout=10)
    assert handled == ["g0", "g1", "g2", "g3"]


async def test_slow_route_does_not_delay_another() -> None:
    broker = MemoryBroker(history=HISTORY)
    broker.declare("slow")
    broker.declare("fast")
    broker.publish("slow", "s")
    for i in range(1, 21):
        broker.publish("fast", i)
    release_slow = asyncio.Event()
    fast_done = asyncio.Event()
    fast_seen: list[int] = []

    async def slow(content: Any, metadata: Any) -> bool:
        await release_slow.wait()
        return True

    async def fast(content: int, metadata: Any) -> bool:
        fast_seen.append(content)
        if len(fast_seen) == 20:
            fast_done.set()
        return True

    routes = [
        Route(MemoryProvider(broker, "slow", wait=0.1), slow, max_concurrency=1),
        Route(MemoryProvider(broker, "fast", wait=0.1), fast, max_concurrency=2),
    ]
    async with Manager(routes):
        await asyncio.wait_for(fast_done.wait(), 5)  # while the slow one is still running
        assert broker.in_flight("slow") == 1
        release_slow.set()
        await broker.wait_idle("slow", timeout=5)


async def test_fetch_only_for_free_capacity(broker: MemoryBroker) -> None:
    class Counting(MemoryProvider):
        asked: list[int] = []

        async def fetch(self, max_messages: int) -> Sequence[Delivery]:
            self.asked.append(max_messages)
            return await super().fetch(max_messages)

    broker.publish_many("q", list(range(1, 31)))
    gate = asyncio.Event()
    running = 0
    full = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        nonlocal running
        running += 1
        if running == 4:
            full.set()
        await gate.wait()
        return True

    provider = Counting(broker, "q", wait=0.1)
    async with Manager([Route(provider, handler, max_concurrency=4)]):
        await asyncio.wait_for(full.wait(), 5)
        assert broker.in_flight("q") == 4
        asked_before = len(provider.asked)
        gate.set()
        await broker.wait_idle("q", timeout=5)
    assert all(1 <= n <= 4 for n in provider.asked)
    assert asked_before >= 1


class FlakyProvider(MemoryProvider):
    """Fails the first fetches and settles with ProviderError (a fake, for our own logic)."""

    fetch_failures = 3
    settle_failures = 2

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        if self.fetch_failures:
            self.fetch_failures -= 1
            raise ProviderError("broker unreachable")
        return await super().fetch(max_messages)

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        if self.settle_failures:
            self.settle_failures -= 1
            raise ProviderError("settle refused")
        await super().settle(delivery, outcome)


async def test_fetch_and_settle_errors_are_retried(
    broker: MemoryBroker, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Backoff, "delay", lambda self, failures: 0.01)
    broker.publish("q", "x")
    done = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        done.set()
        return True

    with caplog.at_level(logging.WARNING):
        async with Manager([Route(FlakyProvider(broker, "q", wait=0.1), handler)]):
            await asyncio.wait_for(done.wait(), 5)
            await broker.wait_idle("q", timeout=5)
    assert [s.outcome for s in broker.settlements("q")] == [ACCEPT]
    assert caplog.text.count("fetch failed") == 3
    assert caplog.text.count("settling message") == 2


async def test_a_settle_that_keeps_failing_is_given_up_and_the_route_goes_on(
    broker: MemoryBroker, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Backoff, "delay", lambda self, failures: 0.01)
    tries: dict[str, int] = {}

    class Refusing(MemoryProvider):
        async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
            tries[delivery.body] = tries.get(delivery.body, 0) + 1
            if tries[delivery.body] == 5:
                fifth.set()
            if delivery.body == "stuck":
                raise ProviderError("settle refused")
            await super().settle(delivery, outcome)

    broker.publish("q", "stuck")
    broker.publish("q", "fine")
    fine, fifth = asyncio.Event(), asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        if content == "fine":
            fine.set()
        return True

    with caplog.at_level(logging.WARNING):
        async with Manager([Route(Refusing(broker, "q", wait=0.1), handler)]):
            await asyncio.wait_for(fine.wait(), 5)
            await asyncio.wait_for(fifth.wait(), 5)
        # the drain waited for the worker, which logged and gave up after the fifth try
    assert tries["stuck"] == 5  # settle_attempts in all, then given up (the broker redelivers)
    assert "after 5 tries" in caplog.text
    assert tries["fine"] == 1


async def test_configuration_error_from_provider_stops_manager(broker: MemoryBroker) -> None:
    stopped: list[str] = []

    class Handler:
        def __init__(self, name: str) -> None:
            self.name = name

        async def handle(self, content: Any, metadata: Any) -> bool:
            return True

        def stop(self) -> None:
            stopped.append(self.name)

    ok_route = Route(MemoryProvider(broker, "q", wait=0.1), Handler("ok"))
    missing = Route(MemoryProvider(broker, "no-such-queue"), Handler("missing"))
    with pytest.raises(ConfigurationError, match="no-such-queue"):
        await asyncio.wait_for(Manager([ok_route, missing]).serve(), 10)
    # every handler's stop() ran, the failed route's too
    assert sorted(stopped) == ["missing", "ok"]


async def test_configuration_error_from_settle_stops_manager(broker: MemoryBroker) -> None:
    broker.publish("q", "a")
    tries = 0

    class AccessRevoked(MemoryProvider):
        async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
            nonlocal tries
            tries += 1
            raise ConfigurationError("queue 'q': access refused; grant the consumer delete")

    route = Route(AccessRevoked(broker, "q", wait=0.1), lambda c, m: True)
    with pytest.raises(ConfigurationError, match="grant the consumer delete"):
        await asyncio.wait_for(Manager([route]).serve(), 10)
    assert tries == 1  # not retried: no retry can help
    assert broker.in_flight("q") == 1  # unsettled: the broker delivers it again


async def test_configuration_error_from_a_lease_extension_stops_manager(
    broker: MemoryBroker,
) -> None:
    broker.declare("leased", lease=0.3)
    broker.publish("leased", "a")

    class LeaseRefused(MemoryProvider):
        async def extend_leases(self, deliveries: Sequence[Delivery], duration: float) -> None:
            raise ConfigurationError("lease extension refused; grant ChangeMessageVisibility")

    async def slow(content: Any, metadata: Any) -> bool:
        await asyncio.Event().wait()  # until the drain cancels it
        return True

    route = Route(LeaseRefused(broker, "leased", wait=0.1), slow)
    with pytest.raises(ConfigurationError, match="ChangeMessageVisibility"):
        await asyncio.wait_for(Manager([route], shutdown_timeout=0.2).serve(), 10)


async def test_route_needing_what_provider_lacks_fails_at_start(broker: MemoryBroker) -> None:
    class Basic(MemoryProvider):
        @property
        def capabilities(self) -> Capabilities:
            return Capabilities()

    route = Route(Basic(broker, "q"), lambda c, m: True, max_attempts=3)
    with pytest.raises(ConfigurationError, match="counts delivery attempts"):
        await asyncio.wait_for(Manager([route]).serve(), 10)


async def test_leases_are_extended_until_settled() -> None:
    broker = MemoryBroker(history=HISTORY)
    broker.declare("leased", lease=0.5)
    broker.publish("leased", "long job")
    calls = 0
    done = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        nonlocal calls
        calls += 1
        await asyncio.sleep(1.5)  # the work itself: 3x the lease
        done.set()
        return True

    class Watching(MemoryProvider):
        extended: list[int] = []

        async def extend_leases(self, deliveries: Sequence[Delivery], seconds: float) -> None:
            self.extended.append(len(deliveries))
            await super().extend_leases(deliveries, seconds)

    provider = Watching(broker, "leased", wait=0.1)
    async with Manager([Route(provider, handler, max_concurrency=2)]):
        await asyncio.wait_for(done.wait(), 5)
        await broker.wait_idle("leased", timeout=5)
        extensions = len(provider.extended)
        await asyncio.sleep(0.5)  # a full lease with nothing in flight: no more extensions
        assert len(provider.extended) == extensions
    assert calls == 1, "the message was redelivered while its handler ran"
    assert extensions >= 2
    assert [s.outcome for s in broker.settlements("leased")] == [ACCEPT]


async def test_without_extension_the_lease_expires() -> None:
    """The control for the test above: the memory lease really redelivers."""
    broker = MemoryBroker(history=HISTORY)
    broker.declare("leased", lease=0.2)
    broker.publish("leased", "job")
    provider = MemoryProvider(broker, "leased", wait=0.1)
    await provider.start(1)
    first = await provider.fetch(1)
    again = await provider.fetch(1)
    assert not again
    await asyncio.sleep(0.3)
    again = await provider.fetch(1)
    assert len(first) == 1 and len(again) == 1 and again[0].attempt == 2
    await provider.settle(first[0], ACCEPT)  # stale: ignored
    assert broker.depth("leased") == 0 and broker.in_flight("leased") == 1


async def test_run_once(broker: MemoryBroker) -> None:
    broker.publish_many("q", [1, 2, 3])
    seen: list[int] = []

    async def handler(content: int, metadata: Any) -> bool:
        seen.append(content)
        return True

    await asyncio.wait_for(
        Manager([Route(MemoryProvider(broker, "q"), handler, max_concurrency=2)]).serve(
            forever=False
        ),
        5,
    )
    assert sorted(seen) == [1, 2]
    assert broker.depth("q") == 1 and broker.in_flight("q") == 0


async def test_graceful_stop_releases_unstarted_and_finishes_in_flight(
    broker: MemoryBroker,
) -> None:
    for i in range(6):
        broker.publish("q", f"k{i}", ordering_key="k")  # one key: 1 runs, 5 wait
    running = asyncio.Event()
    gate = asyncio.Event()
    finished: list[str] = []

    async def handler(content: str, metadata: Any) -> bool:
        running.set()
        await gate.wait()
        finished.append(content)
        return True

    manager = Manager([Route(MemoryProvider(broker, "q", wait=0.1), handler)])
    task = asyncio.create_task(manager.serve())
    await asyncio.wait_for(running.wait(), 5)
    manager.stop()
    # unstarted ones are back at once, while the in-flight one still runs
    for _ in range(100):
        if broker.depth("q") == 5:
            break
        await asyncio.sleep(0.01)
    assert broker.depth("q") == 5 and broker.in_flight("q") == 1
    gate.set()
    await asyncio.wait_for(task, 5)
    assert finished == ["k0"]
    kinds = [s.outcome.kind for s in broker.settlements("q")]
    assert kinds.count(OutcomeKind.RELEASE) == 5 and kinds.count(OutcomeKind.ACCEPT) == 1


@pytest.mark.parametrize("first_settle", ["never answered", "failed, retry waits"])
async def test_a_settle_cut_short_by_the_shutdown_deadline_is_sent_again(
    broker: MemoryBroker, first_settle: str
) -> None:
    broker.publish("q", "a")
    first_tried = asyncio.Event()
    calls: list[OutcomeKind] = []

    class FirstSettleStuck(MemoryProvider):
        async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
            calls.append(outcome.kind)
            if len(calls) == 1:
                first_tried.set()
                if first_settle == "never answered":
                    await asyncio.Event().wait()
                raise ConnectionError("transient")  # the retry waits 5-10 s (backoff)
            await super().settle(delivery, outcome)

    async def quick(content: Any, metadata: Any) -> bool:
        return True

    route = Route(FirstSettleStuck(broker, "q", wait=0.1), quick)
    dispatcher = Dispatcher(route, backoff=Backoff(base=5.0, cap=10.0))
    task = asyncio.create_task(dispatcher.run(shutdown_timeout=0.2))
    await asyncio.wait_for(first_tried.wait(), 5)
    dispatcher.stop()
    await asyncio.wait_for(task, 5)  # the 0.2 s deadline cut the settle (or its wait) short
    # not lost in between, nor turned into a RELEASE: the handler's outcome is sent again
    assert calls == [OutcomeKind.ACCEPT, OutcomeKind.ACCEPT]
    assert [s.outcome.kind for s in broker.settlements("q")] == [OutcomeKind.ACCEPT]
    assert broker.depth("q") == 0 and broker.in_flight("q") == 0


async def test_stop_now_and_shutdown_timeout_release_in_flight(broker: MemoryBroker) -> None:
    broker.publish_many("q", ["a", "b"])
    started = 0
    both = asyncio.Event()

    async def stuck(content: Any, metadata: Any) -> bool:
        nonlocal started
        started += 1
        if started == 2:
            both.set()
        await asyncio.Event().wait()
        return True

    manager = Manager(
        [Route(MemoryProvider(broker, "q", wait=0.1), stuck, max_concurrency=2)],
        shutdown_timeout=0.2,
    )
    task = asyncio.create_task(manager.serve())
    await asyncio.wait_for(both.wait(), 5)
    manager.stop()
    await asyncio.wait_for(task, 5)  # the 0.2 s deadline cut them short
    assert broker.depth("q") == 2 and broker.in_flight("q") == 0
    assert {s.outcome.kind for s in broker.settlements("q")} == {OutcomeKind.RELEASE}
    assert all(s.attempt == 1 for s in broker.settlements("q"))

    started = 0
    both.clear()
    manager = Manager([Route(MemoryProvider(broker, "q", wait=0.1), stuck, max_concurrency=2)])
    task = asyncio.create_task(manager.serve())
    await asyncio.wait_for(both.wait(), 5)
    manager.stop()
    manager.stop(now=True)
    await asyncio.wait_for(task, 5)
    assert broker.depth("q") == 2 and broker.in_flight("q") == 0


async def test_cancelling_serve_propagates_and_leaks_no_task(broker: MemoryBroker) -> None:
    broker.publish_many("q", list(range(1, 6)))
    running = asyncio.Event()

    async def stuck(content: Any, metadata: Any) -> bool:
        running.set()
        await asyncio.Event().wait()
        return True

    before = asyncio.all_tasks()
    serving = asyncio.create_task(
        Manager([Route(MemoryProvider(broker, "q", wait=0.1), stuck, max_concurrency=3)]).serve()
    )
    await asyncio.wait_for(running.wait(), 5)
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert asyncio.all_tasks() == before
    # what was in flight went back to the broker
    assert broker.in_flight("q") == 0 and broker.depth("q") == 5


async def test_clean_stop_leaks_no_task(broker: MemoryBroker) -> None:
    broker.publish_many("q", list(range(1, 51)))
    before = asyncio.all_tasks()
    async with Manager([Route(MemoryProvider(broker, "q", wait=0.1), lambda c, m: True)]):
        await broker.wait_idle("q", timeout=5)
    assert asyncio.all_tasks() == before


async def test_provider_returning_nothing_at_once_does_not_starve_the_loop(
    broker: MemoryBroker,
) -> None:
    provider = MemoryProvider(broker, "q", wait=0)  # fetch never waits
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    t = asyncio.create_task(ticker())
    async with Manager([Route(provider, lambda c, m: True)]) as manager:
        await manager.wait_started()
        await asyncio.sleep(0.3)
        broker.publish("q", "late")
        await broker.wait_idle("q", timeout=5)
    t.cancel()
    assert ticks >= 10, "the event loop was starved"


async def test_stop_during_a_hanging_start(broker: MemoryBroker) -> None:
    class Hanging(MemoryProvider):
        closed = False

        async def start(self, capacity: int) -> None:
            await asyncio.Event().wait()

        async def close(self) -> None:
            self.closed = True

    provider = Hanging(broker, "q")
    manager = Manager([Route(provider, lambda c, m: True)])
    task = asyncio.create_task(manager.serve())
    await asyncio.sleep(0.05)
    manager.stop()
    await asyncio.wait_for(task, 5)
    assert provider.closed


async def test_short_fetches_still_fill_the_capacity(broker: MemoryBroker) -> None:
    """A provider handing out fewer than asked (what it has now) must not strand capacity."""

    class OneAtATime(MemoryProvider):
        async def fetch(self, max_messages: int) -> Sequence[Delivery]:
            return await super().fetch(1)

    running = 0
    three = asyncio.Event()
    gate = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        nonlocal running
        running += 1
        if running == 3:
            three.set()
        await gate.wait()
        return True

    route = Route(OneAtATime(broker, "q", wait=0.1), handler, max_concurrency=3)
    async with Manager([route]) as manager:
        await manager.wait_started()
        await asyncio.sleep(0.05)  # let the idle workers park before anything arrives
        broker.publish_many("q", list(range(1, 7)))
        await asyncio.wait_for(three.wait(), 5)
        gate.set()
        await broker.wait_idle("q", timeout=5)
    assert running == 6


async def test_transient_start_failure_is_retried(
    broker: MemoryBroker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(Backoff, "delay", lambda self, failures: 0.01)

    class SlowBoot(MemoryProvider):
        failures = 2

        async def start(self, capacity: int) -> None:
            if self.failures:
                self.failures -= 1
                raise ProviderError("broker not reachable yet")
            await super().start(capacity)

    broker.publish("q", "x")
    with caplog.at_level(logging.WARNING):
        async with Manager([Route(SlowBoot(broker, "q", wait=0.1), lambda c, m: True)]) as m:
            await m.wait_started()
            await broker.wait_idle("q", timeout=5)
    assert caplog.text.count("starting the provider failed") == 2


async def test_drainable_provider_is_told_when_the_drain_begins(broker: MemoryBroker) -> None:
    events: list[str] = []

    class Pushed(MemoryProvider):
        async def stop_fetching(self) -> None:
            events.append("stop_fetching")

    broker.publish("q", "x")
    running = asyncio.Event()
    gate = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        running.set()
        await gate.wait()
        events.append("handler done")
        return True

    manager = Manager([Route(Pushed(broker, "q", wait=0.1), handler)])
    task = asyncio.create_task(manager.serve())
    await asyncio.wait_for(running.wait(), 5)
    manager.stop()
    await asyncio.sleep(0.05)
    assert events == ["stop_fetching"]
    gate.set()
    await asyncio.wait_for(task, 5)
    assert events == ["stop_fetching", "handler done"]


# -- the event loop stays responsive; stray CancelledErrors are failures, not exits ------

STARVE = textwrap.dedent(
    """
    import asyncio
    from loafer_core import Manager, Route
    from loafer_core.memory import MemoryBroker, MemoryProvider
    from loafer_core.testing import run_until_idle

    async def main():
        # a handler that always RETRYs: the memory broker hands the message back at once
        broker = MemoryBroker()
        broker.publish("q", "x")
        try:
            await run_until_idle(
                Route(MemoryProvider(broker, "q"), lambda c, m: False), timeout=0.5
            )
        except TimeoutError:
            print("TIMEOUT-RAISED", flush=True)
        # a backlog the route goes through without waiting: stop() is still heard
        broker = MemoryBroker()
        broker.publish_many("big", list(range(1, 200_001)))

        async def fast(content, metadata):
            return True

        async with Manager([Route(MemoryProvider(broker, "big"), fast, max_concurrency=100)]):
            await asyncio.sleep(0.01)
        print("LEFT", broker.depth("big"), flush=True)

    asyncio.run(main())
    """
)


def test_a_route_that_never_waits_still_lets_timers_and_stop_run() -> None:
    # in a subprocess: a starved event loop could not be interrupted from inside
    proc = subprocess.run(
        [sys.executable, "-c", STARVE], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert "TIMEOUT-RAISED" in lines, proc.stdout
    left = int(next(line for line in lines if line.startswith("LEFT")).split()[1])
    assert left > 0, "stop() was only heard once the whole backlog was done"


async def test_a_stray_cancelled_error_from_the_handler_is_an_error_not_an_exit(
    broker: MemoryBroker,
) -> None:
    broker.publish("q", "boom")
    broker.publish("q", "ok")
    seen: list[Any] = []
    errors: list[type[BaseException]] = []
    ok = asyncio.Event()

    async def handler(content: str, metadata: Any) -> bool:
        seen.append(content)
        if content == "boom":
            helper = asyncio.ensure_future(asyncio.sleep(10))
            helper.cancel()
            await helper  # CancelledError, though this worker was never cancelled
        ok.set()
        return True

    def on_error(exc_type: type[BaseException], exc: BaseException, raw: Any) -> Outcome:
        errors.append(exc_type)
        return REJECT("cancelled")

    # one worker: had it died, nothing would handle "ok"
    route = Route(
        MemoryProvider(broker, "q", wait=0.1), handler, error_handler=on_error, max_concurrency=1
    )
    async with Manager([route]):
        await asyncio.wait_for(ok.wait(), 5)
        await broker.wait_idle("q", timeout=5)
    assert seen == ["boom", "ok"]
    assert errors == [asyncio.CancelledError]
    assert [d.body for d in broker.dead_letters("q")] == ["boom"]


async def test_a_stray_cancelled_error_from_fetch_is_retried(
    broker: MemoryBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Backoff, "delay", lambda self, failures: 0.01)

    class CancelOnce(MemoryProvider):
        calls = 0

        async def fetch(self, max_messages: int) -> Sequence[Delivery]:
            self.calls += 1
            if self.calls == 1:
                raise asyncio.CancelledError()  # as a client library may on a dropped link
            return await super().fetch(max_messages)

    broker.publish("q", "x")
    done = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> None:
        done.set()

    route = Route(CancelOnce(broker, "q", wait=0.05), handler, max_concurrency=1)
    async with Manager([route]):
        await asyncio.wait_for(done.wait(), 5)


async def test_a_sync_route_runs_as_many_blocking_handlers_at_once_as_its_slots(
    broker: MemoryBroker,
) -> None:
    slots = 12  # more than the event loop's default executor has threads on a small machine
    together = threading.Barrier(slots, timeout=10)
    broker.publish_many("q", list(range(1, slots + 1)))

    def blocking(content: Any, metadata: Any) -> bool:
        together.wait()  # passes only once all of them block at the same time
        return True

    route = Route(MemoryProvider(broker, "q", wait=0.1), blocking, max_concurrency=slots)
    async with Manager([route]):
        await broker.wait_idle("q", timeout=15)
    assert [s.outcome for s in broker.settlements("q")] == [ACCEPT] * slots


async def test_stuck_sync_handlers_stop_the_fetching_instead_of_burning_attempts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: once max_concurrency threads were stuck, every later delivery 'timed out'
    waiting for a thread without its handler running, and with max_attempts=3 healthy
    messages went to the dead-letter list unprocessed."""
    broker = MemoryBroker(history=HISTORY)
    release = threading.Event()
    ran: list[str] = []

    def handler(content: str, metadata: Any) -> bool:
        ran.append(content)
        if content.startswith("stuck") and not release.is_set():
            release.wait(30)  # a blocking call that overruns the timeout (until released)
        return True

    broker.publish_many("q", ["stuck-1", "stuck-2"])
    route = Route(
        MemoryProvider(broker, "q", wait=0.05),
        handler,
        max_concurrency=2,
        handler_timeout=0.2,
        max_attempts=3,
        retry=None,
    )
    manager = Manager([route], shutdown_timeout=5)
    async with asyncio.timeout(30):
        async with manager:
            await manager.wait_started()
            await eventually(lambda: route.stuck_handlers == 2)
            for i in range(3):
                broker.publish("q", f"healthy-{i}")
            # while every thread is stuck, nothing more is fetched: no attempt is burnt
            await eventually(lambda: broker.depth("q") == 5)  # the 2 retried + 3 healthy
            await asyncio.sleep(0.5)  # (more than two timeouts: a fetch would show by now)
            assert broker.in_flight("q") == 0 and broker.depth("q") == 5
            assert broker.dead_letters("q") == []
            release.set()  # the stuck calls return: the route fetches again
            await broker.wait_idle("q")
    assert route.stuck_handlers == 0
    assert sorted(c for c in ran if c.startswith("healthy")) == [f"healthy-{i}" for i in range(3)]
    assert broker.dead_letters("q") == []
    kinds = [(s.body, s.outcome.kind) for s in broker.settlements("q")]
    assert all(kind is OutcomeKind.ACCEPT for body, kind in kinds if body.startswith("healthy"))
    messages = [r.getMessage() for r in caplog.records]
    assert any("all 2 handler threads are stuck" in m for m in messages)
    # only the two that ran timed out: one line, the second held back (rate limit), counted
    assert sum("handler timed out" in m for m in messages) == 1
    assert any("1 repeated error log lines were held back" in m for m in messages)


async def test_a_sync_handlers_deadline_runs_from_when_its_thread_starts_it() -> None:
    """Waiting for a thread does not count against handler_timeout."""
    from loafer_core._handler import HandlerOverrun, InThreads

    gate = threading.Event()

    def work(x: str) -> str:
        if x == "first":
            gate.wait(10)
        return x

    threads = InThreads(work, max_workers=1, core=1)
    first = asyncio.ensure_future(threads.call_with_deadline(5, "first"))
    await eventually(lambda: threads.threads == 1)
    second = asyncio.ensure_future(threads.call_with_deadline(0.2, "second"))
    await asyncio.sleep(0.4)  # the second waits for the only thread past its timeout...
    assert not second.done()
    gate.set()
    assert await asyncio.wait_for(first, 10) == "first"
    assert await asyncio.wait_for(second, 10) == "second"  # ...and was not timed out for it
    overrun = asyncio.ensure_future(threads.call_with_deadline(0.1, "first"))
    gate.clear()
    with pytest.raises(HandlerOverrun):
        await asyncio.wait_for(overrun, 10)
    assert threads.stuck == 1
    gate.set()
    await eventually(lambda: threads.stuck == 0)
    threads.close()


class _Stubborn(MemoryProvider):
    """A start that swallows its cancellation (as aio-pika's RobustConnection reconnect
    loop did) and a close that never returns: a broker accepting TCP and never answering."""

    closing = False
    relent = False  # set by the test at its end, so that the loop can close

    async def start(self, capacity: int) -> None:
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if self.relent:
                    raise

    async def close(self) -> None:
        self.closing = True
        await asyncio.Event().wait()


async def test_a_start_that_ignores_cancellation_cannot_hold_the_shutdown(
    broker: MemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: serve() never returned after stop() (it awaited the cancelled start)."""
    provider = _Stubborn(broker, "q")
    manager = Manager([Route(provider, lambda c, m: True)], shutdown_timeout=0.5)
    task = asyncio.create_task(manager.serve())
    await asyncio.sleep(0.05)  # let the start begin: there is nothing to await for that
    began = time.monotonic()
    manager.stop()
    await asyncio.wait_for(task, 10)
    # the start's 0.5 s, then the close's forced grace (1 s)
    assert time.monotonic() - began < 4
    assert provider.closing
    assert "did not end when cancelled" in caplog.text
    provider.relent = True  # the start left behind may end now
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for leftover in leftovers:
        leftover.cancel()
    await asyncio.wait_for(asyncio.gather(*leftovers, return_exceptions=True), 5)


async def test_the_whole_shutdown_keeps_to_the_managers_deadline(broker: MemoryBroker) -> None:
    """Before: a close that hung took close_timeout (30 s) whatever shutdown_timeout was."""

    class HangingClose(MemoryProvider):
        async def close(self) -> None:
            await asyncio.Event().wait()

    manager = Manager([Route(HangingClose(broker, "q"), lambda c, m: True)], shutdown_timeout=1)
    task = asyncio.create_task(manager.serve())
    await manager.wait_started()
    began = time.monotonic()
    manager.stop()
    await asyncio.wait_for(task, 20)
    assert time.monotonic() - began < 4  # 1 s deadline, never under the 1 s forced grace


STUBBORN_SERVICE = textwrap.dedent(
    """
    import asyncio, logging, sys
    from loafer_core import Manager, Route
    from loafer_core.memory import MemoryBroker, MemoryProvider

    class Stubborn(MemoryProvider):
        async def start(self, capacity):
            print("STARTING", flush=True)
            while True:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    continue

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    Manager([Route(Stubborn(MemoryBroker(), "q"), lambda c, m: True)], shutdown_timeout=1).run()
    print("RETURNED", flush=True)
    """
)


def test_run_returns_on_sigterm_while_a_start_ignores_cancellation(tmp_path: Path) -> None:
    """Before: 'manager stopped cleanly' was logged but run() never returned (asyncio.run
    waits for every task it cancels, and the start never ends)."""
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN_SERVICE)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "STARTING"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert "RETURNED" in out
    assert "did not end when cancelled" in err
