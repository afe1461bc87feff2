"""A consumer process (``worker.py`` running ``Manager.run()``) killed with SIGKILL
mid-stream, or stopped with SIGTERM, on a real NATS JetStream."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loafer_core.outcome import ACCEPT
from loafer_nats import NATSProvider

from .conftest import NatsAdmin

pytestmark = pytest.mark.nats

WORKER = Path(__file__).with_name("worker.py")
ROOT = Path(__file__).resolve().parents[2]


def bodies(numbers: range) -> list[bytes]:
    return [f'{{"i": {n}}}'.encode() for n in numbers]


class Worker:
    """``worker.py`` in a subprocess, with its event log."""

    def __init__(self, url: str, stream: str, log: Path, *args: str) -> None:
        self.log = log
        self.stderr_path = log.with_suffix(f".{uuid.uuid4().hex[:6]}.stderr")
        self.stderr = self.stderr_path.open("wb")
        path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                *("--url", url, "--stream", stream, "--log", str(log)),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            env=env,
        )

    def events(self, kind: str) -> list[int]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == kind and int(parts[2]) == self.process.pid:
                out.append(int(parts[1]))
        return out

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> None:
        """Poll the log file (another process writes it: there is no event to await)."""
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    if self.process.poll() is not None:
                        raise AssertionError(f"worker exited early:\n{self.output()}")
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(
                f"condition not met in {timeout}s; worker output:\n{self.output()[-5000:]}"
            ) from None

    async def exit_code(self, timeout: float) -> int:
        return await asyncio.to_thread(self.process.wait, timeout)

    def output(self) -> str:
        self.stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.stderr.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.close()


def all_events(log: Path, kind: str) -> list[int]:
    return [
        int(line.split()[1]) for line in log.read_text().splitlines() if line.split()[0] == kind
    ]


async def test_sigkill_mid_stream_then_a_second_consumer_loses_nothing(
    admin: NatsAdmin, tmp_path: Path, workers: list[Worker]
) -> None:
    total = 3000
    # what the killed process held comes back after ack_wait: keep it short
    stream = await admin.stream(ack_wait=3)
    await admin.put_many(stream, bodies(range(total)))
    log = tmp_path / "events.log"
    first = Worker(admin.url, stream, log, "--concurrency", "20", "--sleep", "0.01")
    workers.append(first)
    await first.wait_for(lambda: len(first.events("done")) >= 1000, 60)
    first.process.send_signal(signal.SIGKILL)
    assert await first.exit_code(10) == -signal.SIGKILL
    done_first = set(first.events("done"))
    cut_short = set(first.events("start")) - done_first
    assert len(done_first) < total, "the first worker finished everything before the kill"

    second = Worker(admin.url, stream, log, "--concurrency", "20")
    workers.append(second)
    await second.wait_for(lambda: set(all_events(log, "done")) >= set(range(total)), 90)
    await admin.wait_consumer(stream, num_pending=0, num_ack_pending=0, timeout=30)
    second.process.send_signal(signal.SIGTERM)
    assert await second.exit_code(30) == 0, second.output()

    handled = Counter(all_events(log, "done"))
    assert set(handled) == set(range(total)), "messages lost"
    duplicates = sum(n - 1 for n in handled.values())
    assert cut_short <= set(second.events("done")), "an interrupted message was not redone"
    print(
        f"\nSIGKILL after {len(done_first)} of {total}: {len(cut_short)} cut short, "
        f"{duplicates} handled twice (acks lost with the process)"
    )
    assert await admin.messages(stream) == 0


async def test_sigterm_finishes_in_flight_and_leaves_nothing_unacked(
    admin: NatsAdmin, tmp_path: Path, workers: list[Worker]
) -> None:
    total, concurrency = 40, 5
    # a long ack_wait: a message left unacked by the worker would stay unacked
    stream = await admin.stream(ack_wait=120)
    await admin.put_many(stream, bodies(range(total)))
    log = tmp_path / "events.log"
    worker = Worker(admin.url, stream, log, "--sleep", "1.0", "--concurrency", str(concurrency))
    workers.append(worker)
    await worker.wait_for(lambda: len(worker.events("start")) >= concurrency, 30)
    worker.process.send_signal(signal.SIGTERM)
    assert await worker.exit_code(30) == 0, worker.output()
    started, done = set(worker.events("start")), set(worker.events("done"))
    assert started == done, f"in-flight handlers were cut short: {sorted(started - done)}"
    [released] = worker.events("released")
    info = await admin.consumer(stream)
    # acked: the handled ones; given back (nak'ed, redeliverable at once): `released`
    assert info.num_ack_pending == released, (info.num_ack_pending, released)
    assert released == 0, "a drain with the stream full left fetched messages unhandled"
    assert info.num_pending == total - len(done)
    # and everything left is available at once to the next consumer
    rest = NATSProvider(stream, url=admin.url, consumer="work", poll_timeout=0.5)
    await rest.start(total)
    seen: set[int] = set()
    try:
        async with asyncio.timeout(10):
            while len(seen) < total - len(done):
                for delivery in await rest.fetch(total):
                    seen.add(json.loads(delivery.body)["i"])
                    await rest.settle(delivery, ACCEPT)
    finally:
        await rest.close()
    assert seen == set(range(total)) - done
    await admin.wait_consumer(stream, num_pending=0, num_ack_pending=0, timeout=10)
