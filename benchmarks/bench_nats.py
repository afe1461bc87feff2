"""NATS JetStream benchmark: loafer (NATSRoute / NATSPublisher) vs raw nats-py, same run.

    python benchmarks/bench_nats.py                    # 20,000 messages, batch 100
    python benchmarks/bench_nats.py --messages 50000 --rounds 3

Publishing: N messages to a file-backed work-queue stream, each awaiting its JetStream
publish ack; raw nats-py pipelined (``asyncio.gather`` of ``js.publish`` over windows of
``--pipeline``) vs ``NATSPublisher.publish_many`` (windows of the same size).

Consuming: the same N messages pre-published; the raw side is the simplest fast
nats-py loop on a durable pull consumer (``sub.fetch(100)``, then ``msg.ack()`` for
each); the loafer side is a ``NATSRoute`` with ``max_concurrency=100`` (so pull requests
of up to 100), the default JSON translator and a no-op async handler, run by a
``Manager``. Both are timed from connecting until the N-th ack has been sent.
Rounds alternate which side goes first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
from nats.js import api

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loafer_core import Manager
from loafer_core.outcome import Outcome
from loafer_core.provider import Delivery
from loafer_nats import NATSProvider, NATSPublisher, NATSRoute

CONSUMER = "bench"


def bodies(n: int) -> list[bytes]:
    return [b'{"i": %d, "payload": "benchmark message"}' % i for i in range(n)]


async def create(url: str, name: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            api.StreamConfig(
                name=name,
                subjects=[f"{name}.>"],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
            )
        )
        await js.add_consumer(
            name,
            api.ConsumerConfig(
                durable_name=CONSUMER, ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=-1
            ),
        )
    finally:
        await nc.close()


async def delete(url: str, *names: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for name in names:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()


async def depth(url: str, name: str) -> int:
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info(name)).state.messages)
    finally:
        await nc.close()


# -- publishing ---------------------------------------------------------------------------


async def raw_publish(url: str, stream: str, payloads: list[bytes], pipeline: int) -> float:
    started = time.perf_counter()
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        subject = f"{stream}.in"
        for start in range(0, len(payloads), pipeline):
            await asyncio.gather(
                *(js.publish(subject, body) for body in payloads[start : start + pipeline])
            )
    finally:
        await nc.close()
    return time.perf_counter() - started


async def loafer_publish(url: str, stream: str, payloads: list[bytes], pipeline: int) -> float:
    started = time.perf_counter()
    async with NATSPublisher(f"{stream}.in", url=url, pipeline=pipeline) as publisher:
        sent = await publisher.publish_many(payloads)
    assert sent == len(payloads)
    return time.perf_counter() - started


# -- consuming ----------------------------------------------------------------------------


async def raw_consume(url: str, stream: str, n: int, batch: int) -> float:
    started = time.perf_counter()
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe_bind(CONSUMER, stream)
        count = 0
        while count < n:
            try:
                msgs = await sub.fetch(batch, timeout=5)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                await msg.ack()
            count += len(msgs)
        await nc.flush()
        elapsed = time.perf_counter() - started
    finally:
        await nc.close()
    return elapsed


class CountingProvider(NATSProvider):
    """NATSProvider that signals when the n-th settle has returned."""

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

    route = NATSRoute(
        stream, url=url, consumer=CONSUMER, handler=handler, max_concurrency=concurrency
    )
    provider = CountingProvider(stream, url=url, consumer=CONSUMER, n=n)
    route.provider = provider  # same options, with a settle counter
    started = time.perf_counter()
    async with Manager([route]) as manager:
        await manager.wait_started()
        await provider.done.wait()
        assert provider._client is not None
        await provider._client.flush()
        elapsed = time.perf_counter() - started
    return elapsed


# -- main ---------------------------------------------------------------------------------


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} msg/s"


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100, help="= raw fetch batch")
    parser.add_argument("--pipeline", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", choices=("publish", "consume"), default=None)
    args = parser.parse_args()
    n = args.messages
    payloads = bodies(n)
    results: dict[str, list[float]] = {
        k: [] for k in ("pub_raw", "pub_loafer", "con_raw", "con_loafer")
    }
    for round_ in range(1, args.rounds + 1):
        raw_s = f"bench-raw-{uuid.uuid4().hex[:8]}"
        loafer_s = f"bench-loafer-{uuid.uuid4().hex[:8]}"
        await create(args.url, raw_s)
        await create(args.url, loafer_s)
        try:
            # Alternate which side goes first, so drift on a shared machine evens out.
            if round_ % 2:
                pub_raw = await raw_publish(args.url, raw_s, payloads, args.pipeline)
                pub_loafer = await loafer_publish(args.url, loafer_s, payloads, args.pipeline)
            else:
                pub_loafer = await loafer_publish(args.url, loafer_s, payloads, args.pipeline)
                pub_raw = await raw_publish(args.url, raw_s, payloads, args.pipeline)
            assert await depth(args.url, raw_s) == n and await depth(args.url, loafer_s) == n
            if args.only == "publish":
                con_raw = con_loafer = 1.0
            elif round_ % 2:
                con_raw = await raw_consume(args.url, raw_s, n, args.concurrency)
                con_loafer = await loafer_consume(args.url, loafer_s, n, args.concurrency)
            else:
                con_loafer = await loafer_consume(args.url, loafer_s, n, args.concurrency)
                con_raw = await raw_consume(args.url, raw_s, n, args.concurrency)
            if args.only != "publish":
                await asyncio.sleep(0.5)  # the last acks reach the stream
                assert await depth(args.url, loafer_s) == 0, "loafer left messages behind"
        finally:
            await delete(args.url, raw_s, loafer_s)
        for key, value in zip(results, (pub_raw, pub_loafer, con_raw, con_loafer), strict=True):
            results[key].append(value)
        consumed = (
            ""
            if args.only == "publish"
            else f"; consume+ack raw {rate(n, con_raw)}, loafer {rate(n, con_loafer)} "
            f"({con_raw / con_loafer:.2f}x)"
        )
        print(
            f"round {round_}: publish raw {rate(n, pub_raw)}, loafer {rate(n, pub_loafer)} "
            f"({pub_raw / pub_loafer:.2f}x){consumed}",
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in results.items()}
    pub_ratios = [r / lo for r, lo in zip(results["pub_raw"], results["pub_loafer"], strict=True)]
    con_ratios = [r / lo for r, lo in zip(results["con_raw"], results["con_loafer"], strict=True)]
    print()
    print(
        f"{n:,} messages (file storage), max_concurrency / raw fetch batch {args.concurrency}, "
        f"publish pipeline {args.pipeline}, {args.rounds} round(s), medians:"
    )
    print(
        f"  publish with acks: raw nats-py {rate(n, med['pub_raw'])}, "
        f"NATSPublisher {rate(n, med['pub_loafer'])}, "
        f"ratio {med['pub_raw'] / med['pub_loafer']:.2f}x "
        f"(median of rounds {statistics.median(pub_ratios):.2f}x; target >= 0.9x)"
    )
    if args.only == "publish":
        return
    print(
        f"  consume and ack:   raw nats-py {rate(n, med['con_raw'])}, "
        f"NATSRoute {rate(n, med['con_loafer'])}, "
        f"ratio {med['con_raw'] / med['con_loafer']:.2f}x "
        f"(median of rounds {statistics.median(con_ratios):.2f}x; target >= 0.7x)"
    )


if __name__ == "__main__":
    asyncio.run(main())
