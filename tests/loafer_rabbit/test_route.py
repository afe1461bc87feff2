"""RabbitRoute under a Manager on a real RabbitMQ: attempts, dead-lettering, bad input."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from loafer_core import Manager, RetryPolicy
from loafer_core.errors import ConfigurationError, RejectMessage
from loafer_core.outcome import REJECT, RELEASE, RETRY, Outcome
from loafer_rabbit import RabbitProvider, RabbitRoute
from tests.loafer_rabbit.conftest import RabbitAdmin

pytestmark = pytest.mark.rabbit


def track(admin: RabbitAdmin, route: RabbitRoute) -> RabbitProvider:
    provider = route.provider
    admin.track(
        provider.retry_queue,
        provider.dead_letter_queue,
        exchanges=(provider.dead_letter_exchange,),
    )
    return provider


def test_route_options_are_split_between_route_and_provider(rabbit_url: str) -> None:
    route = RabbitRoute(
        "orders",
        url=rabbit_url,
        handler=lambda content, metadata: True,
        max_concurrency=7,
        dead_letter=True,
        provider_options={"prefetch_headroom": 2},
    )
    assert isinstance(route.provider, RabbitProvider)
    assert route.max_concurrency == 7
    assert route.provider.queue == "orders"
    assert route.provider.settings.prefetch_headroom == 2
    assert route.name == "rabbit:orders"


def test_route_rejects_unknown_options(rabbit_url: str) -> None:
    with pytest.raises(ConfigurationError, match="no_such_option"):
        RabbitRoute("q", url=rabbit_url, handler=lambda c, m: True, no_such_option=1)
    with pytest.raises(ConfigurationError, match="bogus"):
        RabbitRoute("q", handler=lambda c, m: True, provider_options={"bogus": 1})


async def test_max_attempts_with_delayed_retries_ends_in_the_dead_letter_queue(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    name = await admin.declare()
    attempts: list[int | None] = []

    async def handler(content: Any, metadata: Any) -> bool:
        attempts.append(metadata.get("headers", {}).get("x-loafer-attempt", 1))
        return False  # always fails: RETRY

    route = RabbitRoute(
        name,
        url=rabbit_url,
        handler=handler,
        max_attempts=3,
        retry=RetryPolicy(initial=0.3, factor=1),
        dead_letter=True,
        poll_timeout=0.5,
    )
    provider = track(admin, route)
    await admin.put(name, b'{"doomed": true}')
    async with Manager([route]) as manager:
        await manager.wait_started()
        await admin.wait_count(provider.dead_letter_queue, 1, timeout=20)
    assert attempts == [1, 2, 3]
    (dead,) = await admin.drain(provider.dead_letter_queue)
    assert dead.body == b'{"doomed": true}'
    assert "max_attempts" in str(dead.headers["x-loafer-reject-reason"])
    assert await admin.count(name) == 0
    assert provider.retry_queues
    for retry_queue in provider.retry_queues:
        assert await admin.count(retry_queue) == 0


async def test_reject_message_from_a_handler_dead_letters(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    name = await admin.declare()
    done = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        if content.get("poison"):
            raise RejectMessage("poison pill")
        done.set()
        return True

    route = RabbitRoute(name, url=rabbit_url, handler=handler, dead_letter=True)
    provider = track(admin, route)
    await admin.put(name, b'{"poison": true}')
    await admin.put(name, b'{"poison": false}')
    async with Manager([route]) as manager:
        await manager.wait_started()
        await asyncio.wait_for(done.wait(), 15)
        await admin.wait_count(provider.dead_letter_queue, 1)
    (dead,) = await admin.drain(provider.dead_letter_queue)
    assert dead.headers["x-loafer-reject-reason"] == "poison pill"


async def test_bad_input_goes_to_the_error_handler_and_is_settled_as_it_decides(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    name = await admin.declare()
    not_utf8 = b'{"a": "\xff\xfe"}'
    not_json = b'{"unterminated": '
    big = b"[" + b"1," * (5 * 1024 * 1024 // 2) + b"]"  # 5 MB, invalid JSON (trailing comma)
    good = b'{"good": true}'
    seen: list[tuple[type[BaseException], int]] = []
    handled: list[Any] = []
    all_done = asyncio.Event()
    good_done = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        handled.append(content)
        good_done.set()
        return True

    async def error_handler(exc_type: Any, exc: Any, message: Any) -> Any:
        seen.append((exc_type, len(message)))
        if message == not_utf8:
            return REJECT("not text")  # dead-lettered
        if message == not_json:
            return True  # ACCEPT: dropped
        # the 5 MB body: retried once, then accepted
        if sum(1 for _, size in seen if size == len(big)) == 1:
            return RETRY()
        all_done.set()
        return True

    route = RabbitRoute(
        name,
        url=rabbit_url,
        handler=handler,
        error_handler=error_handler,
        dead_letter=True,
        max_concurrency=4,
    )
    provider = track(admin, route)
    for body in (not_utf8, not_json, big):
        await admin.put(name, body)
    async with Manager([route]) as manager:
        await manager.wait_started()
        await asyncio.wait_for(all_done.wait(), 30)
        # The route is still running: a good message sent afterwards is handled.
        await admin.put(name, good)
        await asyncio.wait_for(good_done.wait(), 15)
    assert handled == [{"good": True}]
    sizes = sorted(size for _, size in seen)
    assert sizes == sorted([len(not_utf8), len(not_json), len(big), len(big)])
    assert all(issubclass(exc_type, ValueError) for exc_type, _ in seen)
    assert await admin.count(name) == 0
    dead = await admin.drain(provider.dead_letter_queue)
    assert [d.body for d in dead] == [not_utf8]


async def test_route_needing_delayed_retries_fails_at_start_when_disabled(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    name = await admin.declare()
    route = RabbitRoute(
        name,
        url=rabbit_url,
        handler=lambda c, m: True,
        retry=RetryPolicy(initial=1),
        delayed_retry=False,
    )
    with pytest.raises(ConfigurationError, match="delayed retries"):
        await Manager([route]).serve()


async def test_missing_queue_stops_the_manager_with_a_configuration_error(
    rabbit_url: str,
) -> None:
    route = RabbitRoute("loafer-test-no-such-queue", url=rabbit_url, handler=lambda c, m: True)
    with pytest.raises(ConfigurationError, match="loafer-test-no-such-queue"):
        await asyncio.wait_for(Manager([route]).serve(), 30)


async def test_handler_outcome_retry_with_delay_through_the_route(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    name = await admin.declare()
    calls: list[float] = []
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def handler(content: Any, metadata: Any) -> Outcome | bool:
        calls.append(loop.time())
        if len(calls) == 1:
            return RETRY(1.0)
        done.set()
        return True

    route = RabbitRoute(name, url=rabbit_url, handler=handler, poll_timeout=0.5)
    track(admin, route)
    await admin.put(name, b'{"x": 1}')
    async with Manager([route]) as manager:
        await manager.wait_started()
        await asyncio.wait_for(done.wait(), 15)
    assert 0.9 <= calls[1] - calls[0] <= 3.5, calls


async def test_mixed_outcomes_out_of_order_lose_nothing_and_never_break_the_channel(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    """Coalesced acks must never cover a delivery still in flight: with handlers finishing
    out of order and mixing ACCEPT, RETRY and RELEASE, a wrong multiple ack would ack a
    message that is later retried (a lost message, or a channel error for an unknown
    delivery tag)."""
    name = await admin.declare()
    total = 300
    rng = random.Random(7)
    seen: dict[int, int] = {}
    accepted: set[int] = set()
    all_done = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> Any:
        i = content["i"]
        seen[i] = seen.get(i, 0) + 1
        await asyncio.sleep(rng.random() * 0.02)
        if seen[i] == 1 and i % 5 == 0:
            return RETRY()
        if seen[i] == 1 and i % 7 == 0:
            return RELEASE
        accepted.add(i)
        if len(accepted) == total:
            all_done.set()
        return True

    route = RabbitRoute(name, url=rabbit_url, handler=handler, max_concurrency=25)
    provider = track(admin, route)
    await admin.put_many(name, [f'{{"i": {i}}}'.encode() for i in range(total)])
    async with Manager([route]) as manager:
        await manager.wait_started()
        await asyncio.wait_for(all_done.wait(), 60)
    assert accepted == set(range(total))
    assert provider.dropped_deliveries == 0  # the channel never broke
    assert await admin.count(name) == 0
    # Exactly the planned redeliveries: nothing acked by mistake, nothing twice.
    expected = {i: 2 if (i % 5 == 0 or i % 7 == 0) else 1 for i in range(total)}
    assert seen == expected


async def test_drain_gives_prefetched_deliveries_back_at_once(
    rabbit_url: str, admin: RabbitAdmin
) -> None:
    """Deliveries pushed beyond what runs go back as the drain begins, not at close."""
    queue = await admin.declare()
    await admin.put_many(queue, [f'{{"i": {i}}}'.encode() for i in range(10)])
    running = 0
    both = asyncio.Event()
    gate = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        nonlocal running
        running += 1
        if running == 2:
            both.set()
        await gate.wait()
        return True

    route = RabbitRoute(
        queue, url=rabbit_url, handler=handler, max_concurrency=2, prefetch_headroom=3
    )
    manager = Manager([route], shutdown_timeout=30)
    serving = asyncio.create_task(manager.serve())
    try:
        await asyncio.wait_for(both.wait(), 15)
        manager.stop()
        async with asyncio.timeout(10):
            while await admin.count(queue) != 8:  # noqa: ASYNC110 - broker state, no event
                await asyncio.sleep(0.05)
        assert running == 2  # the two handlers are still running meanwhile
    finally:
        gate.set()
        await asyncio.wait_for(serving, 30)
    assert await admin.count(queue) == 8
