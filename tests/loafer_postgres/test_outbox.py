"""Outbox.publish: the row is written in the caller's transaction, never committed by it."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from loafer_core.errors import ConfigurationError
from loafer_core.testing import eventually
from loafer_postgres.outbox import MESSAGE_ID_HEADER, Outbox
from tests.loafer_postgres._outbox_fixtures import PgSchema, pgo

__all__ = ["pgo"]

pytestmark = pytest.mark.postgres


@dataclasses.dataclass
class OrderPlaced:
    id: int


async def test_commit_writes_the_row_with_its_fields(pgo: PgSchema) -> None:
    outbox = Outbox(schema=pgo.name, name="shop")
    async with pgo.pool.acquire() as conn, conn.transaction():
        message_id = await outbox.publish(
            conn, "orders", {"id": 7}, headers={"tenant": "a", "n": 3}, key="customer-42"
        )
    (row,) = await pgo.rows()
    assert row["queue"] == "shop"
    assert row["destination"] == "orders"
    assert row["key"] == "customer-42"
    assert json.loads(row["body"]) == {"id": 7}
    headers = json.loads(row["headers"])
    assert headers == {"tenant": "a", "n": "3", MESSAGE_ID_HEADER: message_id}
    assert row["attempts"] == 0 and row["lease"] is None


async def test_rollback_writes_nothing(pgo: PgSchema) -> None:
    outbox = Outbox(schema=pgo.name)
    async with pgo.pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="boom"):
            async with conn.transaction():
                await conn.execute(f'CREATE TABLE "{pgo.name}".orders (id int)')
                await outbox.publish(conn, "orders", b"x")
                raise RuntimeError("boom")
    assert await pgo.count() == 0


async def test_not_visible_before_commit(pgo: PgSchema) -> None:
    outbox = Outbox(schema=pgo.name)
    async with pgo.pool.acquire() as conn:
        tr = conn.transaction()
        await tr.start()
        await outbox.publish(conn, "orders", "text body")
        assert await pgo.count() == 0  # another connection does not see it
        await tr.commit()
    (row,) = await pgo.rows()
    assert bytes(row["body"]) == b"text body"


async def test_refuses_a_connection_outside_a_transaction(pgo: PgSchema) -> None:
    outbox = Outbox(schema=pgo.name)
    async with pgo.pool.acquire() as conn:
        with pytest.raises(ConfigurationError, match="not inside a transaction"):
            await outbox.publish(conn, "orders", b"x")
    with pytest.raises(ConfigurationError, match="a pool is not a transaction"):
        await outbox.publish(pgo.pool, "orders", b"x")
    assert await pgo.count() == 0


async def test_typed_body_delay_and_message_id(pgo: PgSchema) -> None:
    outbox = Outbox(schema=pgo.name)
    async with pgo.pool.acquire() as conn, conn.transaction():
        got = await outbox.publish(conn, "orders", OrderPlaced(5), delay=60, message_id="m-1")
        now = await conn.fetchval("SELECT now()")
    assert got == "m-1"
    (row,) = await pgo.rows()
    assert json.loads(row["body"]) == {"id": 5}
    headers = json.loads(row["headers"])
    assert headers[MESSAGE_ID_HEADER] == "m-1"
    assert "OrderPlaced" in headers["type"]
    assert 59 < (row["available_at"] - now).total_seconds() < 61


async def test_publish_many_keeps_order(pgo: PgSchema) -> None:
    outbox = Outbox(schema=pgo.name)
    async with pgo.pool.acquire() as conn, conn.transaction():
        ids = await outbox.publish_many(conn, "orders", [b"1", b"2", b"3"], key="k")
    rows = await pgo.rows()
    assert [bytes(r["body"]) for r in rows] == [b"1", b"2", b"3"]
    assert [json.loads(r["headers"])[MESSAGE_ID_HEADER] for r in rows] == ids
    assert len(set(ids)) == 3


async def test_sqlalchemy_async_session(pgo: PgSchema) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    engine = create_async_engine(pgo.url.replace("postgresql://", "postgresql+asyncpg://"))
    outbox = Outbox(schema=pgo.name, serialize_keys=True)  # its lock through the session too
    try:
        sessions = async_sessionmaker(engine)
        async with sessions() as session:  # autobegun; rolled back at close without commit
            await outbox.publish(session, "orders", {"a": 1})
        assert await pgo.count() == 0
        async with sessions() as session, session.begin():
            await session.execute(text(f'CREATE TABLE "{pgo.name}".orders (id int)'))
            await outbox.publish(session, "orders", {"a": 2}, key="k")
            await outbox.publish_many(session, "orders", [b"3", b"4"])
        rows = await pgo.rows()
        assert [bytes(r["body"]) for r in rows] == [b'{"a": 2}', b"3", b"4"]
        async with engine.connect() as connection:  # AsyncConnection: commit as you go
            await outbox.publish(connection, "audit", b"5")
            await connection.rollback()
        assert await pgo.count() == 3
    finally:
        await engine.dispose()


def test_bad_arguments_fail_clearly() -> None:
    with pytest.raises(ConfigurationError, match="table name"):
        Outbox(table="Bad-Name")
    with pytest.raises(ConfigurationError, match="name"):
        Outbox(name="")
    outbox = Outbox()
    with pytest.raises(ConfigurationError, match="destination"):
        outbox.row("", b"x")
    with pytest.raises(ConfigurationError, match="delay"):
        outbox.row("d", b"x", delay=-1)
    with pytest.raises(ConfigurationError, match="header 'h'"):
        outbox.row("d", b"x", headers={"h": object()})
    with pytest.raises(ConfigurationError, match="JSON"):
        outbox.row("d", object())


async def test_serialize_keys_orders_a_keys_rows_by_commit(pgo: PgSchema) -> None:
    """Two transactions writing one key: with serialize_keys the second waits for the first
    to commit, so the key's ids follow the commit order; another key is not held up."""
    outbox = Outbox(schema=pgo.name, serialize_keys=True)
    async with pgo.pool.acquire() as first, pgo.pool.acquire() as second:
        tx = first.transaction()
        await tx.start()
        await outbox.publish(first, "orders", b"first", key="k")

        async def later() -> None:
            async with second.transaction():
                await outbox.publish(second, "orders", b"second", key="k")

        waiting = asyncio.create_task(later())

        async def blocked() -> bool:
            async with pgo.pool.acquire() as conn:
                n = await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND pid = $1",
                    second.get_server_pid(),
                )
            return bool(n)

        await eventually(blocked, what="the second writer waiting for the key's lock")
        async with pgo.pool.acquire() as conn, conn.transaction():  # another key: not held
            await outbox.publish(conn, "orders", b"other", key="other")
        await tx.commit()
        await asyncio.wait_for(waiting, 10)
    rows = await pgo.rows()
    keyed = [bytes(r["body"]) for r in rows if r["key"] == "k"]
    assert keyed == [b"first", b"second"]  # id order = commit order


def test_importing_the_outbox_inbox_and_relay_imports_no_sqlalchemy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, loafer_postgres.outbox, loafer_postgres.inbox, loafer_postgres.relay\n"
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
