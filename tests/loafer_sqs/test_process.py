"""Whole processes: a consumer killed with SIGKILL, a graceful SIGTERM, Loafer's tutorial.

The consumer runs ``Manager.run()`` in a subprocess against the moto server of this
test session; it records ``start N``/``done N`` events in a file, which the test reads
(moto and the child have no way to notify us: the waits poll, bounded).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loafer_core.testing import eventually
from tests.loafer_sqs.conftest import MakeQueue, queue_counts, send_bodies, wait_for_counts

pytestmark = pytest.mark.sqs

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"


def read_events(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        kind, _, number = line.partition(" ")
        if number:
            events.append((kind, int(number)))
    return events


@pytest.fixture
def spawn(aws_env: dict[str, str]) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start consumer processes; any still running at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, cwd: Path = APPS, **env: str) -> subprocess.Popen[bytes]:
        environment = {
            **os.environ,
            **aws_env,
            **env,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(cwd)]),
            "PYTHONUNBUFFERED": "1",
        }
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


async def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> tuple[int, str]:
    output = await asyncio.wait_for(asyncio.to_thread(process.communicate), timeout)
    return process.returncode, output[0].decode(errors="replace")


async def test_sigkill_mid_batch_loses_nothing(
    sqs: Any, make_queue: MakeQueue, spawn: Any, tmp_path: Path
) -> None:
    url = await make_queue(visibility=2)
    total = 60
    await send_bodies(sqs, url, [json.dumps({"i": i}) for i in range(total)])
    events = tmp_path / "events"
    env = {"QUEUE_URL": url, "EVENTS": str(events), "HANDLER_SECONDS": "0.3"}
    first = spawn("consumer.py", MAX_CONCURRENCY="10", **env)

    def done() -> set[int]:
        return {n for kind, n in read_events(events) if kind == "done"}

    def started() -> set[int]:
        return {n for kind, n in read_events(events) if kind == "start"}

    # kill it while a batch is being handled: some done, some started and unfinished
    await eventually(
        lambda: len(done()) >= 15 and len(started() - done()) > 0,
        timeout=30,
        what="a batch in flight",
    )
    first.send_signal(signal.SIGKILL)
    code, _ = await wait_exit(first, 10)
    assert code == -signal.SIGKILL
    cut_short = started() - done()
    assert cut_short, "nothing was in flight at the kill"

    second = spawn("consumer.py", MAX_CONCURRENCY="10", **env)
    await eventually(lambda: done() == set(range(total)), timeout=60, what="every message handled")
    # and the queue is empty: everything handled was deleted
    await wait_for_counts(sqs, url, (0, 0), 20)
    second.send_signal(signal.SIGTERM)
    code, output = await wait_exit(second, 30)
    assert code == 0, output
    assert done() == set(range(total))


async def test_sigterm_drains_and_releases(
    sqs: Any, make_queue: MakeQueue, spawn: Any, tmp_path: Path
) -> None:
    # a long visibility timeout: a message left invisible would show as "in flight"
    url = await make_queue(visibility=120)
    total = 30
    await send_bodies(sqs, url, [json.dumps({"i": i}) for i in range(total)])
    events = tmp_path / "events"
    process = spawn(
        "consumer.py",
        QUEUE_URL=url,
        EVENTS=str(events),
        HANDLER_SECONDS="1.5",
        MAX_CONCURRENCY="5",
    )

    def of(kind: str) -> set[int]:
        return {n for k, n in read_events(events) if k == kind}

    await eventually(lambda: len(of("start")) >= 5, timeout=30, what="five handlers running")
    process.send_signal(signal.SIGTERM)
    code, output = await wait_exit(process, 30)
    assert code == 0, output
    started, done = of("start"), of("done")
    assert started == done, f"in-flight handlers were cut short: {sorted(started - done)}"
    # handled ones deleted; everything else visible again at once (nothing in flight)
    assert await queue_counts(sqs, url) == (total - len(done), 0)


async def test_loafer_tutorial_runs_unchanged(sqs: Any, spawn: Any) -> None:
    url = (await sqs.create_queue(QueueName="loafer-test"))["QueueUrl"]
    try:
        process = spawn("-m", "foobar")
        for i in range(3):
            await sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"key": True, "n": i}))
        async with asyncio.timeout(30):
            while await queue_counts(sqs, url) != (0, 0):
                assert process.poll() is None, "the tutorial exited"
                await asyncio.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        code, output = await wait_exit(process, 30)
        assert code == 0, output
        for i in range(3):
            assert f"message is {{'key': True, 'n': {i}}}" in output, output
        assert "args is ({" in output
    finally:
        await sqs.delete_queue(QueueUrl=url)
