"""OpenTelemetry tracing over Kafka: KafkaPublisher's producer spans and the trace
context in the record headers, continued by a Kafka route's consumer span (the SDK's
in-memory exporter records the spans)."""

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
from loafer_kafka import KafkaPublisher, KafkaRoute

from .conftest import KafkaAdmin

pytestmark = pytest.mark.kafka


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tr(exporter: InMemorySpanExporter) -> Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracing(tracer_provider=provider)


def of_kind(spans: Any, kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is kind]


async def test_a_publish_and_its_delivery_are_one_trace(
    admin: KafkaAdmin, kafka_url: str, tr: Tracing, exporter: InMemorySpanExporter
) -> None:
    topic = await admin.topic(partitions=1)
    async with KafkaPublisher(topic, url=kafka_url, idempotent=False) as pub:
        with tr.scope():
            await pub.publish({"id": 1}, headers={"tenant": "acme"})
    [stored] = await admin.read(topic)
    sent = {k: v.decode() for k, v in stored.headers}
    assert sent["traceparent"].startswith("00-")  # W3C, in the record's headers
    assert sent["tenant"] == "acme"
    got: list[Any] = []
    done = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        got.append((content, metadata))
        done.set()
        return True

    route = KafkaRoute(topic, url=kafka_url, dead_letter_topic=None, handler=handler)
    async with Manager([route], middleware=[tr]):
        async with asyncio.timeout(30):
            await done.wait()
    [(content, metadata)] = got
    assert content == {"id": 1}
    assert metadata["headers"]["traceparent"] == sent["traceparent"]
    spans = exporter.get_finished_spans()
    [producer] = of_kind(spans, SpanKind.PRODUCER)
    [consumer] = of_kind(spans, SpanKind.CONSUMER)
    assert producer.name == f"publish {topic}"
    assert dict(producer.attributes or {})["messaging.system"] == "kafka"
    assert consumer.name == f"process {topic}"
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    attrs = dict(consumer.attributes or {})
    assert attrs["messaging.system"] == "kafka"
    assert attrs["loafer.route"] == f"kafka:loafer-{topic}/{topic}"
    assert attrs["loafer.outcome"] == "accept"


async def test_a_refused_publish_is_an_error_on_its_producer_span(
    admin: KafkaAdmin, kafka_url: str, tr: Tracing, exporter: InMemorySpanExporter
) -> None:
    topic = await admin.topic(partitions=1)
    options = {"max_request_size": 1000}
    async with KafkaPublisher(
        topic, url=kafka_url, idempotent=False, connection_options=options
    ) as pub:
        with tr.scope(), pytest.raises(PublishRefused):
            await pub.publish(b"x" * 5000)
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "PublishRefused"  # type: ignore[index]


async def test_without_a_trace_nothing_is_added_to_the_headers(
    admin: KafkaAdmin, kafka_url: str
) -> None:
    topic = await admin.topic(partitions=1)
    async with KafkaPublisher(topic, url=kafka_url, idempotent=False) as pub:
        await pub.publish(b"plain")
        await pub.publish_many([b"many"])
    assert [list(r.headers) for r in await admin.read(topic)] == [[], []]
