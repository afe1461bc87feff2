"""Forwarding (loafer_core.forward) on the embedded broker: a handler's publishes finish,
confirmed, before its message is settled; a failed one makes it RETRY, never ACCEPT; the
manager opens the publishers before the routes and closes them after the drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import pytest

from loafer_core import ConfigurationError, Manager, ProviderError, RejectMessage, Route, forward
from loafer_core.forward import ForwardError, Publish, publish, publish_soon
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.outcome import OutcomeKind
from loafer_core.testing import run_until_idle

pytestmark = pytest.mark.memory


class FakePublisher:
    """Records publishes; ``gate`` holds each publish until set (a confirm not yet come);
    ``failures`` publishes fail first (a nack)."""

    def __init__(self, log: list[str] | None = None, *, failures: int = 0) -> None:
        self.log = log if log is not None else []
        self.sent: list[tuple[Any, dict[str, Any], dict[str, Any]]] = []
        self.gate: asyncio.Event | None = None
        self.failures = failures
        self.started = asyncio.Event()

    async def connect(self) -> None:
        self.log.append("connect")

    async def close(self) -> None:
        self.log.append("close")

    async def publish(
        self, body: Any, *, headers: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ProviderError("the broker nacked it")
        self.sent.append((body, dict(headers or {}), options))
        self.log.append(f"confirmed {body}")


def outcomes(broker: MemoryBroker, queue: str = "q") -> list[OutcomeKind]:
    return [s.outcome.kind for s in broker.settlements(queue)]


async def test_returned_publishes_are_confirmed_before_the_message_is_accepted(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    target = FakePublisher()
    target.gate = asyncio.Event()
    broker.publish("q", "a")

    async def handler(content: Any, metadata: Any) -> Any:
        return [Publish(f"{content}-1", headers={"k": "v"}), Publish(f"{content}-2", x=1)]

    route = Route(provider, handler, publish_to=target, retry=None)
    async with Manager([route]):
        await asyncio.wait_for(target.started.wait(), 5)
        await asyncio.sleep(0.05)  # the message must stay unsettled while unconfirmed
        assert broker.settled_total("q") == 0 and broker.in_flight("q") == 1
        target.gate.set()
        await broker.wait_idle("q", timeout=5)
    assert outcomes(broker) == [OutcomeKind.ACCEPT]
    assert sorted(target.sent, key=lambda s: s[0]) == [
        ("a-1", {"k": "v"}, {}),
        ("a-2", {}, {"x": 1}),
    ]


async def test_a_failed_returned_publish_retries_the_message(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    target = FakePublisher(failures=1)
    broker.publish("q", "a")

    async def handler(content: Any, metadata: Any) -> Publish:
        return Publish(content)

    await run_until_idle(Route(provider, handler, publish_to=target, retry=None))
    assert outcomes(broker) == [OutcomeKind.RETRY, OutcomeKind.ACCEPT]
    assert [s[0] for s in target.sent] == ["a"]
    assert "ForwardError" in caplog.text and "nacked" in caplog.text


async def test_an_error_handler_accepting_a_failed_publish_cannot_accept_the_message(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    target = FakePublisher(failures=1)
    broker.publish("q", "a")
    seen: list[type[BaseException]] = []

    async def handler(content: Any, metadata: Any) -> Publish:
        return Publish(content)

    def error_handler(exc_type: type[BaseException], exc: BaseException, message: Any) -> bool:
        seen.append(exc_type)
        return True  # "accept it anyway"

    route = Route(provider, handler, publish_to=target, error_handler=error_handler, retry=None)
    await run_until_idle(route)
    assert seen == [ForwardError]
    assert outcomes(broker) == [OutcomeKind.RETRY, OutcomeKind.ACCEPT]


async def test_a_handler_swallowing_a_publish_error_still_retries(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    target = FakePublisher(failures=1)
    broker.publish("q", "a")
    caught: list[BaseException] = []

    async def handler(content: Any, metadata: Any) -> bool:
        try:
            await publish(content)
        except ForwardError as exc:
            caught.append(exc)
        return True

    await run_until_idle(Route(provider, handler, publish_to=target, retry=None))
    assert len(caught) == 1 and isinstance(caught[0].__cause__, ProviderError)
    assert outcomes(broker) == [OutcomeKind.RETRY, OutcomeKind.ACCEPT]


async def test_a_publish_left_in_flight_by_the_handler_is_waited_for(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    log: list[str] = []
    target = FakePublisher(log)
    target.gate = asyncio.Event()
    broker.publish("q", "a")

    async def later(content: Any) -> None:
        await publish(content)

    async def handler(content: Any, metadata: Any) -> bool:
        publish_soon(f"{content}-soon")
        asyncio.get_running_loop().create_task(later(f"{content}-task"))
        await asyncio.sleep(0)  # the task starts its publish
        log.append("handler returned")
        return True

    route = Route(provider, handler, publish_to=target, retry=None)
    async with Manager([route]):
        await asyncio.wait_for(target.started.wait(), 5)
        await asyncio.sleep(0.05)
        assert broker.settled_total("q") == 0  # returned, but its publishes are unconfirmed
        target.gate.set()
        await broker.wait_idle("q", timeout=5)
    assert outcomes(broker) == [OutcomeKind.ACCEPT]
    assert log[:2] == ["connect", "handler returned"]
    assert sorted(log[2:4]) == ["confirmed a-soon", "confirmed a-task"]


async def test_a_failed_publish_left_in_flight_retries_the_message(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    target = FakePublisher(failures=1)
    broker.publish("q", "a")

    async def handler(content: Any, metadata: Any) -> bool:
        publish_soon(content)  # never awaited by the handler
        return True

    await run_until_idle(Route(provider, handler, publish_to=target, retry=None))
    assert outcomes(broker) == [OutcomeKind.RETRY, OutcomeKind.ACCEPT]


async def test_a_handler_cut_by_its_timeout_leaves_no_publish_behind(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    target = FakePublisher()
    target.gate = asyncio.Event()
    broker.publish("q", "a")
    cancelled = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        try:
            await publish(content)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    route = Route(
        provider, handler, publish_to=target, retry=None, handler_timeout=0.2, max_attempts=1
    )
    await run_until_idle(route)
    assert cancelled.is_set()
    assert outcomes(broker) == [OutcomeKind.REJECT]  # RETRY, past max_attempts
    assert target.sent == []
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "loafer:forward"]


async def test_a_reject_from_the_handler_stands(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    target = FakePublisher(failures=1)
    broker.publish("q", "a")

    async def handler(content: Any, metadata: Any) -> bool:
        publish_soon(content)
        raise RejectMessage("poison")

    await run_until_idle(Route(provider, handler, publish_to=target, retry=None))
    assert outcomes(broker) == [OutcomeKind.REJECT]


async def test_named_targets(broker: MemoryBroker, provider: MemoryProvider) -> None:
    orders, audit = FakePublisher(), FakePublisher()
    broker.publish("q", "a")

    async def handler(content: Any, metadata: Any) -> Any:
        await publish(f"audit {content}", to="audit")
        return Publish(content, to="orders")

    await run_until_idle(
        Route(provider, handler, publish_to={"orders": orders, "audit": audit}, retry=None)
    )
    assert [s[0] for s in orders.sent] == ["a"]
    assert [s[0] for s in audit.sent] == ["audit a"]
    assert outcomes(broker) == [OutcomeKind.ACCEPT]


async def test_an_unknown_target_name_is_an_error_of_the_message(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    broker.publish("q", "a")

    async def handler(content: Any, metadata: Any) -> Publish:
        return Publish(content, to="nowhere")

    route = Route(provider, handler, publish_to={"x": FakePublisher()}, retry=None, max_attempts=1)
    await run_until_idle(route)
    assert outcomes(broker) == [OutcomeKind.REJECT]
    assert "no publish_to target named 'nowhere'" in caplog.text


async def test_returning_publish_without_publish_to_is_not_accepted(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    broker.publish("q", "a")

    async def handler(content: Any, metadata: Any) -> Publish:
        return Publish(content)

    await run_until_idle(Route(provider, handler, retry=None, max_attempts=1))
    assert outcomes(broker) == [OutcomeKind.REJECT]
    assert "has no publish_to" in caplog.text


async def test_publish_outside_a_forwarding_route_raises() -> None:
    with pytest.raises(RuntimeError, match="publish_to"):
        await publish("x")
    with pytest.raises(RuntimeError, match="publish_to"):
        publish_soon("x")


async def test_the_manager_opens_publishers_before_routes_and_closes_them_after_the_drain(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    log: list[str] = []
    shared = FakePublisher(log)
    broker.publish("q", "a")
    broker.publish("r", "b")

    async def handler(content: Any, metadata: Any) -> Publish:
        log.append(f"handle {content}")
        return Publish(content)

    routes = [
        Route(provider, handler, publish_to=shared, retry=None),
        Route(MemoryProvider(broker, "r", wait=0.2), handler, publish_to={"x": shared}),
    ]
    manager = Manager(routes)
    async with manager:
        await broker.wait_idle("q", timeout=5)
        await broker.wait_idle("r", timeout=5)
        assert log.count("connect") == 1 and "close" not in log
    assert log[0] == "connect" and log[-1] == "close" and log.count("close") == 1
    assert sorted(log[1:-1]) == ["confirmed a", "confirmed b", "handle a", "handle b"]


async def test_a_publisher_refusing_its_configuration_stops_the_manager(
    provider: MemoryProvider,
) -> None:
    class Missing(FakePublisher):
        async def connect(self) -> None:
            raise ConfigurationError("exchange 'x' does not exist")

    manager = Manager([Route(provider, lambda c, m: True, publish_to=Missing())])
    with pytest.raises(ConfigurationError, match="does not exist"):
        await asyncio.wait_for(manager.serve(), 5)


async def test_a_publisher_that_cannot_connect_yet_is_logged_and_connects_on_publish(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    class Down(FakePublisher):
        async def connect(self) -> None:
            raise ProviderError("connection refused")

    target = Down()
    broker.publish("q", "a")
    with caplog.at_level(logging.WARNING):
        await run_until_idle(
            Route(provider, lambda c, m: Publish(c), publish_to=target, retry=None)
        )
    assert "could not connect at start-up" in caplog.text
    assert [s[0] for s in target.sent] == ["a"]


async def test_a_sync_handler_returns_publish(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    target = FakePublisher()
    broker.publish("q", "a")

    def handler(content: Any, metadata: Any) -> list[Publish]:
        return [Publish(content), Publish(content + "!")]

    await run_until_idle(Route(provider, handler, publish_to=target, retry=None))
    assert sorted(s[0] for s in target.sent) == ["a", "a!"]


@pytest.mark.parametrize(
    ("publish_to", "message"),
    [
        (FakePublisher, "the class FakePublisher"),
        (object(), "not a publisher"),
        ({}, "empty mapping"),
        ({"": FakePublisher()}, "non-empty str"),
    ],
)
def test_publish_to_is_checked(provider: MemoryProvider, publish_to: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Route(provider, lambda c, m: True, publish_to=publish_to)


async def test_publishes_in_flight_when_the_handler_times_out_are_cancelled(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    target = FakePublisher()
    target.gate = asyncio.Event()  # never confirmed
    broker.publish("q", "a")

    async def handler(content: Any, metadata: Any) -> bool:
        publish_soon(content)
        await asyncio.Event().wait()  # overruns handler_timeout
        return True

    route = Route(
        provider, handler, publish_to=target, retry=None, handler_timeout=0.2, max_attempts=1
    )
    await run_until_idle(route, timeout=10)
    assert outcomes(broker) == [OutcomeKind.REJECT]
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "loafer:forward"]


async def test_a_forced_shutdown_cancels_the_publishes_in_flight(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    target = FakePublisher()
    target.gate = asyncio.Event()  # never confirmed
    broker.publish("q", "a")

    async def handler(content: Any, metadata: Any) -> Publish:
        return Publish(content)

    manager = Manager([Route(provider, handler, publish_to=target)], shutdown_timeout=0.2)
    async with manager:
        await asyncio.wait_for(target.started.wait(), 5)
    assert broker.depth("q") == 1  # released, not accepted
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "loafer:forward"]


async def test_publishing_after_the_handler_returned_raises(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    target = FakePublisher()
    broker.publish("q", "a")
    late: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def too_late(content: Any, returned: asyncio.Event) -> None:
        await returned.wait()
        try:
            await publish(content)
        except RuntimeError as exc:
            late.set_result(exc)

    async def async_handler(content: Any, metadata: Any) -> bool:
        returned = asyncio.Event()
        asyncio.get_running_loop().create_task(too_late(content, returned))
        asyncio.get_running_loop().call_soon(returned.set)
        return True

    await run_until_idle(Route(provider, async_handler, publish_to=target))
    error = await asyncio.wait_for(late, 5)
    assert "after the handler returned" in str(error)
    assert target.sent == []


async def test_publish_soon_from_a_sync_handler_says_to_return_publish(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    broker.publish("q", "a")

    def handler(content: Any, metadata: Any) -> bool:
        publish_soon(content)
        return True

    route = Route(provider, handler, publish_to=FakePublisher(), retry=None, max_attempts=1)
    await run_until_idle(route)
    assert outcomes(broker) == [OutcomeKind.REJECT]
    assert "returns Publish(...) values instead" in caplog.text


# -- review: shutdown bounds, publishes never outliving their message, logs ----------------


class Stubborn(FakePublisher):
    """A publish that ignores its cancellation until ``let_go`` is set (a publisher bug)."""

    def __init__(self) -> None:
        super().__init__()
        self.let_go = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None

    async def publish(
        self, body: Any, *, headers: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        self.task = asyncio.current_task()
        self.started.set()
        while not self.let_go.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await self.let_go.wait()

    async def end(self) -> None:
        self.let_go.set()
        if self.task is not None:
            await asyncio.wait_for(asyncio.shield(self.task), 5)


@pytest.mark.parametrize("returned", [True, False], ids=["returned", "publish_soon"])
async def test_a_publish_ignoring_its_cancellation_cannot_hold_a_forced_shutdown(
    broker: MemoryBroker,
    provider: MemoryProvider,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    returned: bool,
) -> None:
    monkeypatch.setattr(forward, "CANCEL_GRACE", 0.3, raising=False)
    target = Stubborn()
    broker.publish("q", "a")

    async def handler(content: Any, metadata: Any) -> Any:
        if returned:
            return Publish(content)
        publish_soon(content)
        return True

    manager = Manager([Route(provider, handler, publish_to=target)], shutdown_timeout=0.1)
    safety_net = asyncio.get_running_loop().call_later(6, target.let_go.set)
    try:
        async with asyncio.timeout(5):  # hung until the publish ended before the fix
            async with manager:
                await asyncio.wait_for(target.started.wait(), 5)
    finally:
        safety_net.cancel()
        await target.end()
    assert broker.depth("q") == 1  # released, not accepted
    assert "did not end within 0.3s of being cancelled" in caplog.text


async def test_a_publish_soon_cut_by_a_forced_shutdown_ends_before_its_message_is_released(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    """The publish's own clean-up (after its cancellation) finishes while the message is
    still unsettled: no publish outlives the settlement of its message."""
    target = FakePublisher()
    broker.publish("q", "a")
    in_flight_at_end: list[int] = []

    async def publish_slowly(body: Any, **kwargs: Any) -> None:
        target.started.set()
        try:
            await asyncio.Event().wait()  # never confirmed
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # its clean-up (closing a channel, say) takes a while
            in_flight_at_end.append(broker.in_flight("q"))
            raise

    target.publish = publish_slowly  # type: ignore[method-assign]

    async def handler(content: Any, metadata: Any) -> bool:
        publish_soon(content)
        return True

    manager = Manager([Route(provider, handler, publish_to=target)], shutdown_timeout=0.1)
    async with asyncio.timeout(5):
        async with manager:
            await asyncio.wait_for(target.started.wait(), 5)
    assert in_flight_at_end == [1]  # ended before the release
    assert broker.depth("q") == 1
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "loafer:forward"]


async def test_a_target_down_logs_at_the_routes_bounded_rate(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """A down target fails every message's publish: one log line (and the count of
    those held back), not one per message."""
    target = FakePublisher(failures=10**6)
    for i in range(40):
        broker.publish("q", i)

    async def handler(content: Any, metadata: Any) -> bool:
        publish_soon(content)
        return True

    route = Route(provider, handler, publish_to=target, retry=None, max_attempts=1)
    await run_until_idle(route)
    assert outcomes(broker).count(OutcomeKind.REJECT) == 40
    lines = [r for r in caplog.records if r.name == "loafer_core.route"]
    errors = [r for r in lines if r.levelno >= logging.ERROR]
    assert len(errors) <= 2, [r.getMessage()[:100] for r in errors]
    assert route.message_errors == 40


async def test_returning_an_empty_list_of_publishes_accepts(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """``return [Publish(x) for x in items]`` with no items: nothing to forward. Before:
    Loafer's falsy rule, a RETRY, again and again."""
    target = FakePublisher()
    broker.publish("q", "a")

    async def handler(content: Any, metadata: Any) -> list[Publish]:
        nothing: tuple[Any, ...] = ()
        return [Publish(item) for item in nothing]

    await run_until_idle(Route(provider, handler, publish_to=target, retry=None), timeout=5)
    assert outcomes(broker) == [OutcomeKind.ACCEPT]
    assert target.sent == [] and "falsy" not in caplog.text


