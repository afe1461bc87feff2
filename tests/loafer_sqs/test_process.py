"""Whole processes: a consumer killed with SIGKILL, a graceful SIGTERM, Loafer's tutorial.

The consumer runs ``Manager.run()`` in a subprocess against the moto server of this
test session; it records ``start N``/``done N`` events in a file, which the test reads
(moto and the child have no way to notify us: the waits poll, bounded).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests._process import Child, Events, Spawn, python, python_env
from tests.loafer_sqs.conftest import MakeQueue, queue_counts, send_bodies, wait_for_counts

pytestmark = pytest.mark.sqs

APPS = Path(__file__).resolve().parent / "apps"


def start_app(spawn: Spawn, aws_env: dict[str, str], *args: str, **env: str) -> Child:
    """``python ARGS`` in ``apps/`` (importable there), against this session's moto."""
    return spawn(python(*args), cwd=APPS, env=python_env({**aws_env, **env}, APPS))


async def test_sigkill_mid_batch_loses_nothing(
    sqs: Any, make_queue: MakeQueue, spawn: Spawn, aws_env: dict[str, str], tmp_path: Path
) -> None:
    url = await make_queue(visibility=2)
    total = 60
    await send_bodies(sqs, url, [json.dumps({"i": i}) for i in range(total)])
    events = Events(tmp_path / "events")
    env = {"QUEUE_URL": url, "EVENTS": str(events.path), "HANDLER_SECONDS": "0.3"}
    first = start_app(spawn, aws_env, "consumer.py", MAX_CONCURRENCY="10", **env)

    def done() -> set[int]:
        return set(events.of("done"))

    def started() -> set[int]:
        return set(events.of("start"))

    # kill it while a batch is being handled: some done, some started and unfinished
    await first.until(
        lambda: len(done()) >= 15 and len(started() - done()) > 0, 30, "a batch in flight"
    )
    assert await first.akill() == -signal.SIGKILL
    cut_short = started() - done()
    assert cut_short, "nothing was in flight at the kill"

    second = start_app(spawn, aws_env, "consumer.py", MAX_CONCURRENCY="10", **env)
    await second.until(lambda: done() == set(range(total)), 60, "every message handled")
    # and the queue is empty: everything handled was deleted
    await wait_for_counts(sqs, url, (0, 0), 20)
    assert await second.aterminate(30) == 0, second.describe()
    assert done() == set(range(total))


async def test_sigterm_drains_and_releases(
    sqs: Any, make_queue: MakeQueue, spawn: Spawn, aws_env: dict[str, str], tmp_path: Path
) -> None:
    # a long visibility timeout: a message left invisible would show as "in flight"
    url = await make_queue(visibility=120)
    total = 30
    await send_bodies(sqs, url, [json.dumps({"i": i}) for i in range(total)])
    events = Events(tmp_path / "events")
    process = start_app(
        spawn,
        aws_env,
        "consumer.py",
        QUEUE_URL=url,
        EVENTS=str(events.path),
        HANDLER_SECONDS="1.5",
        MAX_CONCURRENCY="5",
    )
    await process.until(lambda: len(events.of("start")) >= 5, 30, "five handlers running")
    assert await process.aterminate(30) == 0, process.describe()
    started, done = set(events.of("start")), set(events.of("done"))
    assert started == done, f"in-flight handlers were cut short: {sorted(started - done)}"
    # handled ones deleted; everything else visible again at once (nothing in flight)
    assert await queue_counts(sqs, url) == (total - len(done), 0)


async def test_loafer_tutorial_runs_unchanged(
    sqs: Any, spawn: Spawn, aws_env: dict[str, str]
) -> None:
    url = (await sqs.create_queue(QueueName="loafer-test"))["QueueUrl"]
    try:
        process = start_app(spawn, aws_env, "-m", "foobar")
        for i in range(3):
            await sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"key": True, "n": i}))

        async def drained() -> bool:
            return await queue_counts(sqs, url) == (0, 0)

        await process.until(drained, 30, "the queue drained")
        assert await process.aterminate(30) == 0, process.describe()
        output = process.output
        for i in range(3):
            assert f"message is {{'key': True, 'n': {i}}}" in output, output
        assert "args is ({" in output
    finally:
        await sqs.delete_queue(QueueUrl=url)
