"""OpenTelemetry tracing over a real Redis: RedisPublisher's producer spans and the trace
context in the stream entry's header fields, continued by a Redis route's consumer span
(the SDK's in-memory exporter records the spans)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from loafer_core import Manager
from loafer_core.errors import ProviderError
from loafer_core.ext.otel import Tracing, tracing
from loafer_redis import RedisPublisher, RedisRoute

from .conftest import RedisAdmin

pytestmark = pytest.mark.redis


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tr(exporter: InMemorySpanExporter) -> Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracing(tracer_provider=provider)


class Collect:
    """A handler recording what it got; ``done`` once ``expected`` deliveries came."""

    def __init__(self, expected: int = 1, error: BaseException | None = None) -> None:
        self.expected = expected
        self.error = error
        self.got: list[tuple[Any, Any]] = []
        self.done = asyncio.Event()

    async def __call__(self, content: Any, metadata: Any) -> bool:
        self.got.append((content, metadata))
        if len(self.got) >= self.expected:
            self.done.set()
        if self.error is not None:
            raise self.error
        return True

    async def run(self, route: RedisRoute, tr: Tracing) -> None:
        async with Manager([route], middleware=[tr]):
            async with asyncio.timeout(30):
                await self.done.wait()


def of_kind(spans: Any, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is kind]


async def fields_of(admin: RedisAdmin, stream: str) -> list[dict[str, str]]:
    """Every entry's fields, decoded."""
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in await admin.client.xrange(stream)
    ]


async def test_a_publish_and_its_delivery_are_one_trace(
    admin: RedisAdmin, tr: Tracing, exporter: InMemorySpanExporter
) -> None:
    stream = await admin.stream()
    async with RedisPublisher(stream, url=admin.url) as publisher:
        with tr.scope():
            entry_id = await publisher.publish({"id": 1}, headers={"tenant": "acme"})
    [stored] = await fields_of(admin, stream)
    assert stored["traceparent"].startswith("00-")  # W3C, in a field of the entry
    assert stored["tenant"] == "acme" and stored["body"] == '{"id": 1}'
    handler = Collect()
    await handler.run(RedisRoute(stream, url=admin.url, handler=handler), tr)

    [(content, metadata)] = handler.got
    assert content == {"id": 1}
    assert metadata["headers"]["traceparent"] == stored["traceparent"]
    spans = exporter.get_finished_spans()
    [producer] = of_kind(spans, SpanKind.PRODUCER)
    [consumer] = of_kind(spans, SpanKind.CONSUMER)
    assert producer.name == f"publish {stream}"
    assert dict(producer.attributes or {}) == {
        "messaging.system": "redis",
        "messaging.destination.name": stream,
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.message.id": entry_id,  # the id Redis gave the entry
    }
    assert consumer.name == f"process {stream}"
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert dict(consumer.attributes or {}) == {
        "messaging.system": "redis",
        "messaging.destination.name": stream,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": entry_id,
        "loafer.route": f"redis:{stream}:loafer",
        "loafer.attempt": 1,
        "loafer.outcome": "accept",
    }
    assert producer.status.status_code is consumer.status.status_code is StatusCode.UNSET


async def test_a_handler_exception_is_recorded_on_the_consumer_span(
    admin: RedisAdmin, tr: Tracing, exporter: InMemorySpanExporter
) -> None:
    stream = await admin.stream()
    async with RedisPublisher(stream, url=admin.url) as publisher:
        with tr.scope():
            await publisher.publish({"id": 2})
    handler = Collect(error=ValueError("no such order"))
    route = RedisRoute(stream, url=admin.url, handler=handler, max_attempts=1)
    await handler.run(route, tr)

    spans = exporter.get_finished_spans()
    [producer] = of_kind(spans, SpanKind.PRODUCER)
    [consumer] = of_kind(spans, SpanKind.CONSUMER)
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumer.status.status_code is StatusCode.ERROR
    assert consumer.status.description == "ValueError: no such order"
    assert consumer.attributes["error.type"] == "ValueError"  # type: ignore[index]
    assert consumer.attributes["loafer.outcome"] == "reject"  # type: ignore[index]
    [event] = consumer.events
    assert event.name == "exception"
    assert event.attributes["exception.message"] == "no such order"  # type: ignore[index]


