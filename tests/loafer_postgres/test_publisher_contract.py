"""loafer-core's publisher conformance kit, run against PostgresPublisher on a real
PostgreSQL (each destination a queue name in a fresh schema's queue table; what arrived
is read, and deleted, with one DELETE ... RETURNING, once available: a consumer's view)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import asyncpg
import pytest

from loafer_core.testing import Arrived, PublisherContract
from loafer_postgres import PostgresPublisher
from loafer_postgres.schema import create_schema
from tests.loafer_postgres.conftest import fresh_schema

pytestmark = pytest.mark.postgres

#: A table whose trigger refuses every insert (the refused-publish test).
REFUSING_TABLE = "refusing"


@pytest.fixture(scope="module")
def publisher_schema(postgres_url: str) -> Iterator[str]:
    with fresh_schema(postgres_url) as schema:
        yield schema


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class TestPostgresPublisherContract(PublisherContract):
    destination_prefix: ClassVar[str] = "pub-contract"

    @pytest.fixture(autouse=True)
    def _server(self, postgres_url: str, publisher_schema: str) -> None:
        self.url = postgres_url
        self.schema = publisher_schema

    async def make_publisher(self, destination: str) -> Any:
        return PostgresPublisher(destination, url=self.url, schema=self.schema)

    async def delete_destination(self, destination: str) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(
                f'DELETE FROM "{self.schema}"."loafer_queue" WHERE queue = $1', destination
            )
        finally:
            await conn.close()

    async def take(self, destination: str) -> Sequence[Arrived]:
        conn = await asyncpg.connect(self.url)
        try:
            rows = await conn.fetch(
                f'WITH t AS (DELETE FROM "{self.schema}"."loafer_queue" WHERE queue = $1 '
                "AND available_at <= now() RETURNING id, body, headers::text AS headers) "
                "SELECT * FROM t ORDER BY id",
                destination,
            )
        finally:
            await conn.close()
        return [Arrived(bytes(r["body"]), json.loads(r["headers"])) for r in rows]

    async def make_refusing_publisher(self, destination: str) -> Any:
        # a table of the same shape whose trigger refuses every row (RAISE EXCEPTION)
        conn = await asyncpg.connect(self.url)
        try:
            await create_schema(
                conn, schema=self.schema, queue_tables=(REFUSING_TABLE,), inbox_table=None
            )
            await conn.execute(
                f"""
CREATE OR REPLACE FUNCTION "{self.schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'refused by the test'; END; $$;
DROP TRIGGER IF EXISTS refuse ON "{self.schema}"."{REFUSING_TABLE}";
CREATE TRIGGER refuse BEFORE INSERT ON "{self.schema}"."{REFUSING_TABLE}"
    FOR EACH ROW EXECUTE FUNCTION "{self.schema}".refuse();
"""
            )
        finally:
            await conn.close()
        return PostgresPublisher(
            destination, url=self.url, schema=self.schema, table=REFUSING_TABLE
        )

    async def make_publisher_with_secret(self, destination: str) -> tuple[Any, str]:
        secret = "s3cret-pg-password"
        url = f"postgresql://loafer:{secret}@127.0.0.1:{_closed_port()}/test"
        return (
            PostgresPublisher(destination, url=url, schema=self.schema, connect_timeout=2),
            secret,
        )
