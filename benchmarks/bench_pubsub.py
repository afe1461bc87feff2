"""Google Cloud Pub/Sub benchmark (on the emulator): loafer (PubSubRoute /
PubSubPublisher) vs the raw gcloud-aio-pubsub client, same run.

    python benchmarks/bench_pubsub.py                  # 10,000 messages, 1 round
    python benchmarks/bench_pubsub.py --messages 20000 --rounds 3

Publishing: N messages to a topic, each call awaiting its message ids; the raw side is
gcloud-aio-pubsub's ``PublisherClient.publish`` over lists of ``--batch`` messages, one
call after another; the loafer side ``PubSubPublisher.publish_many`` (calls of up to
``max_batch`` = ``--batch`` messages).

Consuming: the same N messages pre-published; the raw side is the simplest fast loop of
gcloud-aio-pubsub's ``SubscriberClient`` (``pull(subscription, 100)``, ``json.loads`` of
each body, then one ``acknowledge`` of the batch's ack ids); the loafer side is a
``PubSubRoute`` with ``max_concurrency=100``, the default JSON translator and a no-op
async handler, run by a ``Manager``, timed until the N-th settle has returned and the
queued acks were sent. ``--no-decode``: neither side decodes (the route with
``PassThroughTranslator``). Rounds alternate which side goes
first. The emulator (a JVM on the same machine) is most of the cost: the ratio is the
figure, not the rate.
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
from pathlib import Path
from typing import Any

import aiohttp
from gcloud.aio.pubsub import PublisherClient, PubsubMessage, SubscriberClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loafer_core import Manager
from loafer_core.outcome import Outcome
from loafer_core.provider import Delivery
from loafer_core.translator import PassThroughTranslator
from loafer_pubsub import PubSubProvider, PubSubPublisher, PubSubRoute

PROJECT = "loafer-bench"


def bodies(n: int) -> list[bytes]:
    return [b'{"i": %d, "payload": "benchmark message"}' % i for i in range(n)]


class Admin:
    def __init__(self, host: str) -> None:
        self.root = f"http://{host}/v1/projects/{PROJECT}"

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"{self.root}/{path}", json=body) as response,
        ):
            return await response.json(content_type=None)

    async def create(self, name: str) -> None:
        await self.call("PUT", f"topics/{name}", {})
        topic = f"projects/{PROJECT}/topics/{name}"
        await self.call("PUT", f"subscriptions/{name}", {"topic": topic, "ackDeadlineSeconds": 60})

    async def delete(self, *names: str) -> None:
        for name in names:
            await self.call("DELETE", f"subscriptions/{name}")
            await self.call("DELETE", f"topics/{name}")

    async def left(self, name: str) -> int:
        answer = await self.call(
            "POST",
            f"subscriptions/{name}:pull",
            {"maxMessages": 1000, "returnImmediately": True},
        )
        return len((answer or {}).get("receivedMessages") or [])


# -- publishing ---------------------------------------------------------------------------


async def raw_publish(host: str, topic: str, payloads: list[bytes], batch: int) -> float:
    started = time.perf_counter()
    async with PublisherClient(api_root=f"http://{host}/v1") as client:
        path = client.topic_path(PROJECT, topic)
        for start in range(0, len(payloads), batch):
            messages = [PubsubMessage(body) for body in payloads[start : start + batch]]
            answer = await client.publish(path, messages, timeout=30)
            assert len(answer["messageIds"]) == len(messages)
    return time.perf_counter() - started


async def loafer_publish(host: str, topic: str, payloads: list[bytes], batch: int) -> float:
    started = time.perf_counter()
    async with PubSubPublisher(
        topic, project=PROJECT, emulator_host=host, max_batch=batch
    ) as publisher:
        sent = await publisher.publish_many(payloads)
    assert sent == len(payloads)
    return time.perf_counter() - started


# -- consuming ----------------------------------------------------------------------------


async def raw_consume(host: str, subscription: str, n: int, batch: int, decode: bool) -> float:
    started = time.perf_counter()
    async with SubscriberClient(api_root=f"http://{host}/v1") as client:
        path = client.subscription_path(PROJECT, subscription)
        count = 0
        while count < n:
            messages = await client.pull(path, batch, timeout=30)
            if decode:
                for message in messages:
                    json.loads(message.data or b"")
            if messages:
                await client.acknowledge(path, [m.ack_id for m in messages])
            count += len(messages)
    return time.perf_counter() - started


class CountingProvider(PubSubProvider):
    """PubSubProvider that signals when the n-th settle has returned."""

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


async def loafer_consume(
    host: str, subscription: str, n: int, concurrency: int, decode: bool
) -> float:
    async def handler(content: Any, metadata: Any) -> None:
        return None

    options: dict[str, Any] = {"project": PROJECT, "emulator_host": host}
    if not decode:
        options["translator"] = PassThroughTranslator()
    route = PubSubRoute(subscription, handler=handler, max_concurrency=concurrency, **options)
    options.pop("translator", None)
    provider = CountingProvider(subscription, n=n, **options)
    route.provider = provider  # same options, with a settle counter
    started = time.perf_counter()
    async with Manager([route]) as manager:
        await manager.wait_started()
        await provider.done.wait()
        if provider._acks is not None:
            await provider._acks.flush()  # the acks queued by the last settles are sent
        elapsed = time.perf_counter() - started
    return elapsed


# -- main ---------------------------------------------------------------------------------


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} msg/s"


async def one_round(args: argparse.Namespace, admin: Admin, round_: int) -> list[float]:
    n, host = args.messages, args.host
    payloads = bodies(n)
    raw_t, loafer_t = (f"bench-{side}-{uuid.uuid4().hex[:8]}" for side in ("raw", "loafer"))
    await admin.create(raw_t)
    await admin.create(loafer_t)
    try:
        if round_ % 2:
            pub_raw = await raw_publish(host, raw_t, payloads, args.batch)
            pub_loafer = await loafer_publish(host, loafer_t, payloads, args.batch)
        else:
            pub_loafer = await loafer_publish(host, loafer_t, payloads, args.batch)
            pub_raw = await raw_publish(host, raw_t, payloads, args.batch)
        if round_ % 2:
            con_raw = await raw_consume(host, raw_t, n, args.concurrency, args.decode)
            con_loafer = await loafer_consume(host, loafer_t, n, args.concurrency, args.decode)
        else:
            con_loafer = await loafer_consume(host, loafer_t, n, args.concurrency, args.decode)
            con_raw = await raw_consume(host, raw_t, n, args.concurrency, args.decode)
        assert await admin.left(loafer_t) == 0, "loafer left messages behind"
    finally:
        await admin.delete(raw_t, loafer_t)
    print(
        f"round {round_}: publish raw {rate(n, pub_raw)}, loafer {rate(n, pub_loafer)} "
        f"({pub_raw / pub_loafer:.2f}x); consume+ack raw {rate(n, con_raw)}, "
        f"loafer {rate(n, con_loafer)} ({con_raw / con_loafer:.2f}x)",
        flush=True,
    )
    return [pub_raw, pub_loafer, con_raw, con_loafer]


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--host", default=os.environ.get("PUBSUB_EMULATOR_HOST", "127.0.0.1:8085"))
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=100, help="= raw pull batch")
    parser.add_argument("--batch", type=int, default=1000, help="messages per publish call")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--no-decode",
        dest="decode",
        action="store_false",
        help="neither side decodes the JSON bodies (the route with PassThroughTranslator)",
    )
    args = parser.parse_args()
    n = args.messages
    admin = Admin(args.host)
    keys = ("pub_raw", "pub_loafer", "con_raw", "con_loafer")
    results: dict[str, list[float]] = {k: [] for k in keys}
    for round_ in range(1, args.rounds + 1):
        for key, value in zip(keys, await one_round(args, admin, round_), strict=True):
            results[key].append(value)
    med = {k: statistics.median(v) for k, v in results.items()}
    print()
    print(
        f"{n:,} messages on the Pub/Sub emulator, max_concurrency / raw pull batch "
        f"{args.concurrency}, publish calls of {args.batch}, "
        f"{'JSON decoded on both sides' if args.decode else 'no decoding'}, "
        f"{args.rounds} round(s), medians:"
    )
    print(
        f"  publish with confirms: raw gcloud-aio-pubsub {rate(n, med['pub_raw'])}, "
        f"PubSubPublisher {rate(n, med['pub_loafer'])}, "
        f"ratio {med['pub_raw'] / med['pub_loafer']:.2f}x (target >= 0.9x)"
    )
    print(
        f"  consume and ack:       raw gcloud-aio-pubsub {rate(n, med['con_raw'])}, "
        f"PubSubRoute {rate(n, med['con_loafer'])}, "
        f"ratio {med['con_raw'] / med['con_loafer']:.2f}x (target >= 1.0x)"
    )


if __name__ == "__main__":
    asyncio.run(main())
