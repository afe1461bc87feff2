"""Inbox: the message id recorded in the handler's own transaction, on real brokers.

A message whose transaction committed is skipped when it comes again; one whose
transaction rolled back (an error, a RETRY, a REJECT) is handled again, its writes once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from loafer_core import Manager
from loafer_core.errors import ConfigurationError, RejectMessage
from loafer_core.outcome import ACCEPT, RETRY
from loafer_core.provider import Delivery
from loafer_core.testing import eventually
from loafer_postgres.inbox import Inbox, current_connection
from loafer_postgres.outbox import MESSAGE_ID_HEADER, Outbox
from loafer_rabbit import RabbitRoute
from loafer_redis import RedisRoute
from tests.loafer_postgres._outbox_fixtures import PgSchema, pgo
from tests.loafer_rabbit.conftest import RabbitAdmin, open_admin
from tests.loafer_redis.conftest import RedisAdmin

__all__ = ["pgo"]

pytestmark = pytest.mark.postgres


@pytest.fixture
async def rabbit(rabbit_url: str) -> AsyncIterator[RabbitAdmin]:
    async with open_admin(rabbit_url) as helper:
        yield helper


@pytest.fixture
async def redis_admin(redis_url: str) -> AsyncIterator[RedisAdmin]:
    helper = RedisAdmin(redis_url)
    try:
        yield helper
    finally:
        if helper.keys:
            await helper.client.delete(*helper.keys)
        await helper.client.aclose()


async def effects_table(pgo: PgSchema) -> str:
    table = f'"{pgo.name}".effects'
    async with pgo.pool.acquire() as conn:
        await conn.execute(f"CREATE TABLE {table} (message text NOT NULL)")
    return table


async def effects(pgo: PgSchema, table: str) -> list[str]:
    async with pgo.pool.acquire() as conn:
        return [r["message"] for r in await conn.fetch(f"SELECT message FROM {table}")]


async def recorded(pgo: PgSchema) -> list[tuple[str, str]]:
    async with pgo.pool.acquire() as conn:
        rows = await conn.fetch(
            f'SELECT consumer, message_id FROM "{pgo.name}".loafer_inbox ORDER BY message_id'
        )
    return [(r["consumer"], r["message_id"]) for r in rows]


@pytest.mark.rabbit
async def test_rabbit_redelivered_committed_message_is_skipped(
    pgo: PgSchema, rabbit: RabbitAdmin, rabbit_url: str
) -> None:
    table = await effects_table(pgo)
    queue = await rabbit.declare()
    calls: list[str] = []

    async def handler(content: Any, metadata: Any) -> None:
        calls.append(metadata["message_id"])
        await current_connection().execute(f"INSERT INTO {table} VALUES ($1)", content.decode())

    inbox = Inbox(pool=pgo.pool, schema=pgo.name, consumer="billing")
    route = RabbitRoute(
        queue,
        url=rabbit_url,
        handler=handler,
        middleware=[inbox],
        translator=None,
        max_concurrency=1,
    )
    # the same message twice (a redelivery after the transaction committed), and another
    await rabbit.put(queue, b"a", message_id="m-1")
    await rabbit.put(queue, b"a", message_id="m-1")
    await rabbit.put(queue, b"b", message_id="m-2")
    async with Manager([route]):
        await eventually(lambda: inbox.skipped == 1 and inbox.handled == 2, what="3 settled")
        await rabbit.wait_count(queue, 0)
    assert calls == ["m-1", "m-2"]
    assert sorted(await effects(pgo, table)) == ["a", "b"]
    assert await recorded(pgo) == [("billing", "m-1"), ("billing", "m-2")]


@pytest.mark.rabbit
async def test_rabbit_failed_attempts_roll_back_and_the_writes_happen_once(
    pgo: PgSchema, rabbit: RabbitAdmin, rabbit_url: str
) -> None:
    table = await effects_table(pgo)
    queue = await rabbit.declare()
    attempts: dict[str, int] = {}

    async def handler(content: Any, metadata: Any) -> Any:
        name = content.decode()
        attempts[name] = attempts.get(name, 0) + 1
        await current_connection().execute(f"INSERT INTO {table} VALUES ($1)", name)
        if name == "poison":
            raise RejectMessage("never valid")
        if attempts[name] == 1:
            raise RuntimeError("the first attempt fails after writing")
        return attempts[name] != 2  # the second: False, a plain RETRY, rolled back too

    inbox = Inbox(pool=pgo.pool, schema=pgo.name)
    route = RabbitRoute(
        queue,
        url=rabbit_url,
        handler=handler,
        middleware=[inbox],
        translator=None,
        retry=None,
        error_handler=lambda *exc: None,
    )
    await rabbit.put(queue, b"ok", message_id="m-ok")
    await rabbit.put(queue, b"poison", message_id="m-poison")
    async with Manager([route]):
        await eventually(lambda: inbox.handled == 1 and attempts.get("poison") == 1)
        await rabbit.wait_count(queue, 0)
    assert attempts == {"ok": 3, "poison": 1}
    assert await effects(pgo, table) == ["ok"]  # the failed attempts and the REJECT rolled back
    assert inbox.rolled_back == 3
    assert [m for _, m in await recorded(pgo)] == ["m-ok"]  # a REJECT is not recorded


@pytest.mark.rabbit
async def test_rabbit_concurrent_deliveries_of_one_id_run_once(
    pgo: PgSchema, rabbit: RabbitAdmin, rabbit_url: str
) -> None:
    table = await effects_table(pgo)
    queue = await rabbit.declare()

    async def handler(content: Any, metadata: Any) -> None:
        await current_connection().execute(f"INSERT INTO {table} VALUES ($1)", content.decode())
        await asyncio.sleep(0.5)  # the other delivery waits on the inbox row's lock

    inbox = Inbox(pool=pgo.pool, schema=pgo.name)
    route = RabbitRoute(
        queue,
        url=rabbit_url,
        handler=handler,
        middleware=[inbox],
        translator=None,
        max_concurrency=4,
    )
    for _ in range(3):
        await rabbit.put(queue, b"same", message_id="m-1")
    async with Manager([route]):
        await eventually(lambda: inbox.handled == 1 and inbox.skipped == 2)
        await rabbit.wait_count(queue, 0)
    assert await effects(pgo, table) == ["same"]


@pytest.mark.redis
async def test_redis_header_id_and_the_outbox_in_the_inbox_transaction(
    pgo: PgSchema, redis_admin: RedisAdmin, redis_url: str
) -> None:
    """Redis's entry ids differ per copy: the producer's id in a header deduplicates; the
    handler's outbox row commits with the inbox record (and not on the failed attempt)."""
    table = await effects_table(pgo)
    stream = await redis_admin.stream()
    outbox = Outbox(schema=pgo.name)
    seen = 0

    async def handler(content: Any, metadata: Any) -> None:
        nonlocal seen
        seen += 1
        conn = Inbox.connection()
        await conn.execute(f"INSERT INTO {table} VALUES ($1)", content["order"])
        await outbox.publish(conn, "shipping", content, key=content["order"])
        if seen == 1:
            raise RuntimeError("fails once, after writing")

    inbox = Inbox(pool=pgo.pool, schema=pgo.name, message_id=MESSAGE_ID_HEADER)
    route = RedisRoute(
        stream,
        url=redis_url,
        handler=handler,
        middleware=[inbox],
        retry=None,
        error_handler=lambda *exc: None,
    )
    await redis_admin.put(stream, b'{"order": "o-1"}', {MESSAGE_ID_HEADER: "p-1"})
    await redis_admin.put(stream, b'{"order": "o-1"}', {MESSAGE_ID_HEADER: "p-1"})
    async with Manager([route]):
        await eventually(lambda: inbox.handled == 1 and inbox.skipped == 1, timeout=20)
    assert seen == 2
    assert await effects(pgo, table) == ["o-1"]
    rows = await pgo.rows()
    assert [(r["destination"], r["key"]) for r in rows] == [("shipping", "o-1")]


