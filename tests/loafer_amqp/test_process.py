"""A consumer process (``worker.py`` running ``Manager.run()``) killed with SIGKILL, or
stopped with SIGTERM, on RabbitMQ's AMQP 1.0 plugin."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loafer_amqp import AMQPPublisher

from .conftest import Broker

pytestmark = pytest.mark.amqp

WORKER = Path(__file__).with_name("worker.py")
ROOT = Path(__file__).resolve().parents[2]


def bodies(numbers: range) -> list[bytes]:
    return [f'{{"i": {n}}}'.encode() for n in numbers]


class Worker:
    """``worker.py`` in a subprocess, with its event log."""

    def __init__(self, url: str, address: str, log: Path, *args: str) -> None:
        self.log = log
        self.stderr_path = log.with_suffix(f".{uuid.uuid4().hex[:6]}.stderr")
        self.stderr = self.stderr_path.open("wb")
        path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                *("--url", url, "--address", address, "--log", str(log)),
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
            events = self.log.read_text() if self.log.exists() else ""
            raise AssertionError(
                f"condition not met in {timeout}s; events:\n{events[-3000:]}\n"
                f"worker output:\n{self.output()[-5000:]}"
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


async def publish(url: str, address: str, payloads: list[bytes]) -> None:
    async with AMQPPublisher(url, address) as publisher:
        await asyncio.gather(*(publisher.publish(b) for b in payloads))


async def test_sigkill_mid_batch_then_restart_handles_every_message(
    amqp_url: str, broker: Broker, queue: str, tmp_path: Path, workers: list[Worker]
) -> None:
    address = f"/amq/queue/{queue}"
    total = 100
    await publish(amqp_url, address, bodies(range(total)))
    log = tmp_path / "events.log"
    first = Worker(
        amqp_url, address, log, "--sleep", "0.02", "--concurrency", "10", "--hang-after", "30"
    )
    workers.append(first)
    # 30 handled, then handlers stuck mid-message: kill the process there.
    await first.wait_for(lambda: len(first.events("hang")) >= 1, 60)
    first.process.send_signal(signal.SIGKILL)
    assert await first.exit_code(10) == -signal.SIGKILL
    in_flight = set(first.events("start")) - set(first.events("done"))
    assert in_flight and set(first.events("hang")) <= in_flight

    second = Worker(amqp_url, address, log, "--concurrency", "10")
    workers.append(second)
    await second.wait_for(lambda: set(all_events(log, "done")) >= set(range(total)), 60)
    # Every message handled at least once; the interrupted ones were redelivered.
    assert in_flight <= set(second.events("done"))
    second.process.send_signal(signal.SIGTERM)
    assert await second.exit_code(30) == 0, second.output()
    await broker.wait_depth(queue, 0)
    assert await broker.depth(f"{queue}.dlq") == 0


async def test_sigterm_finishes_in_flight_releases_the_rest_and_exits_zero(
    amqp_url: str, broker: Broker, queue: str, tmp_path: Path, workers: list[Worker]
) -> None:
    address = f"/amq/queue/{queue}"
    total, concurrency, sleep = 20, 5, 2.0
    await publish(amqp_url, address, bodies(range(total)))
    log = tmp_path / "events.log"
    worker = Worker(
        amqp_url, address, log, "--sleep", str(sleep), "--concurrency", str(concurrency)
    )
    workers.append(worker)
    await worker.wait_for(lambda: len(worker.events("start")) == concurrency, 30)
    signalled = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    assert await worker.exit_code(30) == 0, worker.output()
    took = time.monotonic() - signalled
    started = worker.events("start")
    # In-flight handlers finished (and were accepted: they are not back on the queue) ...
    assert len(started) == concurrency
    assert sorted(worker.events("done")) == sorted(started)
    assert worker.events("exit") == [0]
    # ... the reactor thread ended ...
    assert worker.events("threads") == [0]
    # ... the process did not wait for more than their remaining time ...
    assert took < sleep + 5, took
    # ... and every unstarted message is ready on the queue at once (none held unsettled).
    assert await broker.depth(queue) == total - concurrency
    remaining = {
        int(m.body.decode().split(":")[1].strip(" }")) for m in await broker.get_all(queue)
    }
    assert remaining == set(range(total)) - set(started)
