"""A consumer process (``worker.py`` running ``Manager.run()``) killed with SIGKILL, or
stopped with SIGTERM, on RabbitMQ's AMQP 1.0 plugin."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from loafer_amqp import AMQPPublisher
from tests._process import Child, Events, Spawn, python, python_env

from .conftest import Broker

pytestmark = pytest.mark.amqp

WORKER = Path(__file__).with_name("worker.py")


def bodies(numbers: range) -> list[bytes]:
    return [f'{{"i": {n}}}'.encode() for n in numbers]


def start_worker(spawn: Spawn, url: str, address: str, log: Path, *args: str) -> Child:
    """``worker.py`` in a subprocess, writing its events to ``log``."""
    command = python(WORKER, "--url", url, "--address", address, "--log", str(log), *args)
    return spawn(command, env=python_env())


async def publish(url: str, address: str, payloads: list[bytes]) -> None:
    async with AMQPPublisher(url, address) as publisher:
        await asyncio.gather(*(publisher.publish(b) for b in payloads))


async def test_sigkill_mid_batch_then_restart_handles_every_message(
    amqp_url: str, broker: Broker, queue: str, tmp_path: Path, spawn: Spawn
) -> None:
    address = f"/amq/queue/{queue}"
    total = 100
    await publish(amqp_url, address, bodies(range(total)))
    log = tmp_path / "events.log"
    events = Events(log)
    first = start_worker(
        spawn,
        amqp_url,
        address,
        log,
        "--sleep",
        "0.02",
        "--concurrency",
        "10",
        "--hang-after",
        "30",
    )
    # 30 handled, then handlers stuck mid-message: kill the process there.
    await first.until(lambda: events.of("hang", first), 60, "a handler hanging")
    assert await first.akill() == -signal.SIGKILL
    in_flight = set(events.of("start", first)) - set(events.of("done", first))
    assert in_flight and set(events.of("hang", first)) <= in_flight

    second = start_worker(spawn, amqp_url, address, log, "--concurrency", "10")
    await second.until(lambda: set(events.of("done")) >= set(range(total)), 60, "all done")
    # Every message handled at least once; the interrupted ones were redelivered.
    assert in_flight <= set(events.of("done", second))
    assert await second.aterminate(30) == 0, second.describe()
    await broker.wait_depth(queue, 0)
    assert await broker.depth(f"{queue}.dlq") == 0


async def test_sigterm_finishes_in_flight_releases_the_rest_and_exits_zero(
    amqp_url: str, broker: Broker, queue: str, tmp_path: Path, spawn: Spawn
) -> None:
    address = f"/amq/queue/{queue}"
    total, concurrency, sleep = 20, 5, 2.0
    await publish(amqp_url, address, bodies(range(total)))
    log = tmp_path / "events.log"
    events = Events(log)
    worker = start_worker(
        spawn, amqp_url, address, log, "--sleep", str(sleep), "--concurrency", str(concurrency)
    )
    await worker.until(lambda: len(events.of("start")) == concurrency, 30, "handlers started")
    signalled = time.monotonic()
    assert await worker.aterminate(30) == 0, worker.describe()
    took = time.monotonic() - signalled
    started = events.of("start", worker)
    # In-flight handlers finished (and were accepted: they are not back on the queue) ...
    assert len(started) == concurrency
    assert sorted(events.of("done", worker)) == sorted(started)
    assert events.of("exit", worker) == [0]
    # ... the reactor thread ended ...
    assert events.of("threads", worker) == [0]
    # ... the process did not wait for more than their remaining time ...
    assert took < sleep + 5, took
    # ... and every unstarted message is ready on the queue at once (none held unsettled).
    assert await broker.depth(queue) == total - concurrency
    remaining = {
        int(m.body.decode().split(":")[1].strip(" }")) for m in await broker.get_all(queue)
    }
    assert remaining == set(range(total)) - set(started)
