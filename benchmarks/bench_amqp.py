"""AMQP 1.0 benchmark: loafer vs raw python-qpid-proton, same run, same broker.

    python benchmarks/bench_amqp.py                    # 30,000 durable messages
    python benchmarks/bench_amqp.py --messages 5000 --url amqp://guest:guest@127.0.0.1:5672

Four timed phases on one fresh durable queue (declared over AMQP 0-9-1 with aio-pika):

1. raw publish: a proton sender sends within its credit and counts `accepted` outcomes;
2. raw consume: a proton receiver with prefetch 200 accepts in ``on_message``;
3. loafer publish: ``AMQPPublisher.publish`` for every message, gathered (pipelined);
4. loafer consume: an ``AMQPRoute`` with a no-op handler, ``max_concurrency=200``, under
   a ``Manager``, timed until the handler has seen every message;
5. loafer publish_many: one ``AMQPPublisher.publish_many`` call for all of them
   (reported as ``pub_many`` against the same raw publish figure; leaves the queue full,
   then the queue is deleted).

Each consume phase starts with the queue holding exactly ``--messages`` messages (the
publish phase before it filled it). The five phases run ``--rounds`` times (a fresh
queue each round); prints the median msg/s of each, the loafer / raw ratios of the
medians, and each round's ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

try:
    import aio_pika  # only to declare, inspect and delete the queue (AMQP 0-9-1)
except ImportError:  # pragma: no cover
    raise SystemExit("bench_amqp needs aio-pika for its queue: pip install aio-pika") from None
from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container

from loafer_amqp import AMQPPublisher, AMQPRoute
from loafer_core import Manager

BODY = b'{"order": 12345, "items": [1, 2, 3], "note": "benchmark"}'


class _RawSender(MessagingHandler):
    def __init__(self, url: str, address: str, total: int, user: str, password: str) -> None:
        super().__init__()
        self.url, self.address, self.total = url, address, total
        self.user, self.password = user, password
        self.sent = self.accepted = 0
        self.started = self.finished = 0.0

    def on_start(self, event: Any) -> None:
        conn = event.container.connect(
            self.url, user=self.user, password=self.password, allowed_mechs="PLAIN"
        )
        self.started = time.perf_counter()
        event.container.create_sender(conn, self.address)

    def on_sendable(self, event: Any) -> None:
        sender = event.sender
        while sender.credit and self.sent < self.total:
            sender.send(Message(body=BODY, inferred=True, durable=True))
            self.sent += 1

    def on_accepted(self, event: Any) -> None:
        self.accepted += 1
        if self.accepted == self.total:
            self.finished = time.perf_counter()
            event.connection.close()

    def on_rejected(self, event: Any) -> None:
        raise RuntimeError("broker rejected a benchmark message")


class _RawReceiver(MessagingHandler):
    def __init__(self, url: str, address: str, total: int, user: str, password: str) -> None:
        super().__init__(prefetch=200, auto_accept=False)
        self.url, self.address, self.total = url, address, total
        self.user, self.password = user, password
        self.received = 0
        self.started = self.finished = 0.0

    def on_start(self, event: Any) -> None:
        conn = event.container.connect(
            self.url, user=self.user, password=self.password, allowed_mechs="PLAIN"
        )
        self.started = time.perf_counter()
        event.container.create_receiver(conn, self.address)

    def on_message(self, event: Any) -> None:
        self.accept(event.delivery)
        self.received += 1
        if self.received == self.total:
            self.finished = time.perf_counter()
            event.connection.close()


def _run_raw(handler: Any) -> float:
    """Run a proton container in a thread (as loafer does) and return its elapsed time."""
    error: list[BaseException] = []

    def run() -> None:
        try:
            Container(handler).run()
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return float(handler.finished - handler.started)


async def _depth(pika_url: str, queue: str) -> int:
    connection = await aio_pika.connect(pika_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def _loafer_publish(url: str, address: str, total: int, many: bool) -> float:
    async with AMQPPublisher(url, address) as publisher:
        started = time.perf_counter()
        if many:
            await publisher.publish_many(BODY for _ in range(total))
        else:
            await asyncio.gather(*(publisher.publish(BODY) for _ in range(total)))
        return time.perf_counter() - started


async def _loafer_consume(url: str, address: str, total: int, concurrency: int) -> float:
    seen = 0
    all_seen = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        nonlocal seen
        seen += 1
        if seen == total:
            all_seen.set()
        return True

    route = AMQPRoute(address, url=url, handler=handler, max_concurrency=concurrency)
    started = time.perf_counter()
    async with Manager([route]):
        await all_seen.wait()
        elapsed = time.perf_counter() - started
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672")
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="medians are reported")
    args = parser.parse_args()
    parts = urlsplit(args.url)
    user, password = parts.username or "guest", parts.password or "guest"
    host = f"{parts.hostname}:{parts.port or 5672}"
    raw_url = f"amqp://{host}"
    pika_url = f"amqp://{user}:{password}@{host}/"
    total = args.messages

    times: dict[str, list[float]] = {
        k: [] for k in ("raw_pub", "raw_con", "lf_pub", "lf_con", "lf_many")
    }
    connection = await aio_pika.connect(pika_url)
    channel = await connection.channel()
    try:
        for _ in range(args.rounds):
            queue = f"loafer-bench-amqp-{uuid.uuid4().hex[:8]}"
            address = f"/amq/queue/{queue}"
            await channel.declare_queue(queue, durable=True)
            try:
                times["raw_pub"].append(
                    await asyncio.to_thread(
                        _run_raw, _RawSender(raw_url, address, total, user, password)
                    )
                )
                assert await _depth(pika_url, queue) == total
                times["raw_con"].append(
                    await asyncio.to_thread(
                        _run_raw, _RawReceiver(raw_url, address, total, user, password)
                    )
                )
                times["lf_pub"].append(await _loafer_publish(args.url, address, total, False))
                assert await _depth(pika_url, queue) == total
                times["lf_con"].append(
                    await _loafer_consume(args.url, address, total, args.concurrency)
                )
                times["lf_many"].append(await _loafer_publish(args.url, address, total, True))
                assert await _depth(pika_url, queue) == total
            finally:
                await channel.queue_delete(queue)
    finally:
        await connection.close()

    def rate(seconds: float) -> float:
        return total / seconds

    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"AMQP 1.0 ({host}), {total:,} durable messages of {len(BODY)} bytes, "
        f"median of {args.rounds} round(s)"
    )
    print(f"{'phase':<10} {'raw proton':>14} {'loafer':>14} {'ratio':>7}   loafer/raw per round")
    phases = (
        ("publish", "raw_pub", "lf_pub"),
        ("pub_many", "raw_pub", "lf_many"),
        ("consume", "raw_con", "lf_con"),
    )
    for name, raw, lf in phases:
        rounds = " ".join(f"{a / b:.2f}" for a, b in zip(times[raw], times[lf], strict=True))
        print(
            f"{name:<10} {rate(med[raw]):>10,.0f} msg/s {rate(med[lf]):>8,.0f} msg/s "
            f"{med[raw] / med[lf]:>6.2f}x   {rounds}"
        )


if __name__ == "__main__":
    asyncio.run(main())
