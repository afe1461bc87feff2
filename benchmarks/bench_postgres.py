"""PostgreSQL queue benchmark: loafer (PostgresRoute) vs a raw asyncpg loop, same run.

    python benchmarks/bench_postgres.py                     # 20,000 rows, 3 rounds
    python benchmarks/bench_postgres.py --messages 50000 --rounds 5 --concurrency 100

Both sides consume the same N rows, inserted beforehand into a fresh schema's queue
table (``loafer postgres init``'s tables), and are timed until the table is empty.

- raw: the simplest correct asyncpg loop, one connection: in a transaction, ``SELECT id,
  body ... ORDER BY id LIMIT --batch FOR UPDATE SKIP LOCKED``, ``json.loads`` each body,
  ``DELETE ... WHERE id = ANY($1)``, commit; until a SELECT finds nothing.
- loafer: a ``PostgresRoute`` (``max_concurrency=--concurrency``, ``batch_size=--batch``)
  with a no-op async handler and the default JSON translator, run by a ``Manager``
  (timed until it has stopped, its last ACCEPTs flushed): leases (one UPDATE per fetch),
  handlers, ACCEPTs coalesced into DELETEs.

The ratio is loafer's rate over the raw loop's; the median of ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loafer_core import Manager
from loafer_postgres import PostgresRoute
from loafer_postgres.schema import create_schema

QUEUE = "bench"


def bodies(n: int) -> list[bytes]:
    return [b'{"i": %d, "payload": "benchmark message"}' % i for i in range(n)]


async def fill(conn: Any, table: str, n: int) -> None:
    await conn.execute(
        f"INSERT INTO {table} (queue, body) SELECT $1, b FROM unnest($2::bytea[]) AS b",
        QUEUE,
        bodies(n),
    )
    await conn.execute(f"ANALYZE {table}")


async def raw(url: str, table: str, batch: int) -> int:
    conn = await asyncpg.connect(url)
    done = 0
    try:
        select = (
            f"SELECT id, body FROM {table} WHERE queue = $1 AND available_at <= now() "
            "AND (leased_until IS NULL OR leased_until <= now()) "
            f"ORDER BY id LIMIT {batch} FOR UPDATE SKIP LOCKED"
        )
        delete = f"DELETE FROM {table} WHERE id = ANY($1::bigint[])"
        while True:
            async with conn.transaction():
                rows = await conn.fetch(select, QUEUE)
                if not rows:
                    return done
                for row in rows:
                    json.loads(row["body"])
                await conn.execute(delete, [row["id"] for row in rows])
            done += len(rows)
    finally:
        await conn.close()


async def loafer(
    url: str, schema: str, table: str, n: int, concurrency: int, batch: int, **options: Any
) -> int:
    handled = 0
    all_handled = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        nonlocal handled
        handled += 1
        if handled >= n:
            all_handled.set()
        return True

    route = PostgresRoute(
        QUEUE,
        url=url,
        schema=schema,
        handler=handler,
        max_concurrency=concurrency,
        batch_size=batch,
        wait=1.0,
        **options,
    )
    async with Manager([route], shutdown_timeout=10):
        await all_handled.wait()
    # the manager's stop flushed the last ACCEPTs: the table is empty
    conn = await asyncpg.connect(url)
    try:
        left = await conn.fetchval(f"SELECT count(*) FROM {table}")
    finally:
        await conn.close()
    assert left == 0, f"{left} rows left"
    return handled


async def one_round(url: str, args: argparse.Namespace) -> tuple[float, float]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    table = f'"{schema}"."loafer_queue"'
    conn = await asyncpg.connect(url)
    try:
        await create_schema(conn, schema=schema, inbox_table=None)
        await fill(conn, table, args.messages)
        started = time.perf_counter()
        count = await raw(url, table, args.batch)
        raw_rate = count / (time.perf_counter() - started)
        assert count == args.messages, count
        await fill(conn, table, args.messages)
        started = time.perf_counter()
        count = await loafer(url, schema, table, args.messages, args.concurrency, args.batch)
        loafer_rate = count / (time.perf_counter() - started)
        assert count >= args.messages, count
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()
    return raw_rate, loafer_rate


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    results = []
    for i in range(args.rounds):
        raw_rate, loafer_rate = await one_round(args.url, args)
        results.append((raw_rate, loafer_rate))
        print(
            f"round {i + 1}: raw {raw_rate:,.0f} rows/s, loafer {loafer_rate:,.0f} rows/s, "
            f"ratio {loafer_rate / raw_rate:.2f}",
            flush=True,
        )
    raw_median = statistics.median(r for r, _ in results)
    loafer_median = statistics.median(lo for _, lo in results)
    ratio = statistics.median(lo / r for r, lo in results)
    print(
        f"median of {args.rounds}: raw {raw_median:,.0f} rows/s, loafer {loafer_median:,.0f} "
        f"rows/s, ratio {ratio:.2f} ({args.messages} rows, concurrency {args.concurrency}, "
        f"batch {args.batch})"
    )


if __name__ == "__main__":
    asyncio.run(main())
