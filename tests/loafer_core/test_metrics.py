"""Prometheus metrics (loafer_core.metrics) on the memory broker, scraped over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loafer_core import (
    ConfigurationError,
    JSONTranslator,
    Manager,
    ProviderError,
    RejectMessage,
    Route,
)
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.metrics import (
    PrometheusMetrics,
    provider_kind,
    serve_metrics,
    serve_multiprocess,
)
from tests.scrape import scrape, scrape_now, value

pytestmark = pytest.mark.memory


async def handle(content: Any, metadata: Any) -> bool:
    kind = content["kind"]
    if kind == "boom" and metadata["attempt"] == 1:
        raise ValueError("first attempt fails")
    if kind == "reject":
        raise RejectMessage("poison")
    return True


async def test_scraped_values_count_what_the_routes_did() -> None:
    broker = MemoryBroker()
    for kind in ("ok", "ok", "ok", "boom", "boom", "reject"):
        broker.publish("orders", json.dumps({"kind": kind}))
    broker.publish("orders", "not json")
    route = Route(
        MemoryProvider(broker, "orders", wait=0.1),
        handle,
        name="orders",
        translator=JSONTranslator(),
        max_attempts=2,
        retry=None,
    )
    manager = Manager([route])
    metrics = serve_metrics(manager, 0, host="127.0.0.1")
    async with manager:
        await manager.wait_started()
        await broker.wait_idle("orders", timeout=10)
        samples = await scrape(metrics.port)  # type: ignore[arg-type]
    labels = {"route": "orders", "provider": "memory"}
    # 3 ok, 2 boom x 2 attempts, 1 reject, "not json" x 2 (its last attempt rejected)
    assert value(samples, "loafer_messages_received_total", **labels) == 10
    assert value(samples, "loafer_messages_settled_total", **labels, outcome="accept") == 5
    assert value(samples, "loafer_messages_settled_total", **labels, outcome="retry") == 3
    assert value(samples, "loafer_messages_settled_total", **labels, outcome="reject") == 2
    assert value(samples, "loafer_messages_settled_total", **labels, outcome="release") is None
    errors = "loafer_handler_errors_total"
    assert value(samples, errors, **labels, exception="ValueError") == 2
    assert value(samples, "loafer_translation_errors_total", **labels) == 2
    assert value(samples, "loafer_handler_duration_seconds_count", **labels) == 10
    assert value(samples, "loafer_handler_duration_seconds_bucket", **labels, le="+Inf") == 10
    assert value(samples, "loafer_messages_in_flight", **labels) == 0
    assert value(samples, "loafer_fetch_errors_total", **labels) == 0
    assert value(samples, "loafer_settle_failures_total", **labels) == 0
    assert value(samples, "loafer_queue_backlog", **labels) == 0


async def test_backlog_and_in_flight_while_a_handler_holds_a_message() -> None:
    broker = MemoryBroker()
    for i in range(1, 6):
        broker.publish("slow", i)
    holding = asyncio.Event()
    release = asyncio.Event()

    async def slow(content: Any, metadata: Any) -> bool:
        holding.set()
        await release.wait()
        return True

    route = Route(MemoryProvider(broker, "slow", wait=0.1), slow, name="slow", max_concurrency=1)
    manager = Manager([route])
    metrics = PrometheusMetrics(port=0, host="127.0.0.1").install(manager)
    async with manager:
        await manager.wait_started()
        await asyncio.wait_for(holding.wait(), 10)
        await metrics.read_backlogs()
        samples = await scrape(metrics.port)  # type: ignore[arg-type]
        release.set()
        await broker.wait_idle("slow", timeout=10)
        await metrics.read_backlogs()
        after = await scrape(metrics.port)  # type: ignore[arg-type]
    labels = {"route": "slow", "provider": "memory"}
    assert value(samples, "loafer_queue_backlog", **labels) == 4
    assert value(samples, "loafer_messages_in_flight", **labels) == 1
    assert value(samples, "loafer_messages_received_total", **labels) == 1
    assert value(after, "loafer_queue_backlog", **labels) == 0
    assert value(after, "loafer_messages_in_flight", **labels) == 0
    assert value(after, "loafer_messages_settled_total", **labels, outcome="accept") == 5


async def test_the_endpoint_stops_with_the_manager_and_a_taken_port_is_a_configuration_error() -> (
    None
):
    broker = MemoryBroker()
    broker.declare("q")
    manager = Manager([Route(MemoryProvider(broker, "q", wait=0.1), handle, name="a")])
    metrics = serve_metrics(manager, 0, host="127.0.0.1")
    async with manager:
        await manager.wait_started()
        port = metrics.port
        assert port
        assert await scrape(port)  # served
        clash = Manager([Route(MemoryProvider(broker, "q", wait=0.1), handle, name="b")])
        serve_metrics(clash, port, host="127.0.0.1")
        with pytest.raises(ConfigurationError, match="metrics port"):
            await clash.serve()
        other = Manager([Route(MemoryProvider(broker, "q", wait=0.1), handle, name="c")])
        serve_metrics(other, port, host="127.0.0.1")
        hung = False
        with pytest.raises(ConfigurationError, match="metrics port"):
            async with other:
                try:
                    await asyncio.wait_for(other.wait_started(), 10)  # raises it
                except TimeoutError:
                    hung = True
        assert not hung
    with pytest.raises(OSError):
        await scrape(port)


def test_metrics_are_in_their_own_registry_and_checked() -> None:
    a, b = PrometheusMetrics(), PrometheusMetrics()  # no duplicate-series clash
    assert a.registry is not b.registry
    with pytest.raises(ConfigurationError, match="port"):
        PrometheusMetrics(port=70000)
    with pytest.raises(ConfigurationError, match="backlog_interval"):
        PrometheusMetrics(backlog_interval=0)
    assert provider_kind(MemoryProvider(MemoryBroker(), "q")) == "memory"
    assert provider_kind(object()) == "object"


async def test_durations_land_in_their_buckets() -> None:
    broker = MemoryBroker()
    broker.publish_many("timed", [1, 2])
    done = asyncio.Event()
    handled = 0

    async def slow(content: Any, metadata: Any) -> bool:
        nonlocal handled
        await asyncio.sleep(0.03)  # the duration being measured, not a synchronisation
        handled += 1
        if handled == 2:
            done.set()
        return True

    route = Route(MemoryProvider(broker, "timed", wait=0.1), slow, name="timed")
    manager = Manager([route])
    metrics = serve_metrics(manager, 0, host="127.0.0.1")
    async with manager:
        await manager.wait_started()
        await asyncio.wait_for(done.wait(), 10)
        await broker.wait_idle("timed", timeout=10)
        samples = await scrape(metrics.port)  # type: ignore[arg-type]
    labels = {"route": "timed", "provider": "memory"}
    bucket = "loafer_handler_duration_seconds_bucket"
    assert value(samples, bucket, **labels, le="0.025") == 0
    assert value(samples, bucket, **labels, le="60.0") == 2
    assert value(samples, bucket, **labels, le="+Inf") == 2
    total = value(samples, "loafer_handler_duration_seconds_sum", **labels)
    assert total is not None and 0.06 <= total < 10


WORKER = """
from prometheus_client import CollectorRegistry, Counter, Gauge