async def test_a_retried_entry_keeps_its_trace(
    admin: RedisAdmin, tr: Tracing, exporter: InMemorySpanExporter
) -> None:
    """A RETRY (delayed or not) delivers the same entry again: its second delivery's
    span is a child of the same producer span."""
    stream = await admin.stream()
    async with RedisPublisher(stream, url=admin.url) as publisher:
        with tr.scope():
            await publisher.publish({"id": 3})
    calls = 0
    done = asyncio.Event()

    async def flaky(content: Any, metadata: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("not yet")
        done.set()
        return True

    route = RedisRoute(stream, url=admin.url, handler=flaky, retry=None)
    async with Manager([route], middleware=[tr]):
        async with asyncio.timeout(30):
            await done.wait()
    spans = exporter.get_finished_spans()
    [producer] = of_kind(spans, SpanKind.PRODUCER)
    consumers = sorted(of_kind(spans, SpanKind.CONSUMER), key=lambda s: s.start_time or 0)
    assert [c.attributes["loafer.outcome"] for c in consumers] == ["retry", "accept"]  # type: ignore[index]
    for consumer in consumers:
        assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id


async def test_a_batch_is_one_producer_span_whose_context_every_entry_carries(
    admin: RedisAdmin, tr: Tracing, exporter: InMemorySpanExporter
) -> None:
    stream = await admin.stream()
    async with RedisPublisher(stream, url=admin.url, pipeline=2) as publisher:
        with tr.scope():
            assert await publisher.publish_many([{"i": i} for i in range(5)]) == 5
            assert await publisher.publish_many(b'{"i": %d}' % i for i in range(5, 7)) == 2
    handler = Collect(expected=7)
    await handler.run(RedisRoute(stream, url=admin.url, handler=handler), tr)

    spans = exporter.get_finished_spans()
    producers = of_kind(spans, SpanKind.PRODUCER)
    assert [p.name for p in producers] == [f"publish {stream}"] * 2
    counted, streamed = producers
    assert counted.attributes["messaging.batch.message_count"] == 5  # type: ignore[index]
    assert "messaging.batch.message_count" not in (streamed.attributes or {})  # not known
    parents = [s.parent.span_id for s in of_kind(spans, SpanKind.CONSUMER) if s.parent]
    assert sorted(parents) == sorted([counted.context.span_id] * 5 + [streamed.context.span_id] * 2)
    assert sorted(c["i"] for c, _ in handler.got) == list(range(7))


async def test_a_refused_add_is_an_error_on_its_producer_span(
    admin: RedisAdmin, tr: Tracing, exporter: InMemorySpanExporter
) -> None:
    stream = await admin.stream(group=None)
    await admin.client.set(stream, "not a stream")  # XADD answers WRONGTYPE
    async with RedisPublisher(stream, url=admin.url) as publisher:
        with tr.scope():
            with pytest.raises(ProviderError, match="WRONGTYPE"):
                await publisher.publish(b"{}")
            with pytest.raises(ProviderError, match="WRONGTYPE"):
                await publisher.publish_many([b"{}", b"{}"])
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [f"publish {stream}"] * 2
    for span in spans:
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "PublishRefused"  # type: ignore[index]
        assert "messaging.message.id" not in span.attributes  # type: ignore[operator]
        assert [e.name for e in span.events] == ["exception"]


async def test_without_a_trace_nothing_is_added_to_the_fields(admin: RedisAdmin) -> None:
    stream = await admin.stream(group=None)
    async with RedisPublisher(stream, url=admin.url) as publisher:
        await publisher.publish(b"plain")  # no SDK set up globally, no current span
        await publisher.publish_many([b"many"])
    assert await fields_of(admin, stream) == [{"body": "plain"}, {"body": "many"}]
