"""Middleware: order, what it sees, changing the outcome, short-circuiting, timing,
failing; none costs nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from loafer_core import ACCEPT, REJECT, RETRY, ConfigurationError, Manager, Outcome, Route
from loafer_core.context import RouteContext
from loafer_core.dispatcher import Dispatcher
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.middleware import Process
from loafer_core.outcome import OutcomeKind
from loafer_core.provider import Delivery
from loafer_core.testing import run_until_idle

pytestmark = pytest.mark.memory


def recorder(name: str, log: list[str]) -> Any:
    async def middleware(delivery: Delivery, route: RouteContext, call_next: Process) -> Outcome:
        log.append(f"{name} in")
        outcome = await call_next(delivery)
        log.append(f"{name} out")
        return outcome

    return middleware


async def test_the_managers_wrap_the_routes_and_the_first_is_outermost() -> None:
    broker = MemoryBroker()
    broker.publish("q", "x")
    log: list[str] = []

    async def handler(content: Any, metadata: Any) -> bool:
        log.append("handler")
        return True

    route = Route(
        MemoryProvider(broker, "q"),
        handler,
        middleware=[recorder("r1", log), recorder("r2", log)],
    )
    manager = Manager([route], middleware=[recorder("m1", log), recorder("m2", log)])
    async with manager:
        await manager.wait_started()
        await broker.wait_idle("q", timeout=10)
    inward = ["m1 in", "m2 in", "r1 in", "r2 in"]
    outward = ["r2 out", "r1 out", "m2 out", "m1 out"]
    assert log == [*inward, "handler", *outward]


async def test_a_middleware_sees_the_delivery_route_outcome_and_exception_and_can_change_it() -> (
    None
):
    broker = MemoryBroker(history=10)
    broker.publish("q", "bad", headers={"h": 1})
    seen: list[tuple[Any, ...]] = []

    async def handler(content: Any, metadata: Any) -> bool:
        raise ValueError("no good")

    async def reject_errors(delivery: Delivery, route: RouteContext, call_next: Process) -> Outcome:
        outcome = await call_next(delivery)
        seen.append(
            (delivery.raw, delivery.attempt, delivery.metadata["headers"], route.name, outcome)
        )
        if isinstance(delivery.error, ValueError):
            return REJECT(f"middleware: {delivery.error}")
        return outcome

    route = Route(MemoryProvider(broker, "q"), handler, name="r", middleware=[reject_errors])
    report = await run_until_idle(route, timeout=10)
    assert seen == [("bad", 1, {"h": 1}, "r", RETRY(1.0))]  # the default retry's delay
    assert [s.outcome for s in report.settlements] == [REJECT("middleware: no good")]


async def test_a_middleware_can_skip_the_handler_and_time_it() -> None:
    broker = MemoryBroker(history=10)
    for mid in ("a", "b", "a"):
        broker.publish("q", mid, message_id=mid)
    handled: list[str] = []
    timings: list[float] = []
    seen_ids: set[str | None] = set()

    async def handler(content: str, metadata: Any) -> bool:
        handled.append(content)
        await asyncio.sleep(0.05)
        return True

    async def dedup(delivery: Delivery, route: RouteContext, call_next: Process) -> Outcome:
        if delivery.message_id in seen_ids:
            return ACCEPT  # a duplicate: settled without running the handler
        seen_ids.add(delivery.message_id)
        return await call_next(delivery)

    async def timer(delivery: Delivery, route: RouteContext, call_next: Process) -> Outcome:
        began = time.perf_counter()
        try:
            return await call_next(delivery)
        finally:
            timings.append(time.perf_counter() - began)

    route = Route(
        MemoryProvider(broker, "q"), handler, max_concurrency=1, middleware=[dedup, timer]
    )
    report = await run_until_idle(route, timeout=10)
    assert handled == ["a", "b"]
    assert len(report.accepted) == 3
    assert len(timings) == 2 and min(timings) >= 0.05


async def test_a_failing_middleware_retries_the_delivery_and_the_route_runs_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = MemoryBroker(history=10)
    broker.publish_many("q", ["boom", "fine"])

    async def explosive(delivery: Delivery, route: RouteContext, call_next: Process) -> Outcome:
        if delivery.raw == "boom" and delivery.attempt == 1:
            raise RuntimeError("middleware bug")
        return await call_next(delivery)

    route = Route(
        MemoryProvider(broker, "q"), lambda c, m: True, middleware=[explosive], retry=None
    )
    with caplog.at_level(logging.ERROR):
        report = await run_until_idle(route, timeout=10)
    assert sorted(s.body for s in report.accepted) == ["boom", "fine"]
    assert [s.outcome.kind for s in report.retried] == [OutcomeKind.RETRY]
    assert "middleware bug" in caplog.text


def test_bad_middleware_is_refused_naming_the_argument() -> None:
    provider = MemoryProvider(MemoryBroker(), "q")

    async def one(delivery: Delivery, route: RouteContext, call_next: Process) -> Outcome:
        return await call_next(delivery)

    with pytest.raises(ConfigurationError, match=r"Route\(middleware=...\): .* wrap it in a list"):
        Route(provider, lambda c, m: True, middleware=one)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="item 1 is a int"):
        Route(provider, lambda c, m: True, middleware=[one, 3])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match=r"Manager\(middleware=...\)"):
        Manager([Route(provider, lambda c, m: True)], middleware=42)  # type: ignore[arg-type]


def test_without_middleware_the_route_is_called_directly() -> None:
    route = Route(MemoryProvider(MemoryBroker(), "q"), lambda c, m: True)
    assert Dispatcher(route)._process == route.process  # no wrapper: no cost


async def test_a_middleware_failing_on_every_delivery_is_bounded_by_max_attempts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: an internal error logged with its traceback on every delivery, RETRIED
    for ever (max_attempts is checked inside the chain, which it never reached)."""
    broker = MemoryBroker(history=100)
    broker.publish_many("q", [f"m{i}" for i in range(20)])

    async def broken(delivery: Delivery, route: RouteContext, call_next: Process) -> Outcome:
        raise RuntimeError("middleware bug")

    route = Route(
        MemoryProvider(broker, "q"),
        lambda c, m: True,
        middleware=[broken],
        retry=None,
        max_attempts=2,
    )
    report = await run_until_idle(route, timeout=10)
    assert len(report.retried) == 20 and len(report.rejected) == 20
    assert route.message_errors == 40
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert 1 <= len(errors) <= 2 and "middleware bug" in caplog.text


