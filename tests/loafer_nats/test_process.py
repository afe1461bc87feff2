"""A consumer process (``worker.py`` running ``Manager.run()``) killed with SIGKILL
mid-stream, or stopped with SIGTERM, on a real NATS JetStream."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from loafer_core.outcome import ACCEPT
from loafer_nats import NATSProvider
from tests._process import Child, Events, Spawn, python, python_env

from .conftest import NatsAdmin

pytestmark = pytest.mark.nats

WORKER = Path(__file__).with_name("worker.py")


def bodies(numbers: range) -> list[bytes]:
    return [f'{{"i": {n}}}'.encode() for n in numbers]


def start_worker(spawn: Spawn, url: str, stream: str, log: Path, *args: str) -> Child:
    """``worker.py`` in a subprocess, writing its events to ``log``."""
    command = python(WORKER, "--url", url, "--stream", stream, "--log", str(log), *args)
    return spawn(command, env=python_env())


async def test_sigkill_mid_stream_then_a_second_consumer_loses_nothing(
    admin: NatsAdmin, tmp_path: Path, spawn: Spawn
) -> None:
    total = 3000
    # what the killed process held comes back after ack_wait: keep it short
    stream = await admin.stream(ack_wait=3)
    await admin.put_many(stream, bodies(range(total)))
    log = tmp_path / "events.log"
    events = Events(log)
    first = start_worker(spawn, admin.url, stream, log, "--concurrency", "20", "--sleep", "0.01")
    await first.until(lambda: len(events.of("done")) >= 1000, 60, "1000 handled")
    assert await first.akill() == -signal.SIGKILL
    done_first = set(events.of("done", first))
    cut_short = set(events.of("start", first)) - done_first
    assert len(done_first) < total, "the first worker finished everything before the kill"

    second = start_worker(spawn, admin.url, stream, log, "--concurrency", "20")
    await second.until(lambda: set(events.of("done")) >= set(range(total)), 90, "all handled")
    await admin.wait_consumer(stream, num_pending=0, num_ack_pending=0, timeout=30)
    assert await second.aterminate(30) == 0, second.describe()

    handled = events.counts("done")
    assert set(handled) == set(range(total)), "messages lost"
    duplicates = sum(n - 1 for n in handled.values())
    assert cut_short <= set(events.of("done", second)), "an interrupted message was not redone"
    print(
        f"\nSIGKILL after {len(done_first)} of {total}: {len(cut_short)} cut short, "
        f"{duplicates} handled twice (acks lost with the process)"
    )
    assert await admin.messages(stream) == 0


async def test_sigterm_finishes_in_flight_and_leaves_nothing_unacked(
    admin: NatsAdmin, tmp_path: Path, spawn: Spawn
) -> None:
    total, concurrency = 40, 5
    # a long ack_wait: a message left unacked by the worker would stay unacked
    stream = await admin.stream(ack_wait=120)
    await admin.put_many(stream, bodies(range(total)))
    log = tmp_path / "events.log"
    events = Events(log)
    worker = start_worker(
        spawn, admin.url, stream, log, "--sleep", "1.0", "--concurrency", str(concurrency)
    )
    await worker.until(lambda: len(events.of("start")) >= concurrency, 30, "handlers started")
    assert await worker.aterminate(30) == 0, worker.describe()
    started, done = set(events.of("start", worker)), set(events.of("done", worker))
    assert started == done, f"in-flight handlers were cut short: {sorted(started - done)}"
    [released] = events.of("released", worker)
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
