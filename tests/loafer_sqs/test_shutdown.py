"""Shutdown bounds: a dead (blackholed) endpoint is noticed within seconds, and close()
keeps to the time it is given, releasing its client and tasks even when cut short."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
import weakref
from typing import Any
from urllib.parse import urlsplit

import pytest

from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.outcome import ACCEPT
from loafer_sqs import SQSProvider, SQSPublisher
from tests.loafer_sqs.blackhole import Blackhole
from tests.loafer_sqs.conftest import MakeQueue, send_bodies
from tests.loafer_sqs.test_provider import fetch_n

pytestmark = pytest.mark.sqs


def leftover_tasks() -> set[asyncio.Task[Any]]:
    """Tasks of this loop other than the test's own."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


def through(
    hole: Blackhole, url: str, client_options: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The queue URL and client options that reach ``url`` through ``hole``."""
    return hole.url + urlsplit(url).path, {**client_options, "endpoint_url": hole.url}


async def test_a_blackholed_long_poll_fails_within_seconds(
    make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    with Blackhole(client_options["endpoint_url"]) as hole:
        queue, options = through(hole, url, client_options)
        provider = SQSProvider(queue, {"WaitTimeSeconds": 1}, **options)
        await provider.start(1)
        try:
            hole.swallow()
            started = time.monotonic()
            # botocore's defaults (60 s read timeout, then retries) would take minutes
            with pytest.raises(ProviderError, match="receiving from"):
                async with asyncio.timeout(30):
                    while True:
                        await provider.fetch(1)
            # WaitTimeSeconds 1 + 5 s of read margin + 3 s to connect, and some slack
            assert time.monotonic() - started < 12
        finally:
            await provider.close()
        assert not leftover_tasks()
        await hole.all_closed(5)


async def test_health_on_a_silent_endpoint_is_false_within_seconds(
    make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    with Blackhole(client_options["endpoint_url"]) as hole:
        queue, options = through(hole, url, client_options)
        provider = SQSProvider(queue, {"WaitTimeSeconds": 1}, **options)
        await provider.start(1)
        try:
            assert await provider.health()
            hole.swallow()
            started = time.monotonic()
            async with asyncio.timeout(30):
                assert not await provider.health()
            assert time.monotonic() - started < 12
        finally:
            await provider.close()


async def _blackholed_with_settles_pending(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any], hole: Blackhole, **kwargs: Any
) -> SQSProvider:
    """A provider whose endpoint went silent with deletes pending and a receive in flight."""
    url = await make_queue(visibility=60)
    await send_bodies(sqs, url, [json.dumps(i) for i in range(5)])
    queue, options = through(hole, url, client_options)
    provider = SQSProvider(queue, {"WaitTimeSeconds": 1}, **kwargs, **options)
    await provider.start(5)
    deliveries = await fetch_n(provider, 5)
    hole.swallow()
    for delivery in deliveries:
        await provider.settle(delivery, ACCEPT)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(provider.fetch(1), 0.5)  # its receive stays in flight
    return provider


async def test_close_cut_short_by_its_caller_still_releases_everything(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    with Blackhole(client_options["endpoint_url"]) as hole:
        # a long grace: the caller's bound, not the provider's own, cuts the close short
        provider = await _blackholed_with_settles_pending(
            sqs, make_queue, client_options, hole, close_grace=5
        )
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                await provider.close()
        assert time.monotonic() - started < 2.5  # the bound (1 s) and slack for a busy machine
        assert not leftover_tasks()
        await hole.all_closed(5)


@pytest.mark.parametrize("given", ["close_timeout", "close(timeout)"])
async def test_close_keeps_to_its_own_bound(
    sqs: Any,
    make_queue: MakeQueue,
    client_options: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    given: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="loafer_sqs")
    with Blackhole(client_options["endpoint_url"]) as hole:
        extra = {"close_timeout": 1.0} if given == "close_timeout" else {}
        provider = await _blackholed_with_settles_pending(
            sqs, make_queue, client_options, hole, **extra
        )
        started = time.monotonic()
        async with asyncio.timeout(10):
            if given == "close_timeout":
                await provider.close()
            else:
                await provider.close(timeout=1.0)
        assert time.monotonic() - started < 2.5  # the bound (1 s) and slack for a busy machine
        assert not leftover_tasks()
        await hole.all_closed(5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("5 settlement" in m and "visibility timeout" in m for m in warnings), warnings


@pytest.mark.parametrize("cut", ["close(timeout)", "caller's deadline"])
async def test_publisher_close_keeps_to_its_bound(
    make_queue: MakeQueue, client_options: dict[str, Any], cut: str
) -> None:
    url = await make_queue()
    with Blackhole(client_options["endpoint_url"]) as hole:
        queue, options = through(hole, url, client_options)
        publisher = SQSPublisher(queue, **options)
        async with asyncio.timeout(10):
            await publisher.publish("before")  # the client is open and has talked
        hole.swallow()
        publishing = asyncio.create_task(publisher.publish("lost"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(publishing), 0.5)  # its call is in flight
        started = time.monotonic()
        if cut == "close(timeout)":
            async with asyncio.timeout(10):
                await publisher.close(timeout=1.0)
        else:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1.0):
                    await publisher.close()
        assert time.monotonic() - started < 2.5  # the bound (1 s) and slack for a busy machine
        with pytest.raises(ProviderError):
            await publishing
        assert not leftover_tasks()
        await hole.all_closed(5)


@pytest.mark.parametrize("stop", ["cancelled, then closed", "closed while starting"])
async def test_a_start_stopped_on_a_silent_endpoint_leaves_nothing(
    client_options: dict[str, Any], stop: str
) -> None:
    with Blackhole() as hole:  # silent from the start: start() waits on its first call
        options = {**client_options, "endpoint_url": hole.url}
        provider = SQSProvider("orders", {"WaitTimeSeconds": 1}, **options)
        starting = asyncio.create_task(provider.start(1))
        await hole.connected(10)
        started = time.monotonic()
        if stop == "cancelled, then closed":
            starting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(starting, 1)
            await asyncio.wait_for(provider.close(), 1)
        else:
            await asyncio.wait_for(provider.close(), 1)
            # the start ends at once too, saying why
            with pytest.raises(ConfigurationError, match="closed"):
                await asyncio.wait_for(starting, 1)
        assert time.monotonic() - started < 2.5  # the bound (1 s) and slack for a busy machine
        assert not leftover_tasks()
        await hole.all_closed(5)
        ref = weakref.ref(provider)
        del provider, starting
        gc.collect()
        assert ref() is None


async def test_a_first_publish_stopped_on_a_silent_endpoint_leaves_nothing(
    client_options: dict[str, Any],
) -> None:
    with Blackhole() as hole:
        publisher = SQSPublisher("orders", **{**client_options, "endpoint_url": hole.url})
        publishing = asyncio.create_task(publisher.publish("x"))  # looks the queue up first
        await hole.connected(10)
        started = time.monotonic()
        publishing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(publishing, 1)
        await asyncio.wait_for(publisher.close(), 1)
        assert time.monotonic() - started < 2.5  # the bound (1 s) and slack for a busy machine
        assert not leftover_tasks()
        await hole.all_closed(5)


async def test_a_publisher_closed_while_its_client_opens_closes_that_client(
    client_options: dict[str, Any],
) -> None:
    from aiobotocore.session import AioSession

    opening, go_on = asyncio.Event(), asyncio.Event()
    exits: list[object] = []

    class GatedSession(AioSession):  # type: ignore[misc]
        """Holds create_client until ``go_on`` is set, and records the client's close."""

        def create_client(self, *args: Any, **kwargs: Any) -> Any:
            inner = super().create_client(*args, **kwargs)

            class Gated:
                async def __aenter__(self) -> Any:
                    opening.set()
                    await go_on.wait()
                    return await inner.__aenter__()

                async def __aexit__(self, *exc: object) -> Any:
                    exits.append(exc)
                    return await inner.__aexit__(*exc)

            return Gated()

    publisher = SQSPublisher("orders", **client_options, session=GatedSession())
    publishing = asyncio.create_task(publisher.publish("x"))
    await asyncio.wait_for(opening.wait(), 5)
    await asyncio.wait_for(publisher.close(), 1)
    go_on.set()
    with pytest.raises(ProviderError, match="closed"):
        await asyncio.wait_for(publishing, 5)
    assert len(exits) == 1  # the client opened after close() was closed at once
    assert not leftover_tasks()


async def test_a_manager_on_a_silent_endpoint_stops_within_the_close_bound(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    from loafer_core import Manager
    from loafer_sqs import SQSRoute

    url = await make_queue(visibility=60)
    await send_bodies(sqs, url, [json.dumps({"i": i}) for i in range(5)])
    handled = asyncio.Event()
    count = 0

    with Blackhole(client_options["endpoint_url"]) as hole:
        queue, options = through(hole, url, client_options)

        async def handler(message: Any, metadata: Any) -> bool:
            nonlocal count
            count += 1
            if count == 5:
                hole.swallow()  # the endpoint goes silent: these deletes never get through
                handled.set()
            return True

        route = SQSRoute(
            queue,
            {"options": {"WaitTimeSeconds": 1}, "close_timeout": 2, **options},
            handler=handler,
            max_concurrency=5,
        )
        manager = Manager([route], shutdown_timeout=5)
        serving = asyncio.create_task(manager.serve())
        await asyncio.wait_for(handled.wait(), 20)
        started = time.monotonic()
        manager.stop()
        await asyncio.wait_for(serving, 20)
        # the provider's close gives up after close_timeout (the dispatcher's own bound
        # on close is 30 s)
        assert time.monotonic() - started < 6
        assert not leftover_tasks()
        await hole.all_closed(5)
