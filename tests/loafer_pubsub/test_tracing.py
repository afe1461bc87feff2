"""OpenTelemetry tracing over the Pub/Sub emulator: PubSubPublisher's producer spans and
the trace context in the message attributes, continued by a Pub/Sub route's consumer
span (the SDK's in-memory exporter records the spans)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from loafer_core import Manager
from loafer_core.errors import PublishRefused
from loafer_core.ext.otel import Tracing, tracing
from loafer_pubsub import PubSubPublisher, PubSubRoute

from .conftest import PROJECT, PubSubAdmin, attributes, unique

pytestmark = pytest.mark.pubsub


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

    async def run(self, route: PubSubRoute, tr: Tracing) -> None:
        async with Manager([route], middleware=[tr]):
            async with asyncio.timeout(30):
                await self.done.wait()


def of_kind(spans: Any, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is kind]


def route(queue: str, host: str, handler: Any, **options: Any) -> PubSubRoute:
    return PubSubRoute(
        queue, project=PROJECT, emulator_host=host, handler=handler, poll_timeout=1, **options
    )


async def test_a_publish_and_its_delivery_are_one_trace(
    admin: PubSubAdmin, pubsub_emulator: str, tr: Tracing, exporter: InMemorySpanExporter
) -> None:
    queue = await admin.queue()
    peek = await admin.subscription(queue)  # a second subscription, to read what was stored
    async with PubSubPublisher(queue, project=PROJECT, emulator_host=pubsub_emulator) as pub:
        with tr.scope():
            await pub.publish({"id": 1}, headers={"tenant": "acme"})
    [stored] = await admin.pull(peek)
    sent = attributes(stored)
    assert sent["traceparent"].startswith("00-")  # W3C, in the message's attributes
    assert sent["tenant"] == "acme"
    handler = Collect()
    await handler.run(route(queue, pubsub_emulator, handler), tr)

    [(content, metadata)] = handler.got
    assert content == {"id": 1}
    assert metadata["headers"]["traceparent"] == sent["traceparent"]
    spans = exporter.get_finished_spans()
    [producer] = of_kind(spans, SpanKind.PRODUCER)
    [consumer] = of_kind(spans, SpanKind.CONSUMER)
    assert producer.name == f"publish {queue}"
    assert dict(producer.attributes or {}) == {
        "messaging.system": "gcp_pubsub",
        "messaging.destination.name": queue,
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
    }
    assert consumer.name == f"process {queue}"
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    attrs = dict(consumer.attributes or {})
    assert attrs["messaging.system"] == "gcp_pubsub"
    assert attrs["messaging.destination.name"] == queue
    assert attrs["loafer.route"] == f"pubsub:{PROJECT}/{queue}"
    assert attrs["loafer.attempt"] == 1
    assert attrs["loafer.outcome"] == "accept"
    assert producer.status.status_code is consumer.status.status_code is StatusCode.UNSET


async def test_a_batch_is_one_producer_span_whose_context_every_message_carries(
    admin: PubSubAdmin, pubsub_emulator: str, tr: Tracing, exporter: InMemorySpanExporter
) -> None:
    queue = await admin.queue()
    async with PubSubPublisher(
        queue, project=PROJECT, emulator_host=pubsub_emulator, max_batch=2
    ) as pub:
        with tr.scope():
            assert await pub.publish_many([{"i": i} for i in range(5)]) == 5
            assert await pub.publish_many(({"i": i} for i in range(5, 7)), ordering_key="k") == 2
    handler = Collect(expected=7)
    await handler.run(route(queue, pubsub_emulator, handler), tr)

    spans = exporter.get_finished_spans()
    producers = of_kind(spans, SpanKind.PRODUCER)
    assert [p.name for p in producers] == [f"publish {queue}"] * 2
    counted, streamed = producers
    assert counted.attributes["messaging.batch.message_count"] == 5  # type: ignore[index]
    assert "messaging.batch.message_count" not in (streamed.attributes or {})
    parents = [s.parent.span_id for s in of_kind(spans, SpanKind.CONSUMER) if s.parent]
    assert sorted(parents) == sorted([counted.context.span_id] * 5 + [streamed.context.span_id] * 2)


async def test_a_refused_publish_is_an_error_on_its_producer_span(
    pubsub_emulator: str, tr: Tracing, exporter: InMemorySpanExporter
) -> None:
    topic = unique("nowhere")
    async with PubSubPublisher(topic, project=PROJECT, emulator_host=pubsub_emulator) as pub:
        with tr.scope():
            with pytest.raises(PublishRefused):
                await pub.publish(b"{}")
            with pytest.raises(PublishRefused):
                await pub.publish_many([b"{}", b"{}"])
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [f"publish {topic}"] * 2
    for span in spans:
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "PublishRefused"  # type: ignore[index]


async def test_without_a_trace_nothing_is_added_to_the_attributes(
    admin: PubSubAdmin, pubsub_emulator: str
) -> None:
    queue = await admin.queue(dead_letters=False)
    async with PubSubPublisher(queue, project=PROJECT, emulator_host=pubsub_emulator) as pub:
        await pub.publish(b"plain")  # no SDK set up globally, no current span
        await pub.publish_many([b"many"])
    assert [attributes(m) for m in await admin.pull(queue)] == [{}, {}]
