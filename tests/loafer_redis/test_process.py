"""Whole processes: a consumer killed with SIGKILL mid-stream, a graceful SIGTERM.

The consumer (``worker.py``) runs ``Manager.run()`` in a subprocess and writes a
``done N`` line per handled message to a file, which the test reads (a child process
cannot notify us: the waits poll, bounded).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from loafer_core.testing import eventually
from tests._process import Child, Events, Spawn, python, python_env
from tests.loafer_redis.conftest import RedisAdmin

pytestmark = pytest.mark.redis

WORKER = Path(__file__).resolve().parent / "worker.py"


def start_worker(spawn: Spawn, redis_url: str, **env: str) -> Child:
    """``worker.py`` in a subprocess (its settings in ``env``)."""
    return spawn(python(WORKER), env=python_env({"REDIS_URL": redis_url, **env}))


async def test_sigkill_mid_stream_loses_nothing(
    admin: RedisAdmin, redis_url: str, spawn: Spawn, tmp_path: Path
) -> None:
    total, concurrency = 3000, 20
    stream = await admin.stream()
    await admin.put_many(stream, [json.dumps({"i": i}).encode() for i in range(total)])
    events = Events(tmp_path / "events")
    env = {
        "STREAM": stream,
        "EVENTS": str(events.path),
        "HANDLER_SECONDS": "0.01",
        "MAX_CONCURRENCY": str(concurrency),
        "LEASE": "2",
    }
    first = start_worker(spawn, redis_url, **env)
    await first.until(lambda: len(events.counts("done")) >= 500, 60, "500 messages handled")
    assert await first.akill() == -signal.SIGKILL
    handled_before = len(events.counts("done"))
    assert handled_before < total, "the first consumer finished before it was killed"
    dead_pending = await admin.pending(stream)
    assert dead_pending, "nothing was pending for the killed consumer"

    second = start_worker(spawn, redis_url, **env)
    await second.until(lambda: len(events.counts("done")) == total, 90, "every message handled")
    await until_pending_empty(admin, stream)
    assert await second.aterminate(30) == 0, second.describe()
    counts = events.counts("done")
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
    admin: RedisAdmin, redis_url: str, spawn: Spawn, tmp_path: Path
) -> None:
    total = 500
    stream = await admin.stream()
    await admin.put_many(stream, [json.dumps({"i": i}).encode() for i in range(total)])
    events = Events(tmp_path / "events")
    # a long lease: an entry left pending would stay so for the whole test
    env = {
        "STREAM": stream,
        "EVENTS": str(events.path),
        "HANDLER_SECONDS": "0.05",
        "MAX_CONCURRENCY": "10",
        "LEASE": "120",
    }
    process = start_worker(spawn, redis_url, **env)
    await process.until(lambda: len(events.counts("done")) >= 50, 60, "50 messages handled")
    assert await process.aterminate(30) == 0, process.describe()
    handled = events.counts("done")
    assert len(handled) < total, "it finished before the SIGTERM"
    assert await admin.pending(stream) == [], "entries left pending after a graceful drain"
    info = await admin.client.xinfo_consumers(stream, "loafer")
    assert info == [], f"the drained consumer is still in the group: {info}"

    # the rest is there for the next consumer at once, and nothing handled comes back
    second = start_worker(spawn, redis_url, **env)
    await second.until(lambda: len(events.counts("done")) == total, 60, "every message handled")
    assert await second.aterminate(30) == 0, second.describe()
    counts = events.counts("done")
    assert set(counts) == set(range(total))
    assert sum(counts.values()) == total, "a message handled before the drain came back"
