"""Prometheus metrics of SQS routes (moto), scraped over HTTP after real messages."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from loafer_core import Manager
from loafer_core.metrics import PrometheusMetrics, serve_metrics
from loafer_sqs import SQSProvider, SQSRoute
from tests.loafer_sqs.conftest import MakeQueue, queue_counts, send_bodies
from tests.scrape import MIXED, MIXED_DELIVERIES, Settled, check_mixed, mixed_handler, scrape
from tests.scrape import value as sample

pytestmark = pytest.mark.sqs


async def test_counts_outcomes_errors_and_durations(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue(visibility=1)  # a plain RETRY comes back after 1 s
    await send_bodies(sqs, url, [body.decode() for body in MIXED])
    settled = Settled(MIXED_DELIVERIES)
    route = SQSRoute(
        url,
        {"options": {"WaitTimeSeconds": 1}, **client_options},
        handler=mixed_handler,
        name="mixed",
        max_attempts=2,
        middleware=[settled],
    )
    manager = Manager([route])
    metrics = serve_metrics(manager, 0, host="127.0.0.1")
    async with manager:
        await manager.wait_started()
        await asyncio.wait_for(settled.done.wait(), 30)
        samples = await scrape(metrics.port)  # type: ignore[arg-type]
    check_mixed(samples, "mixed", "sqs")


async def test_backlog_is_approximate_number_of_messages(
    sqs: Any, make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    await send_bodies(sqs, url, [f'{{"n": {i}}}' for i in range(6)])
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold(content: Any, metadata: Any) -> bool:
        holding.set()
        await release.wait()
        return True

    route = SQSRoute(
        url,
        {"options": {"WaitTimeSeconds": 1, "MaxNumberOfMessages": 1}, **client_options},
        handler=hold,
        name="held",
        max_concurrency=1,
    )
    provider = route.provider
    assert isinstance(provider, SQSProvider)
    assert await provider.backlog() is None  # not started
    manager = Manager([route])
    metrics = PrometheusMetrics(port=0, host="127.0.0.1").install(manager)
    async with manager:
        await manager.wait_started()
        await asyncio.wait_for(holding.wait(), 30)
        visible, _ = await queue_counts(sqs, url)
        await metrics.read_backlogs()
        held = await scrape(metrics.port)  # type: ignore[arg-type]
        release.set()
    labels = {"route": "held", "provider": "sqs"}
    assert visible >= 1
    assert sample(held, "loafer_queue_backlog", **labels) == visible
    assert await provider.backlog() is None  # closed
