"""The loafer-core conformance kit, run against PostgresProvider on a real PostgreSQL
(one fresh schema per test class; each test's queue is a new queue name in its table)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import asyncpg
import pytest

from loafer_core.provider import Capabilities, Provider
from loafer_core.testing import ProviderContract
from loafer_postgres import PostgresProvider
from tests.loafer_postgres.conftest import fresh_schema

pytestmark = pytest.mark.postgres

#: A short lease, so the kit's lease tests take a few seconds.
LEASE = 1.0


@pytest.fixture(scope="module")
def contract_schema(postgres_url: str) -> Iterator[str]:
    """One schema for the module's tests (each test uses a queue name of its own)."""
    with fresh_schema(postgres_url) as schema:
        yield schema


def _provider(queue: str, url: str, schema: str) -> PostgresProvider:
    return PostgresProvider(queue, url=url, schema=schema, lease=LEASE, wait=0.5, poll_interval=1.0)


class TestPostgresContract(ProviderContract):
    """Every capability PostgresProvider claims is exercised."""

    capabilities: ClassVar[Capabilities] = _provider(
        "q", "postgresql://localhost/test", "public"
    ).capabilities
    queue_prefix: ClassVar[str] = "contract"
    redelivery_timeout: ClassVar[float] = 5.0
    given_back_within: ClassVar[float] = 0.8
    duplicate_window: ClassVar[float] = 0.5

    @pytest.fixture(autouse=True)
    def _schema(self, postgres_url: str, contract_schema: str) -> None:
        self.url = postgres_url
        self.schema = contract_schema

    async def _conn(self) -> Any:
        return await asyncpg.connect(self.url)

    async def make_provider(self, queue: str) -> Provider:
        return _provider(queue, self.url, self.schema)

    async def create_queue(self, queue: str) -> None:
        """A queue is a name in the table: nothing to create."""

    async def delete_queue(self, queue: str) -> None:
        conn = await self._conn()
        try:
            for table in ("loafer_queue", "loafer_queue_dead"):
                await conn.execute(f'DELETE FROM "{self.schema}"."{table}" WHERE queue = $1', queue)
        finally:
            await conn.close()

    async def _insert(
        self, queue: str, bodies: Sequence[bytes], headers: Mapping[str, str] | None, key: Any
    ) -> None:
        conn = await self._conn()
        try:
            await conn.execute(
                f'INSERT INTO "{self.schema}"."loafer_queue" (queue, body, headers, key) '
                "SELECT $1, b, $3::jsonb, $4 FROM unnest($2::bytea[]) WITH ORDINALITY AS m(b, n) "
                "ORDER BY n",
                queue,
                list(bodies),
                json.dumps(dict(headers or {})),
                key,
            )
        finally:
            await conn.close()

    async def put(self, queue: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        await self._insert(queue, [body], headers, None)

    async def put_many(self, queue: str, bodies: Sequence[bytes]) -> None:
        await self._insert(queue, bodies, None, None)

    async def put_keyed(self, queue: str, body: bytes, key: str) -> None:
        await self._insert(queue, [body], None, key)

    async def dead_letters(self, queue: str) -> list[bytes] | None:
        conn = await self._conn()
        try:
            rows = await conn.fetch(
                f'SELECT body FROM "{self.schema}"."loafer_queue_dead" WHERE queue = $1 '
                "ORDER BY id",
                queue,
            )
        finally:
            await conn.close()
        return [bytes(r["body"]) for r in rows]