registry = CollectorRegistry()
Counter("loafer_messages_received", "", ["route"], registry=registry).labels("r").inc(7)
Gauge(
    "loafer_messages_in_flight", "", ["route"], registry=registry, multiprocess_mode="livesum"
).labels("r").set(3)
"""


def test_several_processes_are_summed_and_ended_ones_leave_no_live_gauge(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):  # two workers, each counting 7 and holding 3 in flight, then ended
        subprocess.run([sys.executable, "-c", WORKER], env=env, check=True, timeout=60)
    assert len(list(tmp_path.glob("gauge_livesum_*.db"))) == 2
    server = serve_multiprocess(0, "127.0.0.1", str(tmp_path))
    try:
        samples = scrape_now(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
    assert value(samples, "loafer_messages_received_total", route="r") == 14  # summed, kept
    assert value(samples, "loafer_messages_in_flight", route="r") is None  # both ended
    assert not list(tmp_path.glob("gauge_livesum_*.db"))


class Flaky(MemoryProvider):
    """A memory queue whose first fetch fails and whose settlements of "bad" all fail."""

    def __init__(self, broker: MemoryBroker, queue: str) -> None:
        super().__init__(broker, queue, wait=0.1)
        self.fetches = 0
        self.bad_settles = 0
        self.gave_up = asyncio.Event()

    async def fetch(self, max_messages: int) -> Any:
        self.fetches += 1
        if self.fetches == 1:
            raise ProviderError("connection lost")
        return await super().fetch(max_messages)

    async def settle(self, delivery: Any, outcome: Any) -> None:
        if delivery.body == "bad":
            self.bad_settles += 1
            if self.bad_settles == 5:  # the dispatcher's last attempt (settle_attempts)
                self.gave_up.set()
            raise ProviderError("settle refused")
        await super().settle(delivery, outcome)


async def test_fetch_errors_and_settle_failures_come_from_the_status() -> None:
    broker = MemoryBroker()
    broker.publish_many("flaky", ["ok", "bad"])
    provider = Flaky(broker, "flaky")
    route = Route(provider, handle_text, name="flaky")
    manager = Manager([route])
    metrics = serve_metrics(manager, 0, host="127.0.0.1")
    async with manager:
        await manager.wait_started()
        await asyncio.wait_for(provider.gave_up.wait(), 30)
        samples = await scrape(metrics.port)  # type: ignore[arg-type]
    labels = {"route": "flaky", "provider": "flaky"}  # not an entry point: the class name
    assert value(samples, "loafer_fetch_errors_total", **labels) == 1
    assert value(samples, "loafer_settle_failures_total", **labels) == 1
    assert value(samples, "loafer_messages_received_total", **labels) == 2
    assert value(samples, "loafer_messages_settled_total", **labels, outcome="accept") == 2


async def handle_text(content: Any, metadata: Any) -> bool:
    return True


class Reconnecting(MemoryProvider):
    """A provider reporting reconnections (``loafer_core.provider.Reconnects``)."""

    reconnects = 0


async def test_reconnects_come_from_the_provider() -> None:
    broker = MemoryBroker()
    broker.declare("flaky")
    broker.declare("plain")
    provider = Reconnecting(broker, "flaky")
    route = Route(provider, handle_text, name="reconnecting")
    plain = Route(MemoryProvider(broker, "plain"), handle_text, name="plain")
    manager = Manager([route, plain])
    metrics = serve_metrics(manager, 0, host="127.0.0.1")
    labels = {"route": "reconnecting", "provider": "reconnecting"}
    async with manager:
        await manager.wait_started()
        samples = await scrape(metrics.port)  # type: ignore[arg-type]
        assert value(samples, "loafer_reconnects_total", **labels) == 0
        provider.reconnects = 2
        samples = await scrape(metrics.port)  # type: ignore[arg-type]
        assert value(samples, "loafer_reconnects_total", **labels) == 2
        provider.reconnects = 3
        samples = await scrape(metrics.port)  # type: ignore[arg-type]
    assert value(samples, "loafer_reconnects_total", **labels) == 3
    # a provider that does not count reconnections has no such series
    assert value(samples, "loafer_reconnects_total", route="plain", provider="memory") is None
