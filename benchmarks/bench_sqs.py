"""SQS benchmark: loafer (SQSRoute + Manager) vs a raw aiobotocore loop, same moto server.

    python benchmarks/bench_sqs.py [--messages 1000] [--concurrency 100] [--backlog 200]
                                   [--rounds 3]

Starts ``moto_server`` in a separate process (or uses ``--endpoint``). For each side a
producer keeps the backlog at most ``--backlog`` messages ahead of the consumer (moto's
calls cost O(queue depth), so a deep queue would measure moto, not the consumer).

- raw: one loop that receives 10 (long polling) and deletes them with one
  DeleteMessageBatch, counting messages;
- loafer: an ``SQSRoute`` with a no-op async handler, ``max_concurrency`` as given.

Runs ``--rounds`` alternating rounds; prints each round's messages/s and API calls per
message (counted at the HTTP level, setup excluded), then the medians and their ratio.
Targets: ratio >= 0.9, loafer calls/message <= 0.25.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from aiobotocore.session import get_session

from loafer_core import Manager
from loafer_sqs import SQSRoute

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
SETUP = {"GetQueueUrl", "GetQueueAttributes", "CreateQueue", "DeleteQueue"}


class Counter:
    """Counts SQS calls by operation at the HTTP level (``before-send``)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.largest = 0

    def __call__(self, request: Any, **kwargs: Any) -> None:
        target = request.headers.get("X-Amz-Target", b"")
        if isinstance(target, bytes):
            target = target.decode()
        op = str(target).rsplit(".", 1)[-1]
        self.calls[op] = self.calls.get(op, 0) + 1
        if request.body:
            try:
                entries = json.loads(request.body).get("Entries", [])
            except (ValueError, AttributeError):
                entries = []
            self.largest = max(self.largest, len(entries))

    def work_calls(self) -> int:
        return sum(n for op, n in self.calls.items() if op not in SETUP)

    def session(self) -> Any:
        session = get_session()
        session.register("before-send.sqs", self)
        return session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    binary = Path(sys.executable).with_name("moto_server")
    if not binary.exists():
        found = shutil.which("moto_server")
        if found is None:
            raise SystemExit(
                "moto_server not found: pip install 'moto[server]' (in loafer-core's test "
                "extra), or pass --endpoint URL of an SQS endpoint"
            )
        binary = Path(found)
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("moto_server did not start")


PRODUCERS = 4


async def producer(client: Any, url: str, total: int, backlog: int, consumed: Any) -> None:
    """Send ``total`` messages in batches of 10, staying at most ``backlog`` ahead.

    Several senders run at once, so that the producer is not what limits a fast
    consumer (the consumer is measured at saturation).
    """
    sent = 0

    async def sender() -> None:
        nonlocal sent
        while sent < total:
            if sent - consumed() >= backlog:
                await asyncio.sleep(0.005)  # pacing: the consumer's count is a plain int
                continue
            start = sent
            n = min(10, total - start)
            sent += n
            entries = [
                {"Id": str(i), "MessageBody": json.dumps({"i": start + i})} for i in range(n)
            ]
            await client.send_message_batch(QueueUrl=url, Entries=entries)

    await asyncio.gather(*(sender() for _ in range(PRODUCERS)))


async def run_raw(endpoint: str, total: int, backlog: int) -> tuple[float, Counter]:
    options = {"endpoint_url": endpoint, "region_name": REGION, **CREDENTIALS}
    counter = Counter()
    async with (
        get_session().create_client("sqs", **options) as admin,
        counter.session().create_client("sqs", **options) as client,
    ):
        url = (await admin.create_queue(QueueName=f"bench-raw-{uuid.uuid4().hex[:8]}"))["QueueUrl"]
        done = 0
        feeding = asyncio.create_task(producer(admin, url, total, backlog, lambda: done))
        started = time.perf_counter()
        while done < total:
            response = await client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = response.get("Messages", [])
            if not messages:
                continue
            await client.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
            done += len(messages)
        elapsed = time.perf_counter() - started
        await feeding
        await admin.delete_queue(QueueUrl=url)
    return total / elapsed, counter


async def run_loafer(
    endpoint: str, total: int, backlog: int, concurrency: int
) -> tuple[float, Counter]:
    options = {"endpoint_url": endpoint, "region_name": REGION, **CREDENTIALS}
    counter = Counter()
    async with get_session().create_client("sqs", **options) as admin:
        url = (await admin.create_queue(QueueName=f"bench-loafer-{uuid.uuid4().hex[:8]}"))[
            "QueueUrl"
        ]
        handled = 0
        finished = asyncio.Event()

        async def handler(message: Any, metadata: Any) -> bool:
            nonlocal handled
            handled += 1
            if handled >= total:
                finished.set()
            return True

        route = SQSRoute(
            url,
            {"options": {"WaitTimeSeconds": 1}, "session": counter.session(), **options},
            handler=handler,
            max_concurrency=concurrency,
        )
        feeding = asyncio.create_task(producer(admin, url, total, backlog, lambda: handled))
        async with Manager([route]) as manager:
            await manager.wait_started()
            started = time.perf_counter()
            await finished.wait()
            elapsed = time.perf_counter() - started
        await feeding
        await admin.delete_queue(QueueUrl=url)
    return total / elapsed, counter


def report(name: str, rate: float, counter: Counter, total: int) -> None:
    calls = counter.work_calls()
    ops = ", ".join(f"{op} {n}" for op, n in sorted(counter.calls.items()) if op not in SETUP)
    print(
        f"{name:>7}: {rate:8.1f} msg/s   {calls / total:.3f} calls/message   "
        f"largest batch {counter.largest}   ({ops})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--backlog", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="alternating raw/loafer runs")
    parser.add_argument("--endpoint", default=os.environ.get("LOAFER_TEST_SQS_ENDPOINT"))
    args = parser.parse_args()
    moto = None
    endpoint = args.endpoint
    if not endpoint:
        moto, endpoint = start_moto()
    try:
        print(
            f"SQS on {endpoint}: {args.messages} messages, backlog <= {args.backlog}, "
            f"loafer max_concurrency={args.concurrency}"
        )
        raw_rates: list[float] = []
        loafer_rates: list[float] = []
        for round_number in range(1, args.rounds + 1):
            raw_rate, raw_counter = await run_raw(endpoint, args.messages, args.backlog)
            loafer_rate, loafer_counter = await run_loafer(
                endpoint, args.messages, args.backlog, args.concurrency
            )
            raw_rates.append(raw_rate)
            loafer_rates.append(loafer_rate)
            print(f"round {round_number}:")
            report("raw", raw_rate, raw_counter, args.messages)
            report("loafer", loafer_rate, loafer_counter, args.messages)
        raw_median = statistics.median(raw_rates)
        loafer_median = statistics.median(loafer_rates)
        print(
            f"median of {args.rounds}: raw {raw_median:.1f} msg/s, loafer {loafer_median:.1f} "
            f"msg/s, ratio {loafer_median / raw_median:.2f}x the raw loop (target >= 0.9)"
        )
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
