"""A consumer process (``worker.py`` running ``Manager.run()``) killed with SIGKILL
mid-stream, or stopped with SIGTERM, on Tansu."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from loafer_core.outcome import ACCEPT
from loafer_kafka import KafkaProvider
from tests._process import Child, Events, Spawn, python, python_env

from .conftest import KafkaAdmin, lag

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WORKER = Path(__file__).with_name("worker.py")


def bodies(numbers: range) -> list[bytes]:
    return [f'{{"i": {n}}}'.encode() for n in numbers]


def start_worker(spawn: Spawn, url: str, topic: str, log: Path, *args: str) -> Child:
    """``worker.py`` in a subprocess, writing its events to ``log``."""
    command = python(WORKER, "--url", url, "--topic", topic, "--log", str(log), *args)
    return spawn(command, env=python_env())


async def test_sigkill_mid_stream_then_a_second_consumer_loses_nothing(
    admin: KafkaAdmin, kafka_url: str, tmp_path: Path, spawn: Spawn
) -> None:
    total = 3000
    topic = await admin.topic(partitions=3)
    await admin.put_many(topic, bodies(range(total)))
    log = tmp_path / "events.log"
    events = Events(log)
    first = start_worker(spawn, kafka_url, topic, log, "--concurrency", "20", "--sleep", "0.01")
    await first.until(lambda: len(events.of("done")) >= 1000, 90, "1000 handled")
    assert await first.akill() == -signal.SIGKILL
    done_first = set(events.of("done", first))
    cut_short = set(events.of("start", first)) - done_first
    assert len(done_first) < total, "the first worker finished everything before the kill"

    second = start_worker(spawn, kafka_url, topic, log, "--concurrency", "20")
    await second.until(lambda: set(events.of("done")) >= set(range(total)), 120, "all handled")
    assert await second.aterminate(30) == 0, second.describe()
    assert await lag(kafka_url, topic, f"loafer-{topic}") == 0, "offsets left uncommitted"

    handled = events.counts("done")
    assert set(handled) == set(range(total)), "messages lost"
    duplicates = sum(n - 1 for n in handled.values())
    assert cut_short <= set(events.of("done", second)), "an interrupted message was not redone"
    print(
        f"\nSIGKILL after {len(done_first)} of {total}: {len(cut_short)} cut short, "
        f"{duplicates} handled twice (settled after the last commit)"
    )


async def test_sigterm_finishes_in_flight_and_commits_them(
    admin: KafkaAdmin, kafka_url: str, tmp_path: Path, spawn: Spawn
) -> None:
    total, concurrency = 40, 5
    topic = await admin.topic(partitions=3)
    await admin.put_many(topic, bodies(range(total)))
    log = tmp_path / "events.log"
    events = Events(log)
    worker = start_worker(
        spawn, kafka_url, topic, log, "--sleep", "1.0", "--concurrency", str(concurrency)
    )
    await worker.until(lambda: len(events.of("start")) >= concurrency, 30, "handlers started")
    assert await worker.aterminate(30) == 0, worker.describe()
    started, done = set(events.of("start", worker)), set(events.of("done", worker))
    assert started == done, f"in-flight handlers were cut short: {sorted(started - done)}"
    # what was not handled goes to the group's next member: what was handled, never
    rest = KafkaProvider(topic, url=kafka_url, dead_letter_topic=None, poll_timeout=0.5)
    await rest.start(total)
    seen: set[int] = set()
    try:
        async with asyncio.timeout(20):
            while len(seen) < total - len(done):
                for delivery in await rest.fetch(total):
                    n = json.loads(delivery.body)["i"]
                    assert n not in done, f"message {n}, handled and committed, came back"
                    seen.add(n)
                    await rest.settle(delivery, ACCEPT)
    finally:
        await rest.close()
    assert seen == set(range(total)) - done
    assert await lag(kafka_url, topic, f"loafer-{topic}") == 0
