"""RabbitMQ benchmark: loafer (RabbitRoute / RabbitPublisher) vs raw aio-pika, same run.

    python benchmarks/bench_rabbit.py                    # 50,000 messages, prefetch 200
    python benchmarks/bench_rabbit.py --messages 10000 --rounds 3

Publishing: N persistent messages with publisher confirms, raw aio-pika pipelined
(``asyncio.gather`` over windows of ``--pipeline`` publishes) vs ``RabbitPublisher
.publish_many`` (a sliding window of the same size).

Consuming: the same N persistent messages pre-published on a durable queue; the raw
side is an aio-pika consumer with ``basic.qos(prefetch_count=200)`` that acks in its
callback; the loafer side is a ``RabbitRoute`` with ``max_concurrency=200`` (so the
same prefetch of 200), the default JSON translator and a no-op async handler, run by a
``Manager``. Both are timed from connecting until the N-th ack has been sent.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loafer_core import Manager
from loafer_core.outcome import Outcome
from loafer_core.provider import Delivery
from loafer_rabbit import RabbitProvider, RabbitPublisher, RabbitRoute


def bodies(n: int) -> list[bytes]:
    return [b'{"i": %d, "payload": "benchmark message"}' % i for i in range(n)]


async def declare(url: str, name: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True)


async def delete(url: str, *names: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


async def depth(url: str, name: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)


# -- publishing ---------------------------------------------------------------------------


async def raw_publish(url: str, queue: str, payloads: list[bytes], pipeline: int) -> float:
    started = time.perf_counter()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        for start in range(0, len(payloads), pipeline):
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=queue,
                    )
                    for body in payloads[start : start + pipeline]
                )
            )
    return time.perf_counter() - started


async def loafer_publish(url: str, queue: str, payloads: list[bytes], pipeline: int) -> float:
    started = time.perf_counter()
    async with RabbitPublisher(url, routing_key=queue, pipeline=pipeline) as publisher:
        sent = await publisher.publish_many(payloads)
    assert sent == len(payloads)
    return time.perf_counter() - started


# -- consuming ----------------------------------------------------------------------------


async def raw_consume(url: str, queue: str, n: int, prefetch: int) -> float:
    done = asyncio.Event()
    count = 0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal count
        await message.ack()
        count += 1
        if count == n:
            done.set()

    started = time.perf_counter()
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        declared = await channel.declare_queue(queue, passive=True)
        await declared.consume(on_message)
        await done.wait()
        elapsed = time.perf_counter() - started
    return elapsed


class CountingProvider(RabbitProvider):
    """RabbitProvider that signals when the n-th settle has returned."""

    def __init__(self, *args: Any, n: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target = n
        self.settled = 0
        self.done = asyncio.Event()

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        await super().settle(delivery, outcome)
        self.settled += 1
        if self.settled == self.target:
            self.done.set()


async def loafer_consume(url: str, queue: str, n: int, concurrency: int) -> float:
    async def handler(content: Any, metadata: Any) -> None:
        return None

    route = RabbitRoute(queue, url=url, handler=handler, max_concurrency=concurrency)
    provider = CountingProvider(queue, url=url, n=n, delayed_retry=False)
    route.provider = provider  # same options, with a settle counter
    started = time.perf_counter()
    async with Manager([route]) as manager:
        await manager.wait_started()
        await provider.done.wait()
        elapsed = time.perf_counter() - started
    return elapsed


# -- main ---------------------------------------------------------------------------------


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} msg/s"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=200, help="= prefetch")
    parser.add_argument("--pipeline", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    n = args.messages
    payloads = bodies(n)
    results: dict[str, list[float]] = {
        k: [] for k in ("pub_raw", "pub_loafer", "con_raw", "con_loafer")
    }
    for round_ in range(1, args.rounds + 1):
        raw_q = f"bench-raw-{uuid.uuid4().hex[:8]}"
        loafer_q = f"bench-loafer-{uuid.uuid4().hex[:8]}"
        await declare(args.url, raw_q)
        await declare(args.url, loafer_q)
        try:
            # Alternate which side goes first, so drift on a shared machine evens out.
            if round_ % 2:
                pub_raw = await raw_publish(args.url, raw_q, payloads, args.pipeline)
                pub_loafer = await loafer_publish(args.url, loafer_q, payloads, args.pipeline)
            else:
                pub_loafer = await loafer_publish(args.url, loafer_q, payloads, args.pipeline)
                pub_raw = await raw_publish(args.url, raw_q, payloads, args.pipeline)
            assert await depth(args.url, raw_q) == n and await depth(args.url, loafer_q) == n
            if round_ % 2:
                con_raw = await raw_consume(args.url, raw_q, n, args.concurrency)
                con_loafer = await loafer_consume(args.url, loafer_q, n, args.concurrency)
            else:
                con_loafer = await loafer_consume(args.url, loafer_q, n, args.concurrency)
                con_raw = await raw_consume(args.url, raw_q, n, args.concurrency)
            assert await depth(args.url, loafer_q) == 0, "loafer left messages behind"
        finally:
            await delete(args.url, raw_q, loafer_q, f"{loafer_q}.retry")
        for key, value in zip(results, (pub_raw, pub_loafer, con_raw, con_loafer), strict=True):
            results[key].append(value)
        print(
            f"round {round_}: publish raw {rate(n, pub_raw)}, loafer {rate(n, pub_loafer)} "
            f"({pub_raw / pub_loafer:.2f}x); consume+ack raw {rate(n, con_raw)}, "
            f"loafer {rate(n, con_loafer)} ({con_raw / con_loafer:.2f}x)",
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in results.items()}
    pub_ratios = [r / lo for r, lo in zip(results["pub_raw"], results["pub_loafer"], strict=True)]
    con_ratios = [r / lo for r, lo in zip(results["con_raw"], results["con_loafer"], strict=True)]
    print()
    print(
        f"{n:,} persistent messages, prefetch/max_concurrency {args.concurrency}, "
        f"publish pipeline {args.pipeline}, {args.rounds} round(s), medians:"
    )
    print(
        f"  publish with confirms: raw aio-pika {rate(n, med['pub_raw'])}, "
        f"RabbitPublisher {rate(n, med['pub_loafer'])}, "
        f"ratio {med['pub_raw'] / med['pub_loafer']:.2f}x "
        f"(median of rounds {statistics.median(pub_ratios):.2f}x; target >= 0.9x)"
    )
    print(
        f"  consume and ack:       raw aio-pika {rate(n, med['con_raw'])}, "
        f"RabbitRoute {rate(n, med['con_loafer'])}, "
        f"ratio {med['con_raw'] / med['con_loafer']:.2f}x "
        f"(median of rounds {statistics.median(con_ratios):.2f}x; target >= 0.9x)"
    )


if __name__ == "__main__":
    asyncio.run(main())
