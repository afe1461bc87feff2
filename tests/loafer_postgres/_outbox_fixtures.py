"""Fixtures of the outbox, relay and inbox tests: a fresh schema on the real PostgreSQL.

Imported by those test modules (``from tests.loafer_postgres._outbox_fixtures import
...``); the package's conftest.py belongs to the queue provider's tests.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from loafer_postgres.schema import create_schema, drop_schema


@dataclass
class PgSchema:
    """A schema of its own with the outbox/queue/inbox tables, and a pool on it."""

    url: str
    name: str
    pool: Any  # asyncpg.Pool

    async def rows(self, table: str = "loafer_outbox") -> list[Any]:
        async with self.pool.acquire() as conn:
            return list(await conn.fetch(f'SELECT * FROM "{self.name}"."{table}" ORDER BY id'))

    async def count(self, table: str = "loafer_outbox") -> int:
        async with self.pool.acquire() as conn:
            value = await conn.fetchval(f'SELECT count(*) FROM "{self.name}"."{table}"')
            return int(value)


def unique_schema() -> str:
    return f"loafer_pgo_{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def pgo(postgres_url: str) -> AsyncIterator[PgSchema]:
    """A fresh schema (dropped afterwards) with the default tables, and a pool."""
    name = unique_schema()
    conn = await asyncpg.connect(postgres_url)
    try:
        await create_schema(conn, schema=name)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=10)
    try:
        yield PgSchema(postgres_url, name, pool)
    finally:
        await pool.close()
        conn = await asyncpg.connect(postgres_url)
        try:
            await drop_schema(conn, schema=name)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()