async def test_a_list_mixing_publish_and_other_values_is_an_error_not_an_accept(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a truthy list, ACCEPTED, its Publish values silently never sent."""
    target = FakePublisher()
    broker.publish("q", "a")

    async def handler(content: Any, metadata: Any) -> list[Any]:
        return [Publish(content), None]

    route = Route(provider, handler, publish_to=target, retry=None, max_attempts=1)
    await run_until_idle(route)
    assert outcomes(broker) == [OutcomeKind.REJECT]
    assert target.sent == []
    assert "item 1 is a NoneType" in caplog.text


async def test_a_handler_exiting_cancels_its_publishes_and_releases_its_message(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    target = FakePublisher()
    target.gate = asyncio.Event()  # never confirmed
    broker.publish("q", "a")

    async def handler(content: Any, metadata: Any) -> bool:
        publish_soon(content)
        await asyncio.wait_for(target.started.wait(), 5)
        raise SystemExit(3)

    manager = Manager([Route(provider, handler, publish_to=target)])
    with pytest.raises(SystemExit):
        async with asyncio.timeout(10):
            await manager.serve()
    assert broker.depth("q") == 1 and target.sent == []
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "loafer:forward"]


async def test_a_publisher_whose_connect_never_returns_cannot_hold_the_start_up(
    broker: MemoryBroker,
    provider: MemoryProvider,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: the manager waited for ever, its routes never started (stop() could not
    interrupt it either)."""
    monkeypatch.setattr(forward, "START_TIMEOUT", 0.3, raising=False)

    class Blackholed(FakePublisher):
        async def connect(self) -> None:
            await asyncio.Event().wait()  # a SYN into a firewall that drops it

    target = Blackholed()
    broker.publish("q", "a")
    async with asyncio.timeout(5):
        await run_until_idle(
            Route(provider, lambda c, m: Publish(c), publish_to=target, retry=None)
        )
    assert "did not connect within 0.3s" in caplog.text
    assert [s[0] for s in target.sent] == ["a"]