async def test_a_middleware_returning_no_outcome_is_an_error_of_the_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = MemoryBroker(history=10)
    broker.publish("q", "a")

    async def forgets_to_return(delivery: Delivery, route: RouteContext, call_next: Process) -> Any:
        await call_next(delivery)

    route = Route(
        MemoryProvider(broker, "q"),
        lambda c, m: True,
        middleware=[forgets_to_return],
        retry=None,
        max_attempts=1,
    )
    report = await run_until_idle(route, timeout=10)
    assert [s.outcome.kind for s in report.rejected] == [OutcomeKind.REJECT]
    assert "returned NoneType, not an Outcome" in caplog.text


async def test_a_stray_cancellation_in_a_middleware_is_an_error_not_a_lost_worker() -> None:
    """A middleware awaiting something cancelled by someone else (a closed client's
    future) sees CancelledError while its task is not being cancelled. Before: it ended
    the worker, and the delivery was never settled."""
    broker = MemoryBroker(history=10)
    broker.publish("q", "a")

    async def stray(delivery: Delivery, route: RouteContext, call_next: Process) -> Outcome:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.cancel()  # by its owner, not by loafer
        await future
        return await call_next(delivery)

    route = Route(
        MemoryProvider(broker, "q"),
        lambda c, m: True,
        middleware=[stray],
        retry=None,
        max_attempts=1,
        max_concurrency=1,
    )
    report = await run_until_idle(route, timeout=5)
    assert [s.outcome.kind for s in report.rejected] == [OutcomeKind.REJECT]
    assert route.message_errors == 1
