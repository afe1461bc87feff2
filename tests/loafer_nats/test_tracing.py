"""OpenTelemetry tracing over a real JetStream: NATSPublisher's producer spans and the
trace context in the NATS message headers, continued by a NATS route's consumer span
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
from loafer_core.ext.otel import Tracing, tracing
from loafer_nats import NATSPublisher, NATSRoute, PublishRejected

from .conftest import NatsAdmin, unique

pytestmark = pytest.mark.nats


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

    async def run(self, route: NATSRoute, tr: Tracing) -> None:
        async with Manager([route], middleware=[tr]):
            async with asyncio.timeout(30):
                await self.done.wait()


def of_kind(spans: Any, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is kind]


async def test_a_publish_and_its_delivery_are_one_trace(
    admin: NatsAdmin, tr: Tracing, exporter: InMemorySpanExporter
) -> None:
    stream = await admin.stream()
    async with NATSPublisher(f"{stream}.in", url=admin.url) as publisher:
        with tr.scope():
            await publisher.publish({"id": 1}, headers={"tenant": "acme"}, msg_id="m-1")
    [stored] = await admin.stored(stream)
    assert stored.headers["traceparent"].startswith("00-")  # W3C, in the NATS headers
    assert stored.headers["tenant"] == "acme"
    handler = Collect()
    await handler.run(NATSRoute(stream, url=admin.url, consumer="work", handler=handler), tr)

    [(content, metadata)] = handler.got
    assert content == {"id": 1}
    assert metadata["headers"]["traceparent"] == stored.headers["traceparent"]
    spans = exporter.get_finished_spans()
    [producer] = of_kind(spans, SpanKind.PRODUCER)
    [consumer] = of_kind(spans, SpanKind.CONSUMER)
    assert producer.name == f"publish {stream}.in"
    assert dict(producer.attributes or {}) == {
        "messaging.system": "nats",
        "messaging.destination.name": f"{stream}.in",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.message.id": "m-1",
    }
    assert consumer.name == f"process {stream}"
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert dict(consumer.attributes or {}) == {
        "messaging.system": "nats",
        "messaging.destination.name": stream,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": "m-1",
        "loafer.route": f"nats:{stream}/work",
        "loafer.attempt": 1,
        "loafer.outcome": "accept",
    }
    assert producer.status.status_code is consumer.status.status_code is StatusCode.UNSET


async def test_a_handler_exception_is_recorded_on_the_consumer_span(
    admin: NatsAdmin, tr: Tracing, exporter: InMemorySpanExporter
) -> None:
    stream = await admin.stream()
    async with NATSPublisher(f"{stream}.in", url=admin.url) as publisher:
        with tr.scope():
            await publisher.publish({"id": 2})
    handler = Collect(error=ValueError("no such order"))
    route = NATSRoute(stream, url=admin.url, consumer="work", handler=handler, max_attempts=1)
    await handler.run(route, tr)

    spans = exporter.get_finished_spans()
    [producer] = of_kind(spans, SpanKind.PRODUCER)
    first = [s for s in of_kind(spans, SpanKind.CONSUMER) if s.attributes["loafer.attempt"] == 1]  # type: ignore[index]
    [consumer] = first
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert consumer.status.status_code is StatusCode.ERROR
    assert consumer.status.description == "ValueError: no such order"
    assert consumer.attributes["error.type"] == "ValueError"  # type: ignore[index]
    [event] = consumer.events
    assert event.name == "exception"
    assert event.attributes["exception.message"] == "no such order"  # type: ignore[index]


async def test_a_batch_is_one_producer_span_whose_context_every_message_carries(
    admin: NatsAdmin, tr: Tracing, exporter: InMemorySpanExporter
) -> None:
    stream = await admin.stream()
    async with NATSPublisher(f"{stream}.in", url=admin.url, pipeline=2) as publisher:
        with tr.scope():
            assert await publisher.publish_many([{"i": i} for i in range(5)]) == 5
            assert await publisher.publish_many({"i": i} for i in range(5, 7)) == 2
    handler = Collect(expected=7)
    await handler.run(NATSRoute(stream, url=admin.url, consumer="work", handler=handler), tr)

    spans = exporter.get_finished_spans()
    producers = of_kind(spans, SpanKind.PRODUCER)
    assert [p.name for p in producers] == [f"publish {stream}.in"] * 2
    counted, streamed = producers
    assert counted.attributes["messaging.batch.message_count"] == 5  # type: ignore[index]
    assert "messaging.batch.message_count" not in (streamed.attributes or {})  # not known
    parents = [s.parent.span_id for s in of_kind(spans, SpanKind.CONSUMER) if s.parent]
    assert sorted(parents) == sorted([counted.context.span_id] * 5 + [streamed.context.span_id] * 2)


async def test_a_refused_publish_is_an_error_on_its_producer_span(
    admin: NatsAdmin, tr: Tracing, exporter: InMemorySpanExporter
) -> None:
    subject = f"nowhere.{unique()}"
    async with NATSPublisher(subject, url=admin.url, timeout=5) as publisher:
        with tr.scope():
            with pytest.raises(PublishRejected):
                await publisher.publish(b"{}")
            with pytest.raises(PublishRejected):
                await publisher.publish_many([b"{}", b"{}"])
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [f"publish {subject}"] * 2
    for span in spans:
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "PublishRejected"  # type: ignore[index]
        assert [e.name for e in span.events] == ["exception"]


async def test_without_a_trace_nothing_is_added_to_the_headers(admin: NatsAdmin) -> None:
    stream = await admin.stream(consumer=None)
    async with NATSPublisher(f"{stream}.in", url=admin.url) as publisher:
        await publisher.publish(b"plain")  # no SDK set up globally, no current span
        await publisher.publish_many([b"many"])
    assert [m.headers for m in await admin.stored(stream)] == [None, None]