async def test_missing_id_is_an_error_of_the_message_never_handled(pgo: PgSchema) -> None:
    inbox = Inbox(pool=pgo.pool, schema=pgo.name, message_id="order-id")
    failed: list[BaseException] = []
    retried = RETRY(1.0)

    class Route:
        name = "r"

        def failed(self, exc: BaseException, delivery: Delivery, message: str, *args: Any) -> Any:
            failed.append(exc)
            return retried

    async def call_next(delivery: Delivery) -> Any:
        raise AssertionError("the handler must not run")

    delivery = Delivery(b"x", b"x", "broker-id", {"headers": {}}, 1, None, None)
    assert await inbox(delivery, Route(), call_next) is retried  # type: ignore[arg-type]
    assert isinstance(failed[0], ValueError)


async def test_missing_table_fails_at_start(postgres_url: str) -> None:
    inbox = Inbox(postgres_url, schema="loafer_pgo_no_such_schema")
    with pytest.raises(ConfigurationError, match="loafer postgres init"):
        await inbox.start()
    await inbox.close()
    await inbox.close()


def test_arguments_and_accessor() -> None:
    with pytest.raises(ConfigurationError, match="url"):
        Inbox()
    with pytest.raises(ConfigurationError, match="table name"):
        Inbox("postgresql://x/y", table="1bad")
    with pytest.raises(ConfigurationError, match="message_id"):
        Inbox("postgresql://x/y", message_id=3)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="no inbox transaction"):
        current_connection()
    assert Inbox("postgresql://x/y").on_duplicate is ACCEPT


