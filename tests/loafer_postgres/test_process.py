"""Whole processes: a consumer killed with SIGKILL mid-stream, a graceful SIGTERM.

The consumer (``worker.py``) runs ``Manager.run()`` in a subprocess and writes a
``done N`` line per handled message to a file, which the test reads (the waits poll,
bounded).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from loafer_core.testing import eventually
from tests._process import Child, Events, Spawn, python, python_env
from tests.loafer_postgres.conftest import PgAdmin

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WORKER = Path(__file__).resolve().parent / "worker.py"


def start_worker(spawn: Spawn, pg: PgAdmin, **env: str) -> Child:
    """``worker.py`` in a subprocess (its settings in ``env``)."""
    return spawn(
        python(WORKER),
        env=python_env({"POSTGRES_URL": pg.url, "SCHEMA": pg.schema, **env}),
    )


async def leased(pg: PgAdmin, queue: str) -> int:
    count: int = await pg.pool.fetchval(
        f"SELECT count(*) FROM {pg.table()} WHERE queue = $1 AND lease IS NOT NULL", queue
    )
    return count


async def test_sigkill_mid_stream_loses_nothing(pg: PgAdmin, spawn: Spawn, tmp_path: Path) -> None:
    total, concurrency = 3000, 20
    queue = "crash"
    await pg.put_many(queue, [json.dumps({"i": i}).encode() for i in range(total)])
    events = Events(tmp_path / "events")
    env = {
        "QUEUE": queue,
        "EVENTS": str(events.path),
        "HANDLER_SECONDS": "0.01",
        "MAX_CONCURRENCY": str(concurrency),
        "LEASE": "2",
    }
    first = start_worker(spawn, pg, **env)
    await first.until(lambda: len(events.counts("done")) >= total // 3, 60, "a third handled")
    assert await first.akill() == -signal.SIGKILL
    handled_before = len(events.counts("done"))
    assert handled_before < total, "the first consumer finished before it was killed"
    held = await leased(pg, queue)
    assert held, "nothing was leased by the killed consumer"

    second = start_worker(spawn, pg, **env)
    await second.until(lambda: len(events.counts("done")) == total, 90, "every row handled")

    async def empty() -> bool:
        return await pg.rows(queue) == []

    await eventually(empty, timeout=20, what="the table empty")
    assert await second.aterminate(30) == 0, second.describe()
    counts = events.counts("done")
    assert set(counts) == set(range(total)), "rows were lost"
    duplicates = sum(counts.values()) - total
    print(
        f"\nSIGKILL after {handled_before} of {total}: {held} rows leased by the dead "
        f"consumer, all leased again once lapsed; {duplicates} handled twice"
    )
    # what the killed one had handled but not yet deleted: its in-flight handlers and
    # one DELETE of accepted rows
    assert duplicates <= 2 * concurrency, f"{duplicates} duplicates"
    assert await pg.dead(queue) == []


async def test_sigterm_drains_and_leaves_nothing_leased(
    pg: PgAdmin, spawn: Spawn, tmp_path: Path
) -> None:
    total = 500
    queue = "drain"
    await pg.put_many(queue, [json.dumps({"i": i}).encode() for i in range(total)])
    events = Events(tmp_path / "events")
    # a long lease: a row left leased would stay so for the whole test
    env = {
        "QUEUE": queue,
        "EVENTS": str(events.path),
        "HANDLER_SECONDS": "0.05",
        "MAX_CONCURRENCY": "10",
        "LEASE": "120",
    }
    process = start_worker(spawn, pg, **env)
    await process.until(lambda: len(events.counts("done")) >= 50, 60, "50 rows handled")
    assert await process.aterminate(30) == 0, process.describe()
    handled = events.counts("done")
    assert len(handled) < total, "it finished before the SIGTERM"
    assert await leased(pg, queue) == 0, "rows left leased after a graceful drain"
    rows = await pg.rows(queue)
    assert len(rows) == total - len(handled)
    assert all(r["attempts"] == 0 for r in rows), "a row given back kept its attempt"

    # the rest is there for the next consumer at once, and nothing handled comes back
    second = start_worker(spawn, pg, **env)
    await second.until(lambda: len(events.counts("done")) == total, 60, "every row handled")
    assert await second.aterminate(30) == 0, second.describe()
    counts = events.counts("done")
    assert set(counts) == set(range(total))
    assert sum(counts.values()) == total, "a row handled before the drain came back"
