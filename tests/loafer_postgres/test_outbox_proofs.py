"""Crash proofs of the outbox relay and the inbox: whole processes killed with SIGKILL.

- The relay killed between RabbitMQ's confirm of a row and the row's delete (a
  deterministic hook in ``outbox_worker.py``): then two relays finish the table. Every
  row arrives, the killed one twice; duplicates only, never a loss; a key's rows arrive
  in order (a duplicate only right after itself).
- A handler under the inbox killed mid-transaction (its insert not committed): the
  message is handled again and its write happens once; killed after the commit and
  before the broker's ack: the redelivery is skipped.
"""

from __future__ import annotations

import json
import signal
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from loafer_postgres.outbox import Outbox
from tests._process import Child, Events, Spawn, python, python_env
from tests.loafer_postgres._outbox_fixtures import PgSchema, pgo
from tests.loafer_rabbit.conftest import RabbitAdmin, open_admin

__all__ = ["pgo"]

pytestmark = [pytest.mark.postgres, pytest.mark.rabbit, pytest.mark.slow]

WORKER = Path(__file__).resolve().parent / "outbox_worker.py"


@pytest.fixture
async def rabbit(rabbit_url: str) -> AsyncIterator[RabbitAdmin]:
    async with open_admin(rabbit_url) as helper:
        yield helper


def start(spawn: Spawn, pgo: PgSchema, rabbit_url: str, **env: str) -> Child:
    settings = {"POSTGRES_URL": pgo.url, "RABBIT_URL": rabbit_url, "SCHEMA": pgo.name, **env}
    return spawn(python(WORKER), env=python_env(settings))


async def test_relay_killed_between_confirm_and_delete_duplicates_only(
    pgo: PgSchema, rabbit: RabbitAdmin, rabbit_url: str, spawn: Spawn, tmp_path: Path
) -> None:
    total, keys, kill_at = 1000, 10, 300
    queue = await rabbit.declare()
    outbox = Outbox(schema=pgo.name)
    async with pgo.pool.acquire() as conn:
        for start_at in range(0, total, 50):
            async with conn.transaction():
                for i in range(start_at, start_at + 50):
                    key = None if i % 11 == 0 else f"k{i % keys}"
                    body = json.dumps({"i": i, "key": key})
                    await outbox.publish(conn, "orders", body, key=key)
    events = Events(tmp_path / "events")
    env = {"MODE": "relay", "QUEUE": queue, "EVENTS": str(events.path), "LEASE": "3"}
    first = start(spawn, pgo, rabbit_url, KILL_AFTER_CONFIRM=str(kill_at), **env)
    assert await first.aexit_code(60) == -signal.SIGKILL, first.describe()
    (killed,) = events.of("confirmed")
    left = {json.loads(bytes(r["body"]))["i"] for r in await pgo.rows()}
    assert killed in left, "the row confirmed at the kill was deleted: the hook missed"
    assert len(left) < total

    relays = [start(spawn, pgo, rabbit_url, **env) for _ in range(2)]

    async def relayed() -> bool:
        return await pgo.count() == 0

    await relays[0].until(relayed, 90, "every row relayed and deleted")
    for relay in relays:
        assert await relay.aterminate(30) == 0, relay.describe()
    messages = [json.loads(m.body) for m in await rabbit.drain(queue)]
    counts = Counter(m["i"] for m in messages)
    assert set(counts) == set(range(total)), "rows were lost"
    assert counts[killed] >= 2, "the row killed after its confirm was not relayed again"
    duplicates = sum(counts.values()) - total
    by_key: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        if m["key"] is not None:
            by_key[m["key"]].append(m["i"])
    for key, order in by_key.items():
        assert order == sorted(order), f"key {key}: relayed out of order: {order}"
    assert await pgo.count("loafer_outbox_dead") == 0
    print(
        f"\nrelay SIGKILL after the confirm of row i={killed} ({total - len(left)} rows "
        f"deleted by then); 2 relays finished: {duplicates} duplicate(s), none lost, "
        "order per key kept"
    )
    # in flight at the kill (max_concurrency 20), and ACCEPTs queued for their DELETE
    assert duplicates <= 2 * 20, f"{duplicates} duplicates"


async def test_inbox_handler_killed_mid_transaction_writes_once(
    pgo: PgSchema, rabbit: RabbitAdmin, rabbit_url: str, spawn: Spawn, tmp_path: Path
) -> None:
    total, kill_in, kill_after = 600, 100, 300
    queue = await rabbit.declare()
    async with pgo.pool.acquire() as conn:
        await conn.execute(f'CREATE TABLE "{pgo.name}".effects (message int NOT NULL)')
    for i in range(total):
        await rabbit.put(queue, str(i).encode(), message_id=str(i))
    events = Events(tmp_path / "events")
    env = {"MODE": "inbox", "QUEUE": queue, "EVENTS": str(events.path)}

    async def effects(message: int | None = None) -> int:
        async with pgo.pool.acquire() as conn:
            if message is None:
                return int(await conn.fetchval(f'SELECT count(*) FROM "{pgo.name}".effects'))
            return int(
                await conn.fetchval(
                    f'SELECT count(*) FROM "{pgo.name}".effects WHERE message = $1', message
                )
            )

    first = start(spawn, pgo, rabbit_url, KILL_IN_TRANSACTION=str(kill_in), **env)
    assert await first.aexit_code(60) == -signal.SIGKILL, first.describe()
    assert events.counts("begun")[kill_in] == 1
    assert await effects(kill_in) == 0, "the killed transaction's write was committed"

    second = start(spawn, pgo, rabbit_url, KILL_AFTER_COMMIT=str(kill_after), **env)
    assert await second.aexit_code(60) == -signal.SIGKILL, second.describe()
    assert await effects(kill_after) == 1, "message 300's transaction did not commit"

    third = start(spawn, pgo, rabbit_url, **env)

    async def all_written() -> bool:
        return await effects() >= total

    await third.until(all_written, 90, "every message's write")
    await rabbit.wait_count(queue, 0, timeout=30)
    assert await third.aterminate(30) == 0, third.describe()

    async with pgo.pool.acquire() as conn:
        rows = await conn.fetch(
            f'SELECT message, count(*) AS n FROM "{pgo.name}".effects GROUP BY message'
        )
    written = {r["message"]: r["n"] for r in rows}
    assert set(written) == set(range(total)), "messages were lost"
    assert set(written.values()) == {1}, "a message's write happened twice"
    begun = events.counts("begun")
    assert begun[kill_in] == 2, "the message killed mid-transaction was not handled again"
    assert begun[kill_after] == 1, "the committed message was handled again"
    skipped = third.output.count("skipped: its inbox id")
    assert f"its inbox id '{kill_after}' was handled and committed" in third.output
    handled_twice = sum(1 for n in begun.values() if n > 1)
    print(
        f"\ninbox: killed mid-transaction at {kill_in} (handled again), after the commit "
        f"at {kill_after} (skipped); {handled_twice} message(s) began twice, "
        f"{skipped} redelivery(ies) skipped, every write once"
    )
