"""The dead-letter kit on a real PostgreSQL: REJECT writes the common keys into the dead
row's headers, a replay moves each row back in one transaction."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import asyncpg
import pytest

from loafer_core.deadletters import DEAD_REASON, dead_letters_of
from loafer_core.errors import ConfigurationError
from loafer_core.provider import Provider
from loafer_core.testing import DeadLetterContract
from loafer_postgres import PostgresProvider
from tests.loafer_postgres.conftest import fresh_schema

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def dlq_schema(postgres_url: str) -> Iterator[str]:
    with fresh_schema(postgres_url) as schema:
        yield schema


class TestPostgresDeadLetters(DeadLetterContract):
    queue_prefix = "dlq"

    @pytest.fixture(autouse=True)
    def _schema(self, postgres_url: str, dlq_schema: str) -> None:
        self.url = postgres_url
        self.schema = dlq_schema

    async def make_provider(self, queue: str) -> Provider:
        return PostgresProvider(queue, url=self.url, schema=self.schema, wait=0.5)

    async def create_queue(self, queue: str) -> None:
        """A queue is a name in the table."""

    async def delete_queue(self, queue: str) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            for table in ("loafer_queue", "loafer_queue_dead"):
                await conn.execute(f'DELETE FROM "{self.schema}"."{table}" WHERE queue = $1', queue)
        finally:
            await conn.close()

    async def put(self, queue: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(
                f'INSERT INTO "{self.schema}"."loafer_queue" (queue, body, headers) '
                "VALUES ($1, $2, $3::jsonb)",
                queue,
                body,
                json.dumps(dict(headers or {})),
            )
        finally:
            await conn.close()

    def test_the_reason_column_and_header_agree(self) -> None:
        async def scenario(queue: str) -> None:
            async with await self.store(queue) as store:
                await self.reject_all(queue, store)
            conn = await asyncpg.connect(self.url)
            try:
                rows: list[Any] = await conn.fetch(
                    f'SELECT reason, headers::text AS h FROM "{self.schema}"."loafer_queue_dead" '
                    "WHERE queue = $1",
                    queue,
                )
            finally:
                await conn.close()
            assert len(rows) == self.messages
            for row in rows:
                assert json.loads(row["h"])[DEAD_REASON] == row["reason"]

        self._run(scenario)


def test_no_store_without_dead_letters() -> None:
    provider = PostgresProvider("q", url="postgresql://localhost/test", dead_letters=False)
    with pytest.raises(ConfigurationError, match="dead letters are off"):
        dead_letters_of(provider)
