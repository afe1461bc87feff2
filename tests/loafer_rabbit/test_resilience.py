"""Failure handling on a real RabbitMQ: dropped connections, broker restarts, SIGKILL,
SIGTERM. None of them may lose a message or stop the consumer."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loafer_core import Manager
from loafer_core.testing import eventually
from loafer_rabbit import RabbitPublisher, RabbitRoute
from tests._process import Child, Events, Spawn, python, python_env
from tests.loafer_rabbit.conftest import (
    RabbitAdmin,
    SilentBroker,
    close_connections,
    rabbitmqctl_available,
)

pytestmark = pytest.mark.rabbit

needs_ctl = pytest.mark.skipif(
    not rabbitmqctl_available(), reason="needs rabbitmqctl on this machine (and root)"
)

WORKER = Path(__file__).with_name("worker.py")


def bodies(numbers: range) -> list[bytes]:
    return [f'{{"i": {n}}}'.encode() for n in numbers]


class Recorder:
    """Collects handled message numbers and wakes waiters when a condition holds."""

    def __init__(self) -> None:
        self.handled: list[int] = []
        self.changed = asyncio.Event()

    def add(self, n: int) -> None:
        self.handled.append(n)
        self.changed.set()

    async def wait(self, condition: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


async def wait_healthy(route: RabbitRoute, timeout: float = 30) -> None:
    """Poll the provider's health until it consumes again (no event exposes that)."""
    await eventually(route.provider.health, timeout=timeout, interval=0.1, what="healthy again")


