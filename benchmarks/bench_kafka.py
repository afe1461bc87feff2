"""Kafka benchmark (on Tansu): loafer (KafkaRoute / KafkaPublisher) vs the raw aiokafka
client, same run.

    python benchmarks/bench_kafka.py                  # 20,000 messages, 1 round
    python benchmarks/bench_kafka.py --messages 50000 --rounds 3

Publishing: N records to a 3-partition topic, every acknowledgement awaited; the raw side
is aiokafka's ``AIOKafkaProducer.send`` for ``--batch`` records then a gather of their
futures, one window after another; the loafer side ``KafkaPublisher.publish_many`` over
the same windows. Both producers ``acks="all"``, not idempotent (Tansu refuses it).

Consuming: the same N records pre-produced; the raw side is the simplest fast loop of
``AIOKafkaConsumer`` in a group (``getmany(max_records=--concurrency)``, ``json.loads``
of each value, one ``commit()`` per batch); the loafer side is a ``KafkaRoute`` with
``max_concurrency=--concurrency``, the default JSON translator and a no-op async
handler, run by a ``Manager``. Both are timed from the first record received (the group
join, about 3 s on Tansu, is left out) until the N-th is settled and its offset
committed. ``--no-decode``: neither side decodes. Rounds alternate which side goes first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loafer_core import Manager
from loafer_core.outcome import Outcome
from loafer_core.provider import Delivery
from loafer_core.translator import PassThroughTranslator
from loafer_kafka import KafkaProvider, KafkaPublisher, KafkaRoute


def bodies(n: int) -> list[bytes]:
    return [b'{"i": %d, "payload": "benchmark message"}' % i for i in range(n)]


async def create(servers: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 3, 1) for name in names])
    finally:
        await admin.close()


async def delete(servers: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.delete_topics(list(names))
    finally:
        await admin.close()


# -- publishing ---------------------------------------------------------------------------


async def raw_publish(servers: str, topic: str, payloads: Sequence[bytes], batch: int) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=servers, acks="all", enable_idempotence=False, linger_ms=5
    )
    await producer.start()
    try:
        started = time.perf_counter()
        for start in range(0, len(payloads), batch):
            futures = [await producer.send(topic, body) for body in payloads[start : start + batch]]
            await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def loafer_publish(servers: str, topic: str, payloads: Sequence[bytes], batch: int) -> float:
    async with KafkaPublisher(topic, url=f"kafka://{servers}", idempotent=False) as publisher:
        started = time.perf_counter()
        for start in range(0, len(payloads), batch):
            await publisher.publish_many(payloads[start : start + batch])
        return time.perf_counter() - started


# -- consuming ----------------------------------------------------------------------------


async def raw_consume(servers: str, topic: str, n: int, batch: int, decode: bool) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=f"raw-{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        count, started = 0, 0.0
        while count < n:
            got = await consumer.getmany(timeout_ms=1000, max_records=batch)
            if got and not started:
                started = time.perf_counter()
            for records in got.values():
                if decode:
                    for record in records:
                        json.loads(record.value)
                count += len(records)
            if got:
                await consumer.commit()
        return time.perf_counter() - started
    finally:
        await consumer.stop()


class CountingProvider(KafkaProvider):
    """KafkaProvider that notes its first delivery and signals the n-th settle."""

    def __init__(self, *args: Any, n: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target = n
        self.settled = 0
        self.first = 0.0
        self.done = asyncio.Event()

    async def fetch(self, max_messages: int) -> Sequence[Delivery]:
        got = await super().fetch(max_messages)
        if got and not self.first:
            self.first = time.perf_counter()
        return got

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        await super().settle(delivery, outcome)
        self.settled += 1
        if self.settled == self.target:
            self.done.set()


async def loafer_consume(servers: str, topic: str, n: int, concurrency: int, decode: bool) -> float:
    async def handler(content: Any, metadata: Any) -> None:
        return None

    options: dict[str, Any] = {"url": f"kafka://{servers}", "dead_letter_topic": None}
    extra = {} if decode else {"translator": PassThroughTranslator()}
    route = KafkaRoute(topic, handler=handler, max_concurrency=concurrency, **options, **extra)
    provider = CountingProvider(topic, n=n, **options)
    route.provider = provider  # same options, with a settle counter
    async with Manager([route]) as manager:
        await manager.wait_started()
        await provider.done.wait()
        await provider._commit(provider._parts)  # the last offsets committed
        return time.perf_counter() - provider.first


# -- main ---------------------------------------------------------------------------------


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} msg/s"


async def one_round(args: argparse.Namespace, round_: int) -> list[float]:
    n, servers = args.messages, args.servers
    payloads = bodies(n)
    raw_t, loafer_t = (f"bench-{side}-{uuid.uuid4().hex[:8]}" for side in ("raw", "loafer"))
    await create(servers, raw_t, loafer_t)
    try:
        pub = {
            "raw": lambda: raw_publish(servers, raw_t, payloads, args.batch),
            "loafer": lambda: loafer_publish(servers, loafer_t, payloads, args.batch),
        }
        con = {
            "raw": lambda: raw_consume(servers, raw_t, n, args.concurrency, args.decode),
            "loafer": lambda: loafer_consume(servers, loafer_t, n, args.concurrency, args.decode),
        }
        order = ("raw", "loafer") if round_ % 2 else ("loafer", "raw")
        took: dict[str, float] = {}
        for side in order:
            took[f"pub_{side}"] = await pub[side]()
        for side in order:
            took[f"con_{side}"] = await con[side]()
    finally:
        await delete(servers, raw_t, loafer_t)
    print(
        f"round {round_}: publish raw {rate(n, took['pub_raw'])}, loafer "
        f"{rate(n, took['pub_loafer'])} ({took['pub_raw'] / took['pub_loafer']:.2f}x); "
        f"consume+commit raw {rate(n, took['con_raw'])}, loafer {rate(n, took['con_loafer'])} "
        f"({took['con_raw'] / took['con_loafer']:.2f}x)",
        flush=True,
    )
    return [took[k] for k in ("pub_raw", "pub_loafer", "con_raw", "con_loafer")]


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    default = os.environ.get("LOAFER_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    parser.add_argument("--servers", default=default)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=100, help="= raw getmany batch")
    parser.add_argument("--batch", type=int, default=1000, help="records per publish window")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--no-decode",
        dest="decode",
        action="store_false",
        help="neither side decodes the JSON values (the route with PassThroughTranslator)",
    )
    args = parser.parse_args()
    n = args.messages
    keys = ("pub_raw", "pub_loafer", "con_raw", "con_loafer")
    results: dict[str, list[float]] = {k: [] for k in keys}
    for round_ in range(1, args.rounds + 1):
        for key, value in zip(keys, await one_round(args, round_), strict=True):
            results[key].append(value)
    med = {k: statistics.median(v) for k, v in results.items()}
    print()
    print(
        f"{n:,} messages on Tansu (3 partitions), max_concurrency / raw batch "
        f"{args.concurrency}, publish windows of {args.batch}, "
        f"{'JSON decoded on both sides' if args.decode else 'no decoding'}, "
        f"{args.rounds} round(s), medians:"
    )
    print(
        f"  publish with acks: raw aiokafka {rate(n, med['pub_raw'])}, "
        f"KafkaPublisher {rate(n, med['pub_loafer'])}, "
        f"ratio {med['pub_raw'] / med['pub_loafer']:.2f}x (target >= 0.9x)"
    )
    print(
        f"  consume and commit: raw aiokafka {rate(n, med['con_raw'])}, "
        f"KafkaRoute {rate(n, med['con_loafer'])}, "
        f"ratio {med['con_raw'] / med['con_loafer']:.2f}x (target >= 1.0x)"
    )


if __name__ == "__main__":
    asyncio.run(main())
