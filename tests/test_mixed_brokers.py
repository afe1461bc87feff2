"""One Manager, one route on each broker (memory, RabbitMQ, AMQP 1.0, SQS, NATS JetStream,
Redis Streams, Google Cloud Pub/Sub, Kafka), side by side."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest

from loafer_amqp import AMQPRoute
from loafer_core import JSONTranslator, Manager, Route
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.testing import eventually
from loafer_kafka import KafkaPublisher, KafkaRoute
from loafer_nats import NATSPublisher, NATSRoute
from loafer_pubsub import PubSubPublisher, PubSubRoute
from loafer_rabbit import RabbitRoute
from loafer_redis import RedisPublisher, RedisRoute
from loafer_sqs import SQSRoute

pytestmark = [
    pytest.mark.memory,
    pytest.mark.rabbit,
    pytest.mark.amqp,
    pytest.mark.sqs,
    pytest.mark.nats,
    pytest.mark.redis,
    pytest.mark.pubsub,
    pytest.mark.kafka,
]
BROKERS = ("memory", "rabbit", "amqp", "sqs", "nats", "redis", "pubsub", "kafka")

PER_BROKER = 5


def bodies(broker: str) -> list[bytes]:
    return [json.dumps({"broker": broker, "i": i}).encode() for i in range(PER_BROKER)]


async def _rabbit_queue(url: str, name: str, payloads: list[bytes]) -> None:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(name, durable=True)
        for body in payloads:
            await channel.default_exchange.publish(aio_pika.Message(body), routing_key=name)
    finally:
        await connection.close()


async def _rabbit_depth_and_delete(url: str, name: str) -> int:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        depth = queue.declaration_result.message_count
        await channel.queue_delete(name)
        return int(depth or 0)
    finally:
        await connection.close()


async def _nats_state(url: str, stream: str, consumer: str) -> tuple[int, int]:
    """(messages left in the stream, messages delivered and not acked), then delete it."""
    import nats

    client = await nats.connect(url, connect_timeout=5)
    try:
        js = client.jetstream(timeout=10)
        info = await js.consumer_info(stream, consumer)
        left = (await js.stream_info(stream)).state.messages
        await js.delete_stream(stream)
        return left, info.num_ack_pending
    finally:
        await client.close()


async def _redis_state(url: str, stream: str, group: str) -> int:
    """Entries pending in the group (delivered, not acked), then delete the stream's keys."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        pending = await client.xpending(stream, group)
        keys = [k async for k in client.scan_iter(match=f"{stream}*")]
        if keys:
            await client.delete(*keys)
        return int(pending["pending"])
    finally:
        await client.aclose()


async def _pubsub_left_and_delete(host: str, name: str) -> int:
    """Messages the subscription still gives (pulled, not acknowledged); then the
    subscription and topic are deleted."""
    import aiohttp

    root = f"http://{host}/v1/projects/loafer-test"
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{root}/subscriptions/{name}:pull",
            json={"maxMessages": 100, "returnImmediately": True},
        ) as response:
            left = len((await response.json()).get("receivedMessages") or [])
        for path in (f"subscriptions/{name}", f"topics/{name}"):
            async with session.delete(f"{root}/{path}"):
                pass
    return left


