"""NATSRoute end to end: public names, bad input, attempts and dead letters, plugins."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from loafer_core import Manager
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import ACCEPT, Outcome
from loafer_core.plugins import load_provider
from loafer_nats import REJECT_REASON_HEADER, NATSProvider, NATSPublisher, NATSRoute

from .conftest import NatsAdmin

pytestmark = pytest.mark.nats


def test_route_splits_provider_and_route_options() -> None:
    route = NATSRoute(
        "ORDERS",
        consumer="billing",
        create=True,
        subjects=["orders.>"],
        handler=lambda c, m: True,
        max_concurrency=7,
    )
    assert isinstance(route.provider, NATSProvider)
    assert route.provider.consumer == "billing"
    assert route.name == "nats:ORDERS/billing"
    with pytest.raises(ConfigurationError, match="NATSRoute"):
        NATSRoute("ORDERS", handler=lambda c, m: True, no_such_option=1)


def test_entry_points() -> None:
    assert load_provider("nats") is NATSProvider
    from loafer_cli.publish import load_publisher

    assert load_publisher("nats") is NATSPublisher


async def test_bad_bodies_reach_the_error_handler_and_the_route_runs_on(
    admin: NatsAdmin,
) -> None:
    stream = await admin.stream()
    bad = [b"not json", b"\xff\xfe", b"", b'{"open": ', b"x" * 1_000_000]
    for body in bad:
        await admin.put(stream, body)
    await admin.put(stream, b'{"good": 1}')  # no headers at all: fine
    errors: list[type[BaseException]] = []
    handled: list[Any] = []
    finished = asyncio.Event()

    def check() -> None:
        if len(errors) == len(bad) and handled:
            finished.set()

    async def handler(content: Any, metadata: Any) -> bool:
        assert metadata["headers"] == {}
        handled.append(content)
        check()
        return True

    async def error_handler(exc_type: Any, exc: Any, raw: Any) -> Outcome:
        errors.append(exc_type)
        check()
        return ACCEPT

    route = NATSRoute(
        stream,
        url=admin.url,
        consumer="work",
        handler=handler,
        error_handler=error_handler,
        max_concurrency=3,
        poll_timeout=1.0,
    )
    async with Manager([route]):
        async with asyncio.timeout(20):
            await finished.wait()
    assert handled == [{"good": 1}]
    assert all(issubclass(e, ValueError) for e in errors), errors
    await admin.wait_consumer(stream, num_pending=0, num_ack_pending=0)


async def test_max_attempts_dead_letters_with_the_reason(admin: NatsAdmin) -> None:
    stream = await admin.stream(dead_letter=True)
    await admin.put(stream, b'{"poison": true}', {"trace": "t-1"})
    attempts: list[int] = []

    async def handler(content: Any, metadata: Any) -> bool:
        attempts.append(metadata["num_delivered"])
        raise RuntimeError("always fails")

    route = NATSRoute(
        stream,
        url=admin.url,
        consumer="work",
        handler=handler,
        max_attempts=3,
        retry=None,
        dead_letter_subject=f"dead.{stream}",
        poll_timeout=1.0,
    )
    async with Manager([route]):
        async with asyncio.timeout(30):
            while True:  # the dead-letter stream is the server's state: poll it
                if await admin.messages(f"{stream}-dead"):
                    break
                await asyncio.sleep(0.1)
    [copy] = await admin.stored(f"{stream}-dead")
    assert copy.data == b'{"poison": true}'
    assert copy.headers["trace"] == "t-1"
    assert copy.headers[REJECT_REASON_HEADER]
    assert attempts == [1, 2, 3]
    await admin.wait_consumer(stream, num_pending=0, num_ack_pending=0)
