"""Batch handlers vs per-message handlers, on RabbitMQ and on Redis Streams, same run.

    python benchmarks/bench_batches.py                      # 20,000 messages, 3 rounds
    python benchmarks/bench_batches.py --messages 5000 --rounds 1 --brokers redis
    nox -s bench -- batches

Each round pre-publishes N messages, then consumes them with a route (RabbitRoute, or
RedisRoute) whose handler writes every message to a sink, a real Redis list: the
*per-message* handler does one ``RPUSH`` per message, the *batch* handler
(``Batch(fn, max_size=100)``) one ``RPUSH`` of the whole batch. Both routes have
``max_concurrency=200`` (the batch holds up to 100 of those slots per batch). A third
line, *no-op*, times the same two handlers doing nothing: what batching itself costs.
Timed from the route's start until the sink holds N entries (the write is the work), or,
for no-op, until the N-th settle. Ratio: batch / per-message, of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loafer_core import Manager
from loafer_core.batches import Batch
from loafer_rabbit import RabbitRoute
from loafer_redis import RedisPublisher, RedisRoute

RABBIT = "amqp://guest:guest@127.0.0.1:5672/"
REDIS = "redis://127.0.0.1:6379/0"


def bodies(n: int) -> list[bytes]:
    return [b'{"i": %d, "payload": "benchmark message"}' % i for i in range(n)]


async def fill_rabbit(queue: str, n: int) -> None:
    connection = await aio_pika.connect(RABBIT)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)
        payloads = bodies(n)
        for start in range(0, n, 1000):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(aio_pika.Message(b), routing_key=queue)
                    for b in payloads[start : start + 1000]
                )
            )


async def drop_rabbit(queue: str) -> None:
    connection = await aio_pika.connect(RABBIT)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)


async def fill_redis(stream: str, n: int) -> None:
    client = aioredis.Redis.from_url(REDIS)
    await client.xgroup_create(stream, "loafer", id="0", mkstream=True)
    await client.aclose()
    async with RedisPublisher(stream, url=REDIS) as publisher:
        await publisher.publish_many(bodies(n))


def handlers(sink: Any, key: str, work: bool) -> tuple[Any, Any]:
    async def one(content: Any, metadata: Any) -> None:
        if work:
            await sink.rpush(key, content["i"])

    async def many(contents: list[Any]) -> None:
        if work:
            await sink.rpush(key, *(c["i"] for c in contents))

    return one, Batch(many, max_size=100, max_wait=0.05)


async def consume(broker: str, n: int, batched: bool, work: bool) -> float:
    name = f"bench-batch-{uuid.uuid4().hex[:8]}"
    sink = aioredis.Redis.from_url(REDIS, max_connections=400)  # one per concurrent handler
    key = f"{name}:sink"
    one, many = handlers(sink, key, work)
    handler = many if batched else one
    if broker == "rabbit":
        await fill_rabbit(name, n)
        route: Any = RabbitRoute(name, url=RABBIT, handler=handler, max_concurrency=200)
    else:
        await fill_redis(name, n)
        route = RedisRoute(name, url=REDIS, handler=handler, max_concurrency=200)
    try:
        started = time.perf_counter()
        async with Manager([route]) as manager:
            await manager.wait_started()
            while True:
                if work:
                    if await sink.llen(key) >= n:
                        break
                elif manager.status()[0].settled.get("ACCEPT", 0) >= n:
                    break
                await asyncio.sleep(0.002)
            elapsed = time.perf_counter() - started
    finally:
        await sink.delete(key, name)
        await sink.aclose()
        if broker == "rabbit":
            await drop_rabbit(name)
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--brokers", default="rabbit,redis")
    args = parser.parse_args()
    n = args.messages
    print(f"{n:,} messages, {args.rounds} rounds, max_concurrency 200, batches of 100")
    print("| broker | handler work | per-message | batch | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for broker in args.brokers.split(","):
        for work in (True, False):
            single: list[float] = []
            batch: list[float] = []
            for _ in range(args.rounds):  # alternate, so drift hits both alike
                single.append(await consume(broker, n, batched=False, work=work))
                batch.append(await consume(broker, n, batched=True, work=work))
            s, b = n / statistics.median(single), n / statistics.median(batch)
            what = "one Redis RPUSH (per message / per batch)" if work else "no-op"
            print(f"| {broker} | {what} | {s:,.0f} msg/s | {b:,.0f} msg/s | **{b / s:.2f}x** |")


if __name__ == "__main__":
    asyncio.run(main())
