"""Outbox relay benchmark: loafer's OutboxRelay vs a raw asyncpg + aio-pika relay loop.

    python benchmarks/bench_outbox.py                      # 10,000 rows, 3 rounds
    python benchmarks/bench_outbox.py --rows 20000 --rounds 1 --keys 100

Both relay the same N outbox rows (written by ``Outbox.publish_many`` in a fresh schema)
to a durable RabbitMQ queue, persistent messages with publisher confirms, and are timed
from connecting until the last row is deleted.

- raw: one asyncpg connection looping ``BEGIN; SELECT ... ORDER BY id LIMIT batch FOR
  UPDATE SKIP LOCKED; publish the batch pipelined (asyncio.gather of aio-pika publishes,
  each awaiting its confirm); DELETE ... WHERE id = ANY($1); COMMIT`` (no per-key
  ordering, no leases: a crash holds nothing; the simplest correct relay);
- loafer: ``OutboxRelay`` (the ``postgres`` provider leasing rows, per-key head-of-line,
  each row forwarded through ``RabbitPublisher`` and deleted once confirmed) with
  ``max_concurrency`` = the raw batch, run by a ``Manager``.

``--keys K`` gives the rows K ordering keys (round robin; 0: none): the relay then has
at most K rows in flight (one per key), the raw loop ignores keys.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loafer_core import Manager
from loafer_core.testing import eventually
from loafer_postgres.outbox import Outbox
from loafer_postgres.relay import OutboxRelay
from loafer_postgres.schema import create_schema
from loafer_rabbit import RabbitPublisher


async def fill(url: str, schema: str, rows: int, keys: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await create_schema(conn, schema=schema)
        outbox = Outbox(schema=schema)
        body = b'{"i": 0, "payload": "benchmark message"}'
        for start in range(0, rows, 1000):
            count = min(1000, rows - start)
            async with conn.transaction():
                if keys:
                    for i in range(start, start + count):
                        await outbox.publish(conn, "bench", body, key=f"k{i % keys}")
                else:
                    await outbox.publish_many(conn, "bench", [body] * count)
    finally:
        await conn.close()


async def drop(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def queue_op(url: str, name: str, op: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        if op == "declare":
            await channel.declare_queue(name, durable=True)
            return 0
        if op == "delete":
            await channel.queue_delete(name)
            return 0
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)


async def remaining(conn: Any, schema: str) -> int:
    return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".loafer_outbox'))


async def raw_relay(pg_url: str, amqp_url: str, schema: str, queue: str, batch: int) -> float:
    select = (
        f'SELECT id, destination, key, body, headers FROM "{schema}".loafer_outbox '
        "WHERE queue = 'default' AND available_at <= now() ORDER BY id LIMIT $1 "
        "FOR UPDATE SKIP LOCKED"
    )
    delete = f'DELETE FROM "{schema}".loafer_outbox WHERE id = ANY($1::bigint[])'
    started = time.perf_counter()
    conn = await asyncpg.connect(pg_url)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        while True:
            async with conn.transaction():
                rows = await conn.fetch(select, batch)
                if not rows:
                    break
                await asyncio.gather(
                    *(
                        exchange.publish(
                            aio_pika.Message(
                                bytes(r["body"]),
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            ),
                            routing_key=queue,
                        )
                        for r in rows
                    )
                )
                await conn.execute(delete, [r["id"] for r in rows])
        return time.perf_counter() - started
    finally:
        await connection.close()
        await conn.close()


async def loafer_relay(pg_url: str, amqp_url: str, schema: str, queue: str, batch: int) -> float:
    started = time.perf_counter()
    route = OutboxRelay(
        {"bench": RabbitPublisher(amqp_url, routing_key=queue)},
        url=pg_url,
        schema=schema,
        max_concurrency=batch,
        batch_size=batch,
        poll_interval=1,
    )
    conn = await asyncpg.connect(pg_url)
    try:
        async with Manager([route]):

            async def relayed() -> bool:
                return await remaining(conn, schema) == 0

            await eventually(relayed, timeout=600, interval=0.02, what="every row relayed")
            elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return elapsed


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} rows/s"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100, help="raw batch = max_concurrency")
    parser.add_argument("--keys", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.rows
    raw_times: list[float] = []
    loafer_times: list[float] = []
    for round_ in range(1, args.rounds + 1):
        tag = uuid.uuid4().hex[:8]
        raw_s, loafer_s = f"bench_outbox_raw_{tag}", f"bench_outbox_loafer_{tag}"
        raw_q, loafer_q = f"bench-outbox-raw-{tag}", f"bench-outbox-loafer-{tag}"
        for q in (raw_q, loafer_q):
            await queue_op(args.amqp, q, "declare")
        try:
            await fill(args.postgres, raw_s, n, args.keys)
            await fill(args.postgres, loafer_s, n, args.keys)
            sides = [
                ("raw", raw_relay, raw_s, raw_q, raw_times),
                ("loafer", loafer_relay, loafer_s, loafer_q, loafer_times),
            ]
            if not round_ % 2:  # alternate which goes first: drift on a shared machine
                sides.reverse()
            for _, run, schema, queue, times in sides:
                times.append(await run(args.postgres, args.amqp, schema, queue, args.batch))
            for q in (raw_q, loafer_q):
                assert await queue_op(args.amqp, q, "depth") == n, f"{q}: not {n} messages"
        finally:
            for q in (raw_q, loafer_q):
                await queue_op(args.amqp, q, "delete")
            await drop(args.postgres, raw_s)
            await drop(args.postgres, loafer_s)
        print(
            f"round {round_}: raw {rate(n, raw_times[-1])}, loafer {rate(n, loafer_times[-1])} "
            f"({raw_times[-1] / loafer_times[-1]:.2f}x)",
            flush=True,
        )
    raw, lo = statistics.median(raw_times), statistics.median(loafer_times)
    ratios = [r / x for r, x in zip(raw_times, loafer_times, strict=True)]
    print()
    print(
        f"{n:,} outbox rows -> RabbitMQ (persistent, confirms), batch/max_concurrency "
        f"{args.batch}, keys {args.keys or 'none'}, {args.rounds} round(s), medians:"
    )
    print(
        f"  raw asyncpg+aio-pika loop {rate(n, raw)}, OutboxRelay {rate(n, lo)}, "
        f"ratio {raw / lo:.2f}x (median of rounds {statistics.median(ratios):.2f}x)"
    )


if __name__ == "__main__":
    asyncio.run(main())
