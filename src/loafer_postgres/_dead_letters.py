"""The dead letters of a PostgreSQL queue: its rows in ``<table>_dead``.

REJECT moves the row there (one statement) with ``reason``, ``attempts``, ``failed_at``
and the common ``loafer-dead-*`` keys merged into its headers. A replay moves a dead row
back into the queue table in one statement (one transaction): each dead letter goes
back exactly once, even if the replay is killed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Iterable
from datetime import UTC
from typing import Any

import asyncpg

from loafer_core.deadletters import DeadLetter, DeadLetters, read_dead_letter, replay_headers
from loafer_core.kit import map_exceptions
from loafer_postgres._sql import DeadStatements, Statements
from loafer_postgres.errors import mask_url, translate

__all__ = ["PostgresDeadLetters"]

#: Rows read per page.
_PAGE = 200


class PostgresDeadLetters(DeadLetters):
    """The rows of one queue in its table's ``_dead`` table."""

    guarantee = "exactly-once"

    def __init__(
        self, options: dict[str, Any], sql: Statements, queue: str, secrets: Iterable[str]
    ) -> None:
        self._options = options
        self._sql = sql
        self._dead = DeadStatements(sql)
        self._queue = queue
        self._secrets = tuple(secrets)
        self._url = str(options.get("dsn", ""))
        self._conn: Any = None

    @property
    def where(self) -> str:
        """``queue 'q' in "schema"."table_dead"`` and the masked server."""
        return f"queue {self._queue!r} in {self._sql.dead} at {mask_url(self._url)}"

    def _error(self, what: str) -> map_exceptions:
        where = f"PostgreSQL at {mask_url(self._url)}"
        return map_exceptions(
            lambda exc: translate(what, exc, where, self._secrets, table=self._sql.dead),
            catch=(asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError),
        )

    async def _connection(self) -> Any:
        if self._conn is None:
            with self._error("connecting"):
                self._conn = await asyncpg.connect(**self._options)
        return self._conn

    async def count(self) -> int:
        """Dead rows of the queue."""
        conn = await self._connection()
        with self._error("counting dead letters"):
            return int(await conn.fetchval(self._dead.count, self._queue))

    def _letter(self, row: Any) -> DeadLetter:
        headers = json.loads(row["headers"]) if row["headers"] else {}
        letter = read_dead_letter(str(row["id"]), bytes(row["body"]), headers, origin=self._queue)
        # the columns are the record (rows dead-lettered by earlier versions have no keys)
        failed = row["failed_at"].astimezone(UTC)
        return DeadLetter(
            id=letter.id,
            body=letter.body,
            headers=letter.headers,
            reason=row["reason"],
            attempts=int(row["attempts"]),
            origin=self._queue,
            first_failure=letter.first_failure or failed,
            last_failure=letter.last_failure or failed,
        )

    async def _scan(self) -> AsyncGenerator[DeadLetter, None]:
        conn = await self._connection()
        after = 0
        while True:
            with self._error("reading dead letters"):
                rows = await conn.fetch(self._dead.page, self._queue, after, _PAGE)
            for row in rows:
                yield self._letter(row)
            if len(rows) < _PAGE:
                return
            after = int(rows[-1]["id"])

    async def _move(self, letter: DeadLetter) -> None:
        conn = await self._connection()
        headers = json.dumps(replay_headers(letter), default=str)
        with self._error(f"replaying dead row {letter.id}"):
            await conn.fetchval(self._dead.replay, self._queue, int(letter.id), headers)

    async def _remove(self, letter: DeadLetter) -> None:
        conn = await self._connection()
        with self._error(f"deleting dead row {letter.id}"):
            await conn.execute(self._dead.remove, self._queue, int(letter.id))

    async def close(self) -> None:
        """Close the connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close(timeout=5.0)
