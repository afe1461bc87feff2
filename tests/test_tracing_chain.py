"""One trace across three real brokers: published to SQS, a route forwards it to
RabbitMQ, a route forwards it to AMQP 1.0, a route consumes it; and SNS to SQS, in an
envelope and raw. The spans are read from the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from loafer_amqp import AMQPPublisher, AMQPRoute
from loafer_core import Manager
from loafer_core.ext.otel import tracing
from loafer_core.forward import Publish
from loafer_nats import NATSPublisher, NATSRoute
from loafer_rabbit import RabbitPublisher, RabbitRoute
from loafer_redis import RedisPublisher, RedisRoute
from loafer_sqs import SNSPublisher, SNSQueueRoute, SQSPublisher, SQSRoute
from tests.loafer_nats.conftest import NatsAdmin
from tests.loafer_redis.conftest import RedisAdmin

pytestmark = [pytest.mark.rabbit, pytest.mark.amqp, pytest.mark.sqs]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider


@pytest.fixture
async def sqs_client(client_options: dict[str, Any]) -> AsyncIterator[Any]:
    from aiobotocore.session import get_session

    async with get_session().create_client("sqs", **client_options) as client:
        yield client


@pytest.fixture
async def sns_client(client_options: dict[str, Any]) -> AsyncIterator[Any]:
    from aiobotocore.session import get_session

    async with get_session().create_client("sns", **client_options) as client:
        yield client


@contextlib.asynccontextmanager
async def rabbit_queues(url: str, *names: str) -> AsyncIterator[None]:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        for name in names:
            await channel.declare_queue(name, durable=True)
        yield
    finally:
        with contextlib.suppress(Exception):
            channel = await connection.channel()
            for name in names:
                await channel.queue_delete(name)
        await connection.close()


def chain_of(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """The spans ordered root first, each the parent of the next (asserting it is a
    chain: one root, one child each)."""
    by_parent = {s.parent.span_id if s.parent else None: s for s in spans}
    assert len(by_parent) == len(spans), "two spans share a parent: not a chain"
    chain = [by_parent[None]]
    while chain[-1].context.span_id in by_parent:
        chain.append(by_parent[chain[-1].context.span_id])
    assert len(chain) == len(spans), "the spans are not one chain"
    return chain


async def test_one_trace_from_sqs_through_rabbitmq_to_amqp(
    rabbit_url: str,
    amqp_url: str,
    client_options: dict[str, Any],
    sqs_client: Any,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    suffix = uuid.uuid4().hex[:12]
    sqs_queue, rabbit_queue, amqp_queue = (f"loafer-trace-{b}-{suffix}" for b in "sra")
    address = f"/amq/queue/{amqp_queue}"
    tr = tracing(tracer_provider=provider)
    url = (await sqs_client.create_queue(QueueName=sqs_queue))["QueueUrl"]
    done = asyncio.Event()
    seen: list[Any] = []
    async with (
        rabbit_queues(rabbit_url, rabbit_queue),
        rabbit_queues(f"amqp://{urlsplit(amqp_url).netloc}/", amqp_queue),
        SQSPublisher(sqs_queue, **client_options) as to_sqs,
    ):
        try:
            # the forwarding routes publish through publish_to (opened by the manager)
            to_rabbit = RabbitPublisher(rabbit_url, routing_key=rabbit_queue)
            to_amqp = AMQPPublisher(amqp_url, address)

            async def from_sqs(content: Any, metadata: Any) -> Publish:
                return Publish({**content, "hops": [*content["hops"], "rabbit"]})

            async def from_rabbit(content: Any, metadata: Any) -> Publish:
                return Publish({**content, "hops": [*content["hops"], "amqp"]})

            async def from_amqp(content: Any, metadata: Any) -> bool:
                seen.append(content)
                done.set()
                return True

            routes = [
                SQSRoute(
                    sqs_queue,
                    {"options": {"WaitTimeSeconds": 1}, **client_options},
                    handler=from_sqs,
                    publish_to=to_rabbit,
                ),
                RabbitRoute(rabbit_queue, url=rabbit_url, handler=from_rabbit, publish_to=to_amqp),
                AMQPRoute(address, url=amqp_url, handler=from_amqp),
            ]
            with tr.scope():  # the first publish: from outside any handler
                await to_sqs.publish({"hops": ["sqs"]})
            async with Manager(routes, middleware=[tr]):
                async with asyncio.timeout(60):
                    await done.wait()
        finally:
            await sqs_client.delete_queue(QueueUrl=url)

    assert seen == [{"hops": ["sqs", "rabbit", "amqp"]}]
    spans = list(exporter.get_finished_spans())
    assert len({s.context.trace_id for s in spans}) == 1, "one trace"
    chain = chain_of(spans)
    assert [(s.name, s.kind) for s in chain] == [
        (f"publish {sqs_queue}", SpanKind.PRODUCER),
        (f"process {sqs_queue}", SpanKind.CONSUMER),
        (f"publish {rabbit_queue}", SpanKind.PRODUCER),
        (f"process {rabbit_queue}", SpanKind.CONSUMER),
        (f"publish {address}", SpanKind.PRODUCER),
        (f"process {address}", SpanKind.CONSUMER),
    ]
    systems = [s.attributes["messaging.system"] for s in chain]  # type: ignore[index]
    assert systems == ["aws_sqs", "aws_sqs", "rabbitmq", "rabbitmq", "amqp", "amqp"]
    for span in chain:
        attributes = dict(span.attributes or {})
        assert span.status.status_code is StatusCode.UNSET
        if span.kind is SpanKind.CONSUMER:
            assert attributes["messaging.operation.type"] == "process"
            assert attributes["loafer.outcome"] == "accept"
        else:
            assert attributes["messaging.operation.type"] == "send"
    assert chain[1].attributes["loafer.attempt"] == 1  # type: ignore[index]
    assert chain[1].attributes["messaging.message.id"]  # type: ignore[index] # SQS's id
    assert chain[3].attributes["messaging.rabbitmq.destination.routing_key"] == rabbit_queue  # type: ignore[index]
    assert chain[2].attributes["messaging.rabbitmq.destination.routing_key"] == rabbit_queue  # type: ignore[index]
    # in order in time too: each consumer span starts after its message's producer span
    # (not necessarily after its end: the broker may deliver before it confirms), each
    # consumer span outlives the publish its handler made
    for producer, consumer in zip(chain[0::2], chain[1::2], strict=True):
        assert producer.start_time <= consumer.start_time  # type: ignore[operator]
    for consumer, producer in zip(chain[1::2], chain[2::2], strict=False):
        assert consumer.start_time <= producer.start_time  # type: ignore[operator]
        assert producer.end_time <= consumer.end_time  # type: ignore[operator]


async def test_a_message_published_to_sns_continues_its_trace_on_sqs_enveloped_or_raw(
    client_options: dict[str, Any],
    sqs_client: Any,
    sns_client: Any,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    suffix = uuid.uuid4().hex[:12]
    queues = {
        kind: (await sqs_client.create_queue(QueueName=f"loafer-trace-sns-{kind}-{suffix}"))[
            "QueueUrl"
        ]
        for kind in ("envelope", "raw")
    }
    topic_arn = (await sns_client.create_topic(Name=f"loafer-trace-{suffix}"))["TopicArn"]
    tr = tracing(tracer_provider=provider)
    got: dict[str, Any] = {}
    done = asyncio.Event()
    try:
        for kind, url in queues.items():
            arn = (
                await sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            )["Attributes"]["QueueArn"]
            await sns_client.subscribe(
                TopicArn=topic_arn,
                Protocol="sqs",
                Endpoint=arn,
                Attributes={"RawMessageDelivery": "true" if kind == "raw" else "false"},
            )

        def handler(kind: str) -> Any:
            async def handle(content: Any, metadata: Any) -> bool:
                got[kind] = (content, metadata)
                if len(got) == 2:
                    done.set()
                return True

            return handle

        routes = [
            SNSQueueRoute(
                url,
                {"options": {"WaitTimeSeconds": 1}, **client_options},
                handler=handler(kind),
                name=kind,
            )
            for kind, url in queues.items()
        ]
        async with SNSPublisher(topic_arn, **client_options) as publisher:
            with tr.scope():
                await publisher.publish({"order": 7}, headers={"tenant": "acme"})
        async with Manager(routes, middleware=[tr]):
            async with asyncio.timeout(30):
                await done.wait()
    finally:
        await sns_client.delete_topic(TopicArn=topic_arn)
        for url in queues.values():
            await sqs_client.delete_queue(QueueUrl=url)

    assert got["envelope"][0] == got["raw"][0] == {"order": 7}
    assert got["envelope"][1]["headers"]["tenant"] == "acme"  # the envelope's, as headers
    spans = list(exporter.get_finished_spans())
    [producer] = [s for s in spans if s.kind is SpanKind.PRODUCER]
    assert producer.name == f"publish {topic_arn.rsplit(':', 1)[-1]}"
    assert producer.attributes["messaging.system"] == "aws_sns"  # type: ignore[index]
    consumers = {s.attributes["loafer.route"]: s for s in spans if s.kind is SpanKind.CONSUMER}  # type: ignore[index]
    assert set(consumers) == {"envelope", "raw"}
    for span in consumers.values():
        assert span.context.trace_id == producer.context.trace_id
        assert span.parent is not None and span.parent.span_id == producer.context.span_id


async def test_a_batch_is_one_producer_span_whose_context_every_message_carries(
    rabbit_url: str,
    amqp_url: str,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    suffix = uuid.uuid4().hex[:12]
    rabbit_queue, amqp_queue = (f"loafer-trace-batch-{b}-{suffix}" for b in "ra")
    address = f"/amq/queue/{amqp_queue}"
    tr = tracing(tracer_provider=provider)
    handled: list[str] = []
    done = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        handled.append(content["to"])
        if len(handled) == 6:
            done.set()
        return True

    async with (
        rabbit_queues(rabbit_url, rabbit_queue),
        rabbit_queues(f"amqp://{urlsplit(amqp_url).netloc}/", amqp_queue),
        RabbitPublisher(rabbit_url, routing_key=rabbit_queue) as to_rabbit,
        AMQPPublisher(amqp_url, address) as to_amqp,
    ):
        with tr.scope():
            assert await to_rabbit.publish_many([{"to": "rabbit"}] * 3) == 3
            await to_amqp.publish_many([{"to": "amqp"}] * 3)
            with pytest.raises(Exception, match="no queue is bound") as refused:
                await to_rabbit.publish(b"x", routing_key=f"loafer-nowhere-{suffix}")
        routes = [
            RabbitRoute(rabbit_queue, url=rabbit_url, handler=handler),
            AMQPRoute(address, url=amqp_url, handler=handler),
        ]
        async with Manager(routes, middleware=[tr]):
            async with asyncio.timeout(30):
                await done.wait()

    spans = list(exporter.get_finished_spans())
    producers = {s.name: s for s in spans if s.kind is SpanKind.PRODUCER}
    assert set(producers) == {
        f"publish {rabbit_queue}",
        f"publish {address}",
        f"publish loafer-nowhere-{suffix}",
    }
    assert producers[f"publish {address}"].attributes["messaging.batch.message_count"] == 3  # type: ignore[index]
    for name in (rabbit_queue, address):
        batch = producers[f"publish {name}"]
        consumers = [s for s in spans if s.name == f"process {name}"]
        assert len(consumers) == 3
        for consumer in consumers:
            assert consumer.parent is not None
            assert consumer.parent.span_id == batch.context.span_id
    failed = producers[f"publish loafer-nowhere-{suffix}"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == type(refused.value).__qualname__  # type: ignore[index]
    assert [e.name for e in failed.events] == ["exception"]


async def test_an_sqs_message_with_ten_attributes_is_sent_untraced_rather_than_refused(
    client_options: dict[str, Any],
    sqs_client: Any,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    url = (await sqs_client.create_queue(QueueName=f"loafer-trace-ten-{uuid.uuid4().hex[:12]}"))[
        "QueueUrl"
    ]
    tr = tracing(tracer_provider=provider)
    try:
        async with SQSPublisher(url, **client_options) as publisher:
            with tr.scope():
                await publisher.publish("full", headers={f"h{i}": "x" for i in range(10)})
                await publisher.publish("room", headers={f"h{i}": "x" for i in range(9)})
        messages: dict[str, Any] = {}
        async with asyncio.timeout(20):
            while len(messages) < 2:  # SQS may answer with part of the queue
                received = await sqs_client.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=10,
                    MessageAttributeNames=["All"],
                    WaitTimeSeconds=1,
                )
                for message in received.get("Messages", []):
                    messages[message["Body"]] = message.get("MessageAttributes", {})
    finally:
        await sqs_client.delete_queue(QueueUrl=url)
    assert len(messages["full"]) == 10 and "traceparent" not in messages["full"]
    assert len(messages["room"]) == 10 and "traceparent" in messages["room"]
    assert len(exporter.get_finished_spans()) == 2  # both publishes traced all the same


@pytest.mark.nats
async def test_one_trace_from_rabbitmq_forwarded_to_nats(
    rabbit_url: str,
    nats_url: str,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """A RabbitMQ route forwards (``publish_to=``) to JetStream; a NATS route consumes:
    the NATS producer span is a child of the RabbitMQ consumer span, the NATS consumer
    span a child of the NATS producer span."""
    suffix = uuid.uuid4().hex[:12]
    rabbit_queue, stream = f"loafer-trace-rn-{suffix}", f"loafer-trace-n-{suffix}"
    tr = tracing(tracer_provider=provider)
    admin = NatsAdmin(nats_url)
    await admin.open()
    seen: list[Any] = []
    done = asyncio.Event()

    async def from_nats(content: Any, metadata: Any) -> bool:
        seen.append(content)
        done.set()
        return True

    try:
        await admin.stream(stream, consumer="work")
        async with (
            rabbit_queues(rabbit_url, rabbit_queue),
            RabbitPublisher(rabbit_url, routing_key=rabbit_queue) as to_rabbit,
        ):
            routes = [
                RabbitRoute(
                    rabbit_queue,
                    url=rabbit_url,
                    handler=lambda content, metadata: Publish({**content, "hops": 2}),
                    publish_to=NATSPublisher(f"{stream}.in", url=nats_url),
                ),
                NATSRoute(stream, url=nats_url, consumer="work", handler=from_nats),
            ]
            with tr.scope():
                await to_rabbit.publish({"hops": 1})
            async with Manager(routes, middleware=[tr]):
                async with asyncio.timeout(30):
                    await done.wait()
    finally:
        await admin.cleanup()

    assert seen == [{"hops": 2}]
    spans = list(exporter.get_finished_spans())
    assert len({s.context.trace_id for s in spans}) == 1, "one trace"
    chain = chain_of(spans)
    assert [(s.name, s.kind) for s in chain] == [
        (f"publish {rabbit_queue}", SpanKind.PRODUCER),
        (f"process {rabbit_queue}", SpanKind.CONSUMER),
        (f"publish {stream}.in", SpanKind.PRODUCER),
        (f"process {stream}", SpanKind.CONSUMER),
    ]
    systems = [s.attributes["messaging.system"] for s in chain]  # type: ignore[index]
    assert systems == ["rabbitmq", "rabbitmq", "nats", "nats"]
    assert chain[2].attributes["messaging.destination.name"] == f"{stream}.in"  # type: ignore[index]
    assert chain[3].attributes["messaging.destination.name"] == stream  # type: ignore[index]
    for span in chain:
        assert span.status.status_code is StatusCode.UNSET
    # the forward's publish ends (its ack) before the RabbitMQ delivery's span ends
    assert chain[2].end_time <= chain[1].end_time  # type: ignore[operator]


@pytest.mark.nats
@pytest.mark.redis
async def test_one_trace_from_nats_forwarded_to_redis(
    nats_url: str,
    redis_url: str,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
) -> None:
    """A NATS route forwards (``publish_to=``) to a Redis stream; a Redis route consumes:
    the Redis producer span is a child of the NATS consumer span, the Redis consumer span
    a child of the Redis producer span (the context travels in the entry's fields)."""
    suffix = uuid.uuid4().hex[:12]
    nats_stream, redis_stream = f"loafer-trace-nr-{suffix}", f"loafer-trace-r-{suffix}"
    tr = tracing(tracer_provider=provider)
    nats = NatsAdmin(nats_url)
    await nats.open()
    redis_admin = RedisAdmin(redis_url)
    seen: list[Any] = []
    done = asyncio.Event()

    async def from_redis(content: Any, metadata: Any) -> bool:
        seen.append(content)
        done.set()
        return True

    try:
        await nats.stream(nats_stream, consumer="work")
        await redis_admin.stream(name=redis_stream)
        async with NATSPublisher(f"{nats_stream}.in", url=nats_url) as to_nats:
            routes = [
                NATSRoute(
                    nats_stream,
                    url=nats_url,
                    consumer="work",
                    handler=lambda content, metadata: Publish({**content, "hops": 2}),
                    publish_to=RedisPublisher(redis_stream, url=redis_url),
                ),
                RedisRoute(redis_stream, url=redis_url, handler=from_redis),
            ]
            with tr.scope():
                await to_nats.publish({"hops": 1})
            async with Manager(routes, middleware=[tr]):
                async with asyncio.timeout(30):
                    await done.wait()
    finally:
        try:
            await nats.cleanup()
        finally:
            await redis_admin.cleanup()

    assert seen == [{"hops": 2}]
    spans = list(exporter.get_finished_spans())
    assert len({s.context.trace_id for s in spans}) == 1, "one trace"
    chain = chain_of(spans)
    assert [(s.name, s.kind) for s in chain] == [
        (f"publish {nats_stream}.in", SpanKind.PRODUCER),
        (f"process {nats_stream}", SpanKind.CONSUMER),
        (f"publish {redis_stream}", SpanKind.PRODUCER),
        (f"process {redis_stream}", SpanKind.CONSUMER),
    ]
    systems = [s.attributes["messaging.system"] for s in chain]  # type: ignore[index]
    assert systems == ["nats", "nats", "redis", "redis"]
    # the producer span names the entry Redis added, which the consumer span names too
    entry_id = chain[2].attributes["messaging.message.id"]  # type: ignore[index]
    assert chain[3].attributes["messaging.message.id"] == entry_id  # type: ignore[index]
    for span in chain:
        assert span.status.status_code is StatusCode.UNSET
    # the forward's XADD ends before the NATS delivery's span ends
    assert chain[2].end_time <= chain[1].end_time  # type: ignore[operator]
