"""Prometheus metrics of AMQP 1.0 routes, scraped over HTTP after real messages.

RabbitMQ's AMQP 1.0 plugin tells no queue depth cheaply, so AMQPProvider has no
backlog (no ``loafer_queue_backlog`` series)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from loafer_amqp import AMQPRoute
from loafer_core import REJECT, RETRY, Manager, Outcome, RejectMessage, TranslationError
from loafer_core.metrics import serve_metrics
from tests.loafer_amqp.conftest import Broker
from tests.scrape import Settled, scrape, value

pytestmark = pytest.mark.amqp


async def test_counts_outcomes_errors_and_durations(
    broker: Broker, queue: str, amqp_url: str
) -> None:
    bodies = [b'{"kind": "ok"}'] * 3 + [b'{"kind": "boom"}', b'{"kind": "reject"}', b"not json"]
    await broker.put_many(queue, bodies)
    failed_once: set[str] = set()

    async def handler(content: Any, metadata: Any) -> bool:
        if content["kind"] == "boom" and "boom" not in failed_once:
            failed_once.add("boom")
            raise ValueError("first time")
        if content["kind"] == "reject":
            raise RejectMessage("poison")
        return True

    async def on_error(kind: type[BaseException], exc: BaseException, raw: Any) -> Outcome:
        return REJECT("unreadable") if isinstance(exc, TranslationError) else RETRY()

    # 3 ok, boom twice (a retry, then accepted), reject, "not json" rejected
    settled = Settled(7)
    route = AMQPRoute(
        f"/amq/queue/{queue}",
        url=amqp_url,
        handler=handler,
        error_handler=on_error,
        retry=None,
        middleware=[settled],
    )
    manager = Manager([route])
    metrics = serve_metrics(manager, 0, host="127.0.0.1")
    async with manager:
        await manager.wait_started()
        await asyncio.wait_for(settled.done.wait(), 30)
        samples = await scrape(metrics.port)  # type: ignore[arg-type]
    labels = {"route": route.name, "provider": "amqp"}
    settled_total = "loafer_messages_settled_total"
    assert value(samples, "loafer_messages_received_total", **labels) == 7
    assert value(samples, settled_total, **labels, outcome="accept") == 4
    assert value(samples, settled_total, **labels, outcome="retry") == 1
    assert value(samples, settled_total, **labels, outcome="reject") == 2
    assert value(samples, "loafer_handler_errors_total", **labels, exception="ValueError") == 1
    assert value(samples, "loafer_translation_errors_total", **labels) == 1
    assert value(samples, "loafer_handler_duration_seconds_count", **labels) == 7
    assert value(samples, "loafer_fetch_errors_total", **labels) == 0
    assert value(samples, "loafer_queue_backlog", **labels) is None
