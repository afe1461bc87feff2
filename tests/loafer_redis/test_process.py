"""Whole processes: a consumer killed with SIGKILL mid-stream, a graceful SIGTERM.

The consumer (``worker.py``) runs ``Manager.run()`` in a subprocess and writes a
``done N`` line per handled message to a file, which the test reads (a child process
cannot notify us: the waits poll, bounded).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loafer_core.testing import eventually
from tests.loafer_redis.conftest import RedisAdmin

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "worker.py"


def done_counts(path: Path) -> collections.Counter[int]:
    """How many times each message was handled (a line cut by a SIGKILL is skipped)."""
    counts: collections.Counter[int] = collections.Counter()
    if not path.exists():
        return counts
    for line in path.read_text().splitlines():
        kind, _, number = line.partition(" ")
        if kind == "done" and number.isdigit():
            counts[int(number)] += 1
    return counts


@pytest.fixture
def spawn(redis_url: str) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start worker processes; any still running at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> subprocess.Popen[bytes]:
        environment = {
            **os.environ,
            "REDIS_URL": redis_url,
            **env,
            "PYTHONPATH": str(ROOT / "src"),
            "PYTHONUNBUFFERED": "1",
        }
        process = subprocess.Popen(
            [sys.executable, str(WORKER)],
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


async def test_sigkill_mid_stream_loses_nothing(
    admin: RedisAdmin, spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    total, concurrency = 3000, 20
    stream = await admin.stream()
    await admin.put_many(stream, [json.dumps({"i": i}).encode() for i in range(total)])
    events = tmp_path / "events"
    env = {
        "STREAM": stream,
        "EVENTS": str(events),
        "HANDLER_SECONDS": "0.01",
        "MAX_CONCURRENCY": str(concurrency),
        "LEASE": "2",
    }
    first = spawn(**env)
    await eventually(
        lambda: len(done_counts(events)) >= 500, timeout=60, what="500 messages handled"
    )
    first.send_signal(signal.SIGKILL)
    code, _ = await wait_exit(first, 10)
    assert code == -signal.SIGKILL
    handled_before = len(done_counts(events))
    assert handled_before < total, "the first consumer finished before it was killed"
    dead_pending = await admin.pending(stream)
    assert dead_pending, "nothing was pending for the killed consumer"

    second = spawn(**env)
    await eventually(
        lambda: len(done_counts(events)) == total, timeout=90, what="every message handled"
    )
    await until_pending_empty(admin, stream)
    second.send_signal(signal.SIGTERM)
    code, output = await wait_exit(second, 30)
    assert code == 0, output
    counts = done_counts(events)
    assert set(counts) == set(range(total)), "messages were lost"
    duplicates = sum(counts.values()) - total
    # what the killed one had handled but not yet acknowledged, at most: its in-flight
    # handlers and the acknowledgements of one turn of its event loop
    print(
        f"\nSIGKILL after {handled_before} of {total}: {len(dead_pending)} entries pending for "
        f"the dead consumer, all reclaimed; {duplicates} handled twice"
    )
    assert duplicates <= 2 * concurrency, f"{duplicates} duplicates"


async def until_pending_empty(admin: RedisAdmin, stream: str, timeout: float = 20) -> None:
    async def empty() -> bool:
        return not await admin.pending(stream)

    await eventually(empty, timeout=timeout, what="nothing pending")


async def test_sigterm_drains_and_leaves_nothing_pending(
    admin: RedisAdmin, spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    total = 500
    stream = await admin.stream()
    await admin.put_many(stream, [json.dumps({"i": i}).encode() for i in range(total)])
    events = tmp_path / "events"
    # a long lease: an entry left pending would stay so for the whole test
    env = {
        "STREAM": stream,
        "EVENTS": str(events),
        "HANDLER_SECONDS": "0.05",
        "MAX_CONCURRENCY": "10",
        "LEASE": "120",
    }
    process = spawn(**env)
    await eventually(lambda: len(done_counts(events)) >= 50, timeout=60, what="50 messages handled")
    process.send_signal(signal.SIGTERM)
    code, output = await wait_exit(process, 30)
    assert code == 0, output
    handled = done_counts(events)
    assert len(handled) < total, "it finished before the SIGTERM"
    assert await admin.pending(stream) == [], "entries left pending after a graceful drain"
    info = await admin.client.xinfo_consumers(stream, "loafer")
    assert info == [], f"the drained consumer is still in the group: {info}"

    # the rest is there for the next consumer at once, and nothing handled comes back
    second = spawn(**env)
    await eventually(
        lambda: len(done_counts(events)) == total, timeout=60, what="every message handled"
    )
    second.send_signal(signal.SIGTERM)
    code, output = await wait_exit(second, 30)
    assert code == 0, output
    counts = done_counts(events)
    assert set(counts) == set(range(total))
    assert sum(counts.values()) == total, "a message handled before the drain came back"