async def test_unreachable_server_at_start_is_logged_and_deliveries_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbox = Inbox("postgresql://postgres@127.0.0.1:1/test")
    await inbox.start()  # no exception: the manager starts; deliveries are retried
    assert "cannot connect to PostgreSQL" in caplog.text
    failed: list[BaseException] = []
    retried = RETRY(1.0)

    class Route:
        name = "r"

        def failed(self, exc: BaseException, delivery: Delivery, message: str, *args: Any) -> Any:
            failed.append(exc)
            return retried

    async def call_next(delivery: Delivery) -> Any:
        raise AssertionError("the handler must not run unguarded")

    delivery = Delivery(b"x", b"x", "m-1", {"headers": {}}, 1, None, None)
    assert await inbox(delivery, Route(), call_next) is retried  # type: ignore[arg-type]
    assert "cannot connect" in str(failed[0])
    await inbox.close()


async def test_sqlalchemy_sessions_on_the_memory_broker(pgo: PgSchema) -> None:
    """``Inbox(sessions=async_sessionmaker)``: the handler gets an AsyncSession in the
    inbox's transaction; any broker (here the embedded one)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from loafer_core import Route
    from loafer_core.memory import MemoryBroker, MemoryProvider

    table = await effects_table(pgo)
    engine = create_async_engine(pgo.url.replace("postgresql://", "postgresql+asyncpg://"))
    attempts: dict[str, int] = {}

    async def handler(content: Any, metadata: Any) -> None:
        name = content.decode()
        attempts[name] = attempts.get(name, 0) + 1
        session = Inbox.session()
        await session.execute(text(f"INSERT INTO {table} VALUES (:m)"), {"m": name})
        if attempts[name] == 1:
            raise RuntimeError("the first attempt fails after writing")

    try:
        inbox = Inbox(sessions=async_sessionmaker(engine), schema=pgo.name)
        broker = MemoryBroker()
        for _ in range(2):  # the second: a redelivery of a committed message
            broker.publish("orders", b"a", message_id="m-a")
        route = Route(
            MemoryProvider(broker, "orders"),
            handler,
            translator=None,
            retry=None,
            max_concurrency=1,
            middleware=[inbox],
            error_handler=lambda *exc: None,
        )
        async with Manager([route]):
            await eventually(lambda: inbox.handled == 1 and inbox.skipped == 1)
        assert attempts == {"a": 2}
        assert await effects(pgo, table) == ["a"]
        assert inbox.rolled_back == 1
    finally:
        await engine.dispose()
