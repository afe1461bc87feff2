"""Prometheus metrics of RabbitMQ routes, scraped over HTTP after real messages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from loafer_core import Manager
from loafer_core.metrics import PrometheusMetrics, serve_metrics
from loafer_rabbit import RabbitProvider, RabbitRoute
from tests.loafer_rabbit.conftest import RabbitAdmin
from tests.scrape import MIXED, MIXED_DELIVERIES, Settled, check_mixed, mixed_handler, scrape
from tests.scrape import value as sample

pytestmark = pytest.mark.rabbit


async def test_counts_outcomes_errors_and_durations(admin: RabbitAdmin, rabbit_url: str) -> None:
    name = await admin.declare()
    for body in MIXED:
        await admin.put(name, body)
    settled = Settled(MIXED_DELIVERIES)
    route = RabbitRoute(
        name,
        url=rabbit_url,
        handler=mixed_handler,
        max_attempts=2,
        retry=None,
        poll_timeout=0.5,
        middleware=[settled],
    )
    manager = Manager([route])
    metrics = serve_metrics(manager, 0, host="127.0.0.1")
    async with manager:
        await manager.wait_started()
        await asyncio.wait_for(settled.done.wait(), 30)
        samples = await scrape(metrics.port)  # type: ignore[arg-type]
    check_mixed(samples, route.name, "rabbit")


async def test_backlog_is_the_queues_ready_count(admin: RabbitAdmin, rabbit_url: str) -> None:
    name = await admin.declare()
    for i in range(6):
        await admin.put(name, b'{"n": %d}' % i)
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold(content: Any, metadata: Any) -> bool:
        holding.set()
        await release.wait()
        return True

    route = RabbitRoute(name, url=rabbit_url, handler=hold, max_concurrency=1, poll_timeout=0.5)
    manager = Manager([route])
    metrics = PrometheusMetrics(port=0, host="127.0.0.1").install(manager)
    labels = {"route": route.name, "provider": "rabbit"}
    assert await route.provider.backlog() is None  # not started
    async with manager:
        await manager.wait_started()
        await asyncio.wait_for(holding.wait(), 30)
        await metrics.read_backlogs()
        held = await scrape(metrics.port)  # type: ignore[arg-type]
        release.set()
        await admin.wait_count(name, 0)
        provider = route.provider
        assert isinstance(provider, RabbitProvider)
        assert await provider.backlog() == 0
    assert sample(held, "loafer_queue_backlog", **labels) == 5  # prefetch 1: 1 in flight
    assert sample(held, "loafer_messages_in_flight", **labels) == 1
    assert await route.provider.backlog() is None  # closed


async def test_backlog_survives_a_refused_declare(admin: RabbitAdmin, rabbit_url: str) -> None:
    name = await admin.declare()
    provider = RabbitProvider(name, url=rabbit_url, poll_timeout=0.5)
    await provider.start(1)
    try:
        assert await provider.backlog() == 0
        await admin.delete(name)  # the broker refuses the passive declare: NOT_FOUND
        assert await provider.backlog() is None
        await admin.declare(name)  # back, without the provider's consumer
        await admin.put_many(name, [b"1", b"2"])
        assert await provider.backlog() == 2  # a new channel answers
    finally:
        await provider.close()