@needs_ctl
async def test_connection_drop_loses_nothing_and_logs_dead_deliveries_once(
    admin: RabbitAdmin, rabbit_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = await admin.declare()
    connection_name = f"loafer-test-{uuid.uuid4().hex[:8]}"
    recorder = Recorder()

    async def handler(content: Any, metadata: Any) -> bool:
        await asyncio.sleep(0.1)  # slow enough that deliveries are in flight at the drop
        recorder.add(content["i"])
        return True

    route = RabbitRoute(
        name,
        url=rabbit_url,
        handler=handler,
        max_concurrency=20,
        connection_name=connection_name,
        reconnect_interval=0.5,
        poll_timeout=1.0,
    )
    caplog.set_level(logging.INFO, logger="loafer_rabbit")
    async with RabbitPublisher(rabbit_url, routing_key=name) as publisher:
        await publisher.publish_many(bodies(range(0, 600)))  # before
        async with Manager([route]) as manager:
            await manager.wait_started()
            await recorder.wait(lambda: len(recorder.handled) >= 30, 30)
            assert await close_connections(connection_name) == 1
            await publisher.publish_many(bodies(range(600, 700)))  # during
            await wait_healthy(route)
            await publisher.publish_many(bodies(range(700, 800)))  # after
            await recorder.wait(lambda: set(recorder.handled) >= set(range(800)), 90)
    assert set(recorder.handled) == set(range(800))
    assert await admin.count(name) == 0
    # Deliveries in flight at the drop were settled on a dead channel: dropped, not errors.
    assert route.provider.dropped_deliveries >= 1
    assert route.provider.reconnects == 1  # the loafer_reconnects metric
    ours = [r.getMessage() for r in caplog.records if r.name == "loafer_rabbit"]
    # Settling them was dropped without an error, logged once for all of them.
    assert len([m for m in ours if "the channel was lost" in m]) == 1, ours
    resumed = [m for m in ours if "consuming again after a reconnect" in m]
    assert len(resumed) == 1, ours


@needs_ctl
async def test_consumer_recovers_when_its_queue_is_deleted_and_comes_back(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    name = await admin.declare()
    recorder = Recorder()

    async def handler(content: Any, metadata: Any) -> bool:
        recorder.add(content["i"])
        return True

    route = RabbitRoute(
        name, url=rabbit_url, handler=handler, reconnect_interval=0.5, poll_timeout=0.5
    )
    async with Manager([route]) as manager:
        await manager.wait_started()
        await admin.put(name, bodies(range(1))[0])
        await recorder.wait(lambda: 0 in recorder.handled, 15)
        await admin.delete(name)
        # The broker cancels the consumer; the route keeps running and retries.
        async with asyncio.timeout(15):
            while True:
                if not await route.provider.health():
                    break
                await asyncio.sleep(0.1)
        await admin.declare(name)
        await wait_healthy(route)
        await admin.put(name, bodies(range(1, 2))[0])
        await recorder.wait(lambda: 1 in recorder.handled, 30)
    assert recorder.handled == [0, 1]


@pytest.mark.serial  # stop_app: every other test on RabbitMQ would fail meanwhile
@pytest.mark.slow
@needs_ctl
async def test_broker_restart_loses_nothing(admin: RabbitAdmin, rabbit_url: str) -> None:
    name = await admin.declare()
    recorder = Recorder()

    async def handler(content: Any, metadata: Any) -> bool:
        await asyncio.sleep(0.01)
        recorder.add(content["i"])
        return True

    route = RabbitRoute(
        name,
        url=rabbit_url,
        handler=handler,
        max_concurrency=20,
        reconnect_interval=1.0,
        poll_timeout=1.0,
    )
    async with RabbitPublisher(rabbit_url, routing_key=name) as publisher:
        await publisher.publish_many(bodies(range(0, 300)))
    async with Manager([route]) as manager:
        await manager.wait_started()
        await recorder.wait(lambda: len(recorder.handled) >= 50, 30)
        await asyncio.to_thread(
            subprocess.run, ["rabbitmqctl", "stop_app"], check=True, capture_output=True
        )
        await asyncio.to_thread(
            subprocess.run, ["rabbitmqctl", "start_app"], check=True, capture_output=True
        )
        await wait_healthy(route, timeout=60)
        async with RabbitPublisher(rabbit_url, routing_key=name) as publisher:
            await publisher.publish_many(bodies(range(300, 400)))
        await recorder.wait(lambda: set(recorder.handled) >= set(range(400)), 90)
    assert set(recorder.handled) == set(range(400))


# -- subprocess tests -------------------------------------------------------------------


def start_worker(spawn: Spawn, url: str, queue: str, log: Path, *args: str) -> Child:
    """``worker.py`` in a subprocess, writing its events to ``log``."""
    command = python(WORKER, "--url", url, "--queue", queue, "--log", str(log), *args)
    return spawn(command, env=python_env())


async def test_sigkill_mid_batch_then_restart_handles_every_message(
    admin: RabbitAdmin, rabbit_url: str, tmp_path: Path, spawn: Spawn
) -> None:
    name = await admin.declare()
    total = 100
    await admin.put_many(name, bodies(range(total)))
    log = tmp_path / "events.log"
    events = Events(log)
    first = start_worker(
        spawn, rabbit_url, name, log, "--sleep", "0.05", "--concurrency", "10", "--hang-after", "30"
    )
    # 30 handled, then handlers stuck mid-message: kill the process there.
    await first.until(lambda: events.of("hang", first), 60, "a handler hanging")
    assert await first.akill() == -signal.SIGKILL
    in_flight = set(events.of("start", first)) - set(events.of("done", first))
    assert in_flight and set(events.of("hang", first)) <= in_flight

    second = start_worker(spawn, rabbit_url, name, log, "--concurrency", "10")
    await second.until(lambda: set(events.of("done")) >= set(range(total)), 60, "all done")
    # Every message handled at least once; the interrupted ones were redelivered.
    assert in_flight <= set(events.of("done", second))
    assert await second.aterminate(30) == 0, second.describe()
    assert await admin.count(name) == 0


async def test_sigterm_finishes_in_flight_handlers_and_leaves_the_rest_on_the_queue(
    admin: RabbitAdmin, rabbit_url: str, tmp_path: Path, spawn: Spawn
) -> None:
    name = await admin.declare()
    total, concurrency, sleep = 20, 5, 3.0
    await admin.put_many(name, bodies(range(total)))
    log = tmp_path / "events.log"
    events = Events(log)
    worker = start_worker(
        spawn, rabbit_url, name, log, "--sleep", str(sleep), "--concurrency", str(concurrency)
    )
    await worker.until(lambda: len(events.of("start")) == concurrency, 30, "handlers started")
    signalled = time.monotonic()
    assert await worker.aterminate(30) == 0, worker.describe()
    took = time.monotonic() - signalled
    started = events.of("start", worker)
    # In-flight handlers finished (and were acked: they are not back on the queue) ...
    assert sorted(events.of("done", worker)) == sorted(started)
    assert len(started) == concurrency
    assert events.of("exit", worker) == [0]
    # ... the process did not wait for more than their remaining time ...
    assert took < sleep + 5, took
    # ... and every unstarted message is ready on the queue at once (none held unacked).
    assert await admin.count(name) == total - concurrency
    remaining = {int(m.body.decode().split(":")[1].strip(" }")) for m in await admin.drain(name)}
    assert remaining == set(range(total)) - set(started)


async def test_sigterm_while_the_route_is_still_connecting_exits(
    silent: tuple[SilentBroker, str], tmp_path: Path, spawn: Spawn
) -> None:
    # The broker accepts the TCP connection and never answers: the route is connecting
    # (for up to connect_timeout, 30 s) when the process is told to stop.
    broker, url = silent
    log = tmp_path / "events.log"
    worker = start_worker(spawn, url, "q", log, "--shutdown-timeout", "5")
    async with asyncio.timeout(30):
        await broker.accepted.wait()
    assert await worker.aterminate(15) == 0, worker.describe()
    assert Events(log).of("exit", worker) == [0]
