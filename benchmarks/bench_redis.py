"""Redis Streams benchmark: loafer (RedisRoute / RedisPublisher) vs raw redis-py, same run.

    python benchmarks/bench_redis.py                     # 50,000 messages, concurrency 100
    python benchmarks/bench_redis.py --messages 20000 --rounds 3

Publishing: N entries ``XADD``-ed, raw redis-py pipelined (``--pipeline`` commands per
round trip, no transaction) vs ``RedisPublisher.publish_many`` (the same pipeline).

Consuming: the same N entries pre-published on a stream with a consumer group; the raw
side is the fastest simple redis-py loop (``XREADGROUP COUNT 100``, then one ``XACK``
for the batch); the loafer side is a ``RedisRoute`` with ``max_concurrency=100``, the
default JSON translator and a no-op async handler, run by a ``Manager``. Both are timed
from connecting until the N-th acknowledgement has been sent.
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

import redis.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loafer_core import Manager
from loafer_core.outcome import Outcome
from loafer_core.provider import Delivery
from loafer_redis import RedisProvider, RedisPublisher, RedisRoute

GROUP = "bench"


def bodies(n: int) -> list[bytes]:
    return [b'{"i": %d, "payload": "benchmark message"}' % i for i in range(n)]


async def prepare(url: str, *streams: str) -> None:
    async with redis.asyncio.Redis.from_url(url) as client:
        for stream in streams:
            await client.xgroup_create(stream, GROUP, id="0", mkstream=True)


async def delete(url: str, *streams: str) -> None:
    async with redis.asyncio.Redis.from_url(url) as client:
        for stream in streams:
            await client.delete(stream, f"{stream}:dead", f"{stream}:delayed")


async def length(url: str, stream: str) -> int:
    async with redis.asyncio.Redis.from_url(url) as client:
        return int(await client.xlen(stream))


async def pending(url: str, stream: str) -> int:
    async with redis.asyncio.Redis.from_url(url) as client:
        return int((await client.xpending(stream, GROUP))["pending"])


# -- publishing ---------------------------------------------------------------------------


async def raw_publish(url: str, stream: str, payloads: list[bytes], pipeline: int) -> float:
    started = time.perf_counter()
    async with redis.asyncio.Redis.from_url(url) as client:
        for start in range(0, len(payloads), pipeline):
            pipe = client.pipeline(transaction=False)
            for body in payloads[start : start + pipeline]:
                pipe.xadd(stream, {"body": body})
            await pipe.execute()
    return time.perf_counter() - started


async def loafer_publish(url: str, stream: str, payloads: list[bytes], pipeline: int) -> float:
    started = time.perf_counter()
    async with RedisPublisher(stream, url=url, pipeline=pipeline) as publisher:
        sent = await publisher.publish_many(payloads)
    assert sent == len(payloads)
    return time.perf_counter() - started


# -- consuming ----------------------------------------------------------------------------


async def raw_consume(url: str, stream: str, n: int, count: int) -> float:
    started = time.perf_counter()
    done = 0
    async with redis.asyncio.Redis.from_url(url) as client:
        while done < n:
            reply = await client.xreadgroup(GROUP, "raw", {stream: ">"}, count=count, block=1000)
            for _, entries in reply:
                ids = [entry_id for entry_id, _ in entries]
                if ids:
                    await client.xack(stream, GROUP, *ids)
                    done += len(ids)
    return time.perf_counter() - started


class CountingProvider(RedisProvider):
    """RedisProvider that signals when the n-th settle has returned."""

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


async def loafer_consume(url: str, stream: str, n: int, concurrency: int) -> float:
    async def handler(content: Any, metadata: Any) -> None:
        return None

    route = RedisRoute(stream, url=url, group=GROUP, handler=handler, max_concurrency=concurrency)
    provider = CountingProvider(stream, url=url, group=GROUP, n=n)
    route.provider = provider  # same options, with a settle counter
    started = time.perf_counter()
    async with Manager([route]) as manager:
        await manager.wait_started()
        await provider.done.wait()
        await provider._acks.flush() if provider._acks else None  # the n-th XACK sent
        elapsed = time.perf_counter() - started
    return elapsed


# -- main ---------------------------------------------------------------------------------


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} msg/s"


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=100, help="loafer max_concurrency")
    parser.add_argument("--count", type=int, default=100, help="raw XREADGROUP COUNT")
    parser.add_argument("--pipeline", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--profile", help="write a cProfile of the loafer consume to this file")
    args = parser.parse_args()
    n = args.messages
    payloads = bodies(n)
    results: dict[str, list[float]] = {
        k: [] for k in ("pub_raw", "pub_loafer", "con_raw", "con_loafer")
    }
    for round_ in range(1, args.rounds + 1):
        raw_s = f"bench-raw-{uuid.uuid4().hex[:8]}"
        loafer_s = f"bench-loafer-{uuid.uuid4().hex[:8]}"
        await prepare(args.url, raw_s, loafer_s)
        try:
            # Alternate which side goes first, so drift on a shared machine evens out.
            if round_ % 2:
                pub_raw = await raw_publish(args.url, raw_s, payloads, args.pipeline)
                pub_loafer = await loafer_publish(args.url, loafer_s, payloads, args.pipeline)
            else:
                pub_loafer = await loafer_publish(args.url, loafer_s, payloads, args.pipeline)
                pub_raw = await raw_publish(args.url, raw_s, payloads, args.pipeline)
            assert await length(args.url, raw_s) == n and await length(args.url, loafer_s) == n
            if args.profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            if round_ % 2:
                con_raw = await raw_consume(args.url, raw_s, n, args.count)
                con_loafer = await loafer_consume(args.url, loafer_s, n, args.concurrency)
            else:
                con_loafer = await loafer_consume(args.url, loafer_s, n, args.concurrency)
                con_raw = await raw_consume(args.url, raw_s, n, args.count)
            if args.profile:
                profiler.disable()
                profiler.dump_stats(args.profile)
            assert await pending(args.url, loafer_s) == 0, "loafer left entries pending"
        finally:
            await delete(args.url, raw_s, loafer_s)
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
        f"{n:,} entries, loafer max_concurrency {args.concurrency}, raw XREADGROUP COUNT "
        f"{args.count}, publish pipeline {args.pipeline}, {args.rounds} round(s), medians:"
    )
    print(
        f"  publish (XADD):  raw redis-py {rate(n, med['pub_raw'])}, "
        f"RedisPublisher {rate(n, med['pub_loafer'])}, "
        f"ratio {med['pub_raw'] / med['pub_loafer']:.2f}x "
        f"(median of rounds {statistics.median(pub_ratios):.2f}x; target >= 0.9x)"
    )
    print(
        f"  consume and ack: raw redis-py {rate(n, med['con_raw'])}, "
        f"RedisRoute {rate(n, med['con_loafer'])}, "
        f"ratio {med['con_raw'] / med['con_loafer']:.2f}x "
        f"(median of rounds {statistics.median(con_ratios):.2f}x; target >= 0.7x)"
    )


if __name__ == "__main__":
    asyncio.run(main())
