"""Fixtures for the PostgreSQL plugin's tests: a real PostgreSQL, a fresh schema each.

- ``pg_schema``: a unique schema with the plugin's tables (``create_schema``), dropped
  (``CASCADE``) after the test; sync, so it suits the conformance kits' own loops too.
- ``pg``: a :class:`PgAdmin` on that schema (its own pool on the test's loop): ``put``,
  ``rows``, ``dead``, ``execute``...
- ``pg_schema_of(url)`` / :func:`fresh_schema`: the same, for module-scoped set-ups.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import pytest

from loafer_postgres.schema import DEFAULT_QUEUE_TABLE, create_schema

pytestmark = pytest.mark.postgres


def unique_schema(prefix: str = "loafer_t") -> str:
    """A schema name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def make_schema(url: str, schema: str) -> None:
    """Create ``schema`` with every table of :func:`~loafer_postgres.schema.schema_sql`."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await create_schema(conn, schema=schema)
    finally:
        await conn.close()


async def remove_schema(url: str, schema: str) -> None:
    """Drop ``schema`` and everything in it."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


class fresh_schema:
    """``with fresh_schema(url) as schema:`` a new schema with the tables, dropped after
    (sync: runs its own event loop)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.schema = unique_schema()

    def __enter__(self) -> str:
        asyncio.run(make_schema(self.url, self.schema))
        return self.schema

    def __exit__(self, *exc: object) -> None:
        asyncio.run(remove_schema(self.url, self.schema))


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A fresh schema with the plugin's tables, dropped after the test."""
    with fresh_schema(postgres_url) as schema:
        yield schema


class PgAdmin:
    """Test-side access to a schema: put rows, read the queue and dead-letter tables."""

    def __init__(self, url: str, schema: str, pool: Any) -> None:
        self.url = url
        self.schema = schema
        self.pool = pool

    def table(self, table: str = DEFAULT_QUEUE_TABLE) -> str:
        return f'"{self.schema}"."{table}"'

    async def put(
        self,
        queue: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        key: str | None = None,
        delay: float = 0.0,
        table: str = DEFAULT_QUEUE_TABLE,
        destination: str | None = None,
    ) -> int:
        """Insert one row (committed on return); its id."""
        row_id: int = await self.pool.fetchval(
            f"INSERT INTO {self.table(table)} (queue, body, headers, key, available_at, "
            "destination) VALUES ($1, $2, $3::jsonb, $4, now() + $5 * interval '1 second', $6) "
            "RETURNING id",
            queue,
            body,
            json.dumps(dict(headers or {})),
            key,
            float(delay),
            destination,
        )
        return row_id

    async def put_many(
        self,
        queue: str,
        bodies: Sequence[bytes],
        *,
        keys: Sequence[str | None] | None = None,
        table: str = DEFAULT_QUEUE_TABLE,
    ) -> None:
        """Insert many rows in one statement, in order."""
        await self.pool.execute(
            f"INSERT INTO {self.table(table)} (queue, body, key) "
            "SELECT $1, b, k FROM unnest($2::bytea[], $3::text[]) WITH ORDINALITY AS m(b, k, n) "
            "ORDER BY n",
            queue,
            list(bodies),
            list(keys) if keys is not None else [None] * len(bodies),
        )

    async def rows(self, queue: str, table: str = DEFAULT_QUEUE_TABLE) -> list[Any]:
        """Every row of ``queue`` still in the table, in id order."""
        return list(
            await self.pool.fetch(
                f"SELECT * FROM {self.table(table)} WHERE queue = $1 ORDER BY id", queue
            )
        )

    async def dead(self, queue: str, table: str = DEFAULT_QUEUE_TABLE) -> list[Any]:
        """Every dead letter of ``queue``, in id order."""
        return list(
            await self.pool.fetch(
                f"SELECT * FROM {self.table(table + '_dead')} WHERE queue = $1 ORDER BY id",
                queue,
            )
        )

    async def execute(self, sql: str, *args: Any) -> Any:
        return await self.pool.execute(sql, *args)


@pytest.fixture
async def pg(postgres_url: str, pg_schema: str) -> AsyncIterator[PgAdmin]:
    """A :class:`PgAdmin` on a fresh schema (``pg.schema``)."""
    import asyncpg

    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=4)
    try:
        yield PgAdmin(postgres_url, pg_schema, pool)
    finally:
        await pool.close()
