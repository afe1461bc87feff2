"""The message signals escape ``except Exception`` (olist-loafer 7.0) and still reach the route.

Every test runs the real dispatcher (``run_until_idle``): a signal that escaped the route
would end up in the dispatcher's "internal error" branch (a RETRY, then a REJECT at
``max_attempts=1``) or kill its task (the run would not go idle and time out).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from loafer_core import (
    ACCEPT,
    REJECT,
    DeleteMessage,
    Handlers,
    JSONTranslator,
    LoaferError,
    RejectMessage,
    RetryMessage,
    Route,
    on,
)
from loafer_core.errors import MessageSignal
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.provider import Delivery
from loafer_core.testing import run_until_idle

BODIES = [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']


@dataclasses.dataclass
class Item:
    n: int


def test_signals_are_base_exceptions_not_errors() -> None:
    for signal in (DeleteMessage, RejectMessage, RetryMessage, MessageSignal):
        assert issubclass(signal, BaseException)
        assert not issubclass(signal, Exception)
        assert not issubclass(signal, LoaferError)


def swallowing_delete(content: Any, metadata: Any) -> bool:
    """A 2.x-style handler: its generic ``except Exception`` must not swallow the delete."""
    try:
        raise DeleteMessage()
    except Exception:
        return False  # before the fix: reached, and the message was retried


async def async_swallowing_delete(content: Any, metadata: Any) -> bool:
    await asyncio.sleep(0)
    return swallowing_delete(content, metadata)


async def run(broker: MemoryBroker, handler: Any, **kwargs: Any) -> Any:
    for body in BODIES:
        broker.publish("q", body)
    kwargs.setdefault("translator", JSONTranslator())
    route = Route(MemoryProvider(broker, "q", wait=0.05), handler, max_attempts=1, **kwargs)
    return await run_until_idle(route, timeout=10)


@pytest.mark.parametrize("handler", [swallowing_delete, async_swallowing_delete])
@pytest.mark.parametrize("timeout", [None, 5.0])
async def test_a_delete_inside_except_exception_still_deletes(
    broker: MemoryBroker, handler: Any, timeout: float | None
) -> None:
    report = await run(broker, handler, handler_timeout=timeout)
    assert [s.outcome for s in report.settlements] == [ACCEPT] * len(BODIES)


@pytest.mark.parametrize("sync", [True, False])
async def test_reject_and_retry_escape_except_exception(broker: MemoryBroker, sync: bool) -> None:
    def decide(content: Any) -> None:
        try:
            if content["n"] == 1:
                raise RejectMessage("poison")
            if content["n"] == 2:
                raise RetryMessage()
        except Exception:
            pass

    if sync:

        def handler(content: Any, metadata: Any) -> bool:
            decide(content)
            return True

    else:

        async def handler(content: Any, metadata: Any) -> bool:  # type: ignore[misc]
            decide(content)
            return True

    report = await run(broker, handler)
    outcomes = {s.body: s.outcome for s in report.settlements}
    assert outcomes == {
        b'{"n": 1}': REJECT("poison"),
        # a RETRY at max_attempts=1 is the route's last-attempt REJECT (not "accepted")
        b'{"n": 2}': REJECT("max_attempts (1) reached"),
        b'{"n": 3}': ACCEPT,
    }


async def test_a_signal_from_a_child_task_reaches_the_route(broker: MemoryBroker) -> None:
    async def child(content: Any) -> None:
        await asyncio.sleep(0)
        raise RejectMessage(f"child {content['n']}")

    async def via_task(content: Any, metadata: Any) -> bool:
        await asyncio.create_task(child(content))
        return True

    async def via_gather(content: Any, metadata: Any) -> bool:
        await asyncio.gather(child(content), asyncio.sleep(0))
        return True

    async def via_task_group(content: Any, metadata: Any) -> bool:
        # a TaskGroup wraps a child's BaseException in a BaseExceptionGroup
        async with asyncio.TaskGroup() as group:
            group.create_task(child(content))
        return True

    for handler in (via_task, via_gather, via_task_group):
        report = await run(broker, handler)
        assert sorted(str(s.outcome.reason) for s in report.settlements) == [
            "child 1",
            "child 2",
            "child 3",
        ], handler.__name__


async def test_a_group_mixing_a_signal_and_an_error_is_an_error(broker: MemoryBroker) -> None:
    seen: list[type[BaseException]] = []

    async def handler(content: Any, metadata: Any) -> bool:
        raise BaseExceptionGroup("mixed", [RejectMessage("r"), KeyError("k")])

    async def on_error(exc_type: Any, exc: BaseException, message: Any) -> bool:
        seen.append(exc_type)
        return True

    report = await run(broker, handler, error_handler=on_error)
    assert [s.outcome for s in report.settlements] == [ACCEPT] * len(BODIES)
    assert seen == [BaseExceptionGroup] * len(BODIES)


@pytest.mark.parametrize("sync", [True, False])
async def test_an_error_handler_signal_escapes_its_except_exception(
    broker: MemoryBroker, sync: bool
) -> None:
    async def handler(content: Any, metadata: Any) -> bool:
        raise KeyError("boom")

    def decide() -> bool:
        try:
            raise RejectMessage("reported")
        except Exception:
            return False

    if sync:

        def on_error(exc_type: Any, exc: Any, message: Any) -> bool:
            return decide()

    else:

        async def on_error(exc_type: Any, exc: Any, message: Any) -> bool:  # type: ignore[misc]
            return decide()

    report = await run(broker, handler, error_handler=on_error)
    assert [s.outcome for s in report.settlements] == [REJECT("reported")] * len(BODIES)


async def test_a_typed_and_a_dispatched_handler_delete(broker: MemoryBroker) -> None:
    def typed(item: Item, metadata: Any) -> bool:
        if not isinstance(item, Item):
            return False  # not typed: the test would prove nothing
        try:
            raise DeleteMessage()
        except Exception:
            return False

    report = await run(broker, typed)
    assert [s.outcome for s in report.settlements] == [ACCEPT] * len(BODIES)

    handlers = Handlers([on(when=lambda content, metadata: True, handler=async_swallowing_delete)])
    report = await run(broker, handlers)
    assert [s.outcome for s in report.settlements] == [ACCEPT] * len(BODIES)


async def test_a_middleware_may_raise_a_signal(broker: MemoryBroker) -> None:
    ran: list[Any] = []

    async def handler(content: Any, metadata: Any) -> bool:
        ran.append(content)
        return False

    async def delete_all(delivery: Delivery, route: Route, call_next: Any) -> Any:
        outcome = await call_next(delivery)
        try:
            raise DeleteMessage()
        except Exception:
            return outcome

    async def wraps_call_next(delivery: Delivery, route: Route, call_next: Any) -> Any:
        try:  # the handler's signal was turned into its outcome inside call_next
            return await call_next(delivery)
        except Exception:  # pragma: no cover - must not be reached
            return REJECT("the middleware saw the handler's signal")

    report = await run(broker, handler, middleware=[delete_all])
    assert [s.outcome for s in report.settlements] == [ACCEPT] * len(BODIES)
    assert len(ran) == len(BODIES)

    report = await run(broker, swallowing_delete, middleware=[wraps_call_next])
    assert [s.outcome for s in report.settlements] == [ACCEPT] * len(BODIES)