async def test_one_manager_runs_a_route_on_every_broker_side_by_side(
    rabbit_url: str,
    amqp_url: str,
    client_options: dict[str, Any],
    nats_url: str,
    redis_url: str,
    pubsub_emulator: str,
    kafka_url: str,
) -> None:
    from aiobotocore.session import get_session

    suffix = uuid.uuid4().hex[:12]
    rabbit_queue, amqp_queue, sqs_queue = (f"loafer-mixed-{b}-{suffix}" for b in "rab")
    nats_stream, redis_stream = f"loafer-mixed-n-{suffix}", f"loafer-mixed-d-{suffix}"
    pubsub_name = f"loafer-mixed-g-{suffix}"
    kafka_topic = f"loafer-mixed-k-{suffix}"
    amqp_pika_url = f"amqp://{urlsplit(amqp_url).netloc}/"
    memory = MemoryBroker()
    memory.publish_many("q", bodies("memory"))
    await _rabbit_queue(rabbit_url, rabbit_queue, bodies("rabbit"))
    await _rabbit_queue(amqp_pika_url, amqp_queue, bodies("amqp"))
    async with get_session().create_client("sqs", **client_options) as sqs:
        url = (await sqs.create_queue(QueueName=sqs_queue))["QueueUrl"]
        try:
            for body in bodies("sqs"):
                await sqs.send_message(QueueUrl=url, MessageBody=body.decode())

            seen: dict[str, set[int]] = {b: set() for b in BROKERS}
            all_seen = asyncio.Event()

            async def handler(content: Any, metadata: Any) -> bool:
                seen[content["broker"]].add(content["i"])
                if all(len(s) == PER_BROKER for s in seen.values()):
                    all_seen.set()
                return True

            routes = [
                Route(MemoryProvider(memory, "q", wait=0.2), handler, translator=JSONTranslator()),
                RabbitRoute(rabbit_queue, url=rabbit_url, handler=handler),
                AMQPRoute(f"/amq/queue/{amqp_queue}", url=amqp_url, handler=handler),
                SQSRoute(
                    sqs_queue,
                    {"options": {"WaitTimeSeconds": 1}, **client_options},
                    handler=handler,
                ),
                NATSRoute(
                    nats_stream,
                    url=nats_url,
                    consumer="mixed",
                    create=True,
                    subjects=[f"{nats_stream}.>"],
                    handler=handler,
                ),
                RedisRoute(
                    redis_stream, url=redis_url, group="mixed", create=True, handler=handler
                ),
                PubSubRoute(
                    pubsub_name,
                    project="loafer-test",
                    emulator_host=pubsub_emulator,
                    create=True,
                    topic=pubsub_name,
                    handler=handler,
                ),
                KafkaRoute(
                    kafka_topic,
                    url=kafka_url,
                    create=True,
                    idempotent=False,  # Tansu refuses the idempotent producer
                    handler=handler,
                ),
            ]
            async with Manager(routes) as manager:
                await manager.wait_started()  # the stream and group exist: publish now
                async with NATSPublisher(f"{nats_stream}.in", url=nats_url) as nats_publisher:
                    await nats_publisher.publish_many(bodies("nats"))
                async with RedisPublisher(redis_stream, url=redis_url) as redis_publisher:
                    await redis_publisher.publish_many(bodies("redis"))
                async with PubSubPublisher(
                    pubsub_name, project="loafer-test", emulator_host=pubsub_emulator
                ) as pubsub_publisher:
                    await pubsub_publisher.publish_many(bodies("pubsub"))
                async with KafkaPublisher(
                    kafka_topic, url=kafka_url, idempotent=False
                ) as kafka_publisher:
                    await kafka_publisher.publish_many(bodies("kafka"))
                kafka_route = routes[-1]
                assert isinstance(kafka_route, KafkaRoute)
                await asyncio.wait_for(all_seen.wait(), 60)

                async def kafka_settled() -> bool:  # the last settle follows the handler
                    return await kafka_route.provider.backlog() == 0

                await eventually(kafka_settled, timeout=10, what="no Kafka lag")
            assert seen == {b: set(range(PER_BROKER)) for b in seen}
            # every message settled where it came from: nothing left, nothing in flight
            assert memory.depth("q") == 0 and memory.in_flight("q") == 0
            attributes = (
                await sqs.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                    ],
                )
            )["Attributes"]
            assert attributes == {
                "ApproximateNumberOfMessages": "0",
                "ApproximateNumberOfMessagesNotVisible": "0",
            }
        finally:
            with contextlib.suppress(Exception):
                await sqs.delete_queue(QueueUrl=url)
            rabbit_left = await _rabbit_depth_and_delete(rabbit_url, rabbit_queue)
            amqp_left = await _rabbit_depth_and_delete(amqp_pika_url, amqp_queue)
            nats_left = await _nats_state(nats_url, nats_stream, "mixed")
            redis_pending = await _redis_state(redis_url, redis_stream, "mixed")
            pubsub_left = await _pubsub_left_and_delete(pubsub_emulator, pubsub_name)
    assert (rabbit_left, amqp_left) == (0, 0)
    # NATS: a work-queue stream drops acked messages; nothing delivered and unacked
    assert nats_left == (0, 0)
    assert redis_pending == 0
    # Pub/Sub: nothing left to pull (every message acknowledged)
    assert pubsub_left == 0
