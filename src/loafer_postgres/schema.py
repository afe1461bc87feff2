"""The tables loafer_postgres uses, and the SQL that creates them.

Nothing is created at import or at start-up: the schema is created by a documented,
explicit step, ``loafer postgres init`` (or :func:`create_schema` from your migrations,
or the SQL :func:`schema_sql` prints, pasted into them). A provider that finds its table
missing refuses to start with a ``ConfigurationError`` saying which command creates it.

One table shape serves both the queue (``loafer_queue``: the ``postgres`` provider) and
the outbox (``loafer_outbox``: rows written by :class:`~loafer_postgres.Outbox` in the
caller's transaction, read by the relay route). A row:

- ``id``: BIGSERIAL; the order of rows of one ``key`` (see below);
- ``queue``: which queue (or which outbox) the row belongs to;
- ``destination``: the outbox's target (what the relay publishes to); ``NULL`` in a queue;
- ``key``: the ordering key (``NULL``: none). Rows of one key are handed out one at a
  time, in ``id`` order: only the oldest row of a key can be leased;
- ``body``, ``headers`` (JSON object of strings);
- ``attempts``: counted when a row is leased (a RELEASE gives the count back);
- ``available_at``: not before (a delayed retry, a delayed publish);
- ``leased_until``, ``lease``: the visibility timeout and the token each settlement names
  (``WHERE id = $1 AND lease = $2``): a settle sent twice, or the late settle of a lease
  that lapsed and was taken again, changes nothing;
- ``txid``: the writing transaction (``pg_current_xact_id()``), for diagnosis and for
  readers that need commit-visibility order;
- ``created_at``.

Dead letters go to ``<table>_dead`` (the row, with ``reason``, ``attempts``,
``failed_at``), moved in the same transaction as the REJECT. The inbox table
(``loafer_inbox``) records ``(consumer, message_id)`` in the handler's own transaction.

An insert notifies the channel ``<schema>.<table>`` (``pg_notify``, payload the queue
name) from a trigger, so the notification is sent when the writing transaction commits:
idle consumers LISTEN instead of polling hot.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "DEFAULT_INBOX_TABLE",
    "DEFAULT_OUTBOX_TABLE",
    "DEFAULT_QUEUE_TABLE",
    "SCHEMA_VERSION",
    "check_identifier",
    "create_schema",
    "dead_letter_table",
    "drop_schema",
    "schema_sql",
]

SCHEMA_VERSION = 1
"""The version of the tables' shape; recorded in each table's comment."""

DEFAULT_QUEUE_TABLE = "loafer_queue"
"""The queue provider's table unless configured otherwise."""

DEFAULT_OUTBOX_TABLE = "loafer_outbox"
"""The outbox's table unless configured otherwise."""

DEFAULT_INBOX_TABLE = "loafer_inbox"
"""The inbox's table unless configured otherwise."""

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,47}")


def check_identifier(value: str, what: str = "table") -> str:
    """``value`` if it is a plain lower-case SQL identifier (<= 48 characters), else ValueError.

    Table and schema names are written into SQL (they cannot be parameters); only plain
    names are accepted, so nothing a configuration file holds can change a statement.
    """
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{what} name {value!r}: expected a plain lower-case SQL identifier "
            "(letters, digits, _; at most 48 characters; not starting with a digit)"
        )
    return value


def dead_letter_table(table: str) -> str:
    """The dead-letter table of a queue or outbox table: ``<table>_dead``."""
    return f"{check_identifier(table)}_dead"


def _queue_table_sql(schema: str, table: str) -> str:
    q = f'"{schema}"."{table}"'
    dead = f'"{schema}"."{table}_dead"'
    notify = f'"{schema}"."{table}_notify"'
    return f"""
CREATE TABLE IF NOT EXISTS {q} (
    id           BIGSERIAL PRIMARY KEY,
    queue        TEXT NOT NULL,
    destination  TEXT,
    key          TEXT,
    body         BYTEA NOT NULL,
    headers      JSONB NOT NULL DEFAULT '{{}}'::jsonb,
    attempts     INTEGER NOT NULL DEFAULT 0,
    available_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    leased_until TIMESTAMPTZ,
    lease        UUID,
    txid         XID8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS "{table}_ready" ON {q} (queue, available_at, id);
CREATE INDEX IF NOT EXISTS "{table}_keyed" ON {q} (queue, key, id) WHERE key IS NOT NULL;
COMMENT ON TABLE {q} IS 'loafer_postgres queue/outbox table, schema version {SCHEMA_VERSION}';
CREATE TABLE IF NOT EXISTS {dead} (
    id           BIGINT NOT NULL,
    queue        TEXT NOT NULL,
    destination  TEXT,
    key          TEXT,
    body         BYTEA NOT NULL,
    headers      JSONB NOT NULL DEFAULT '{{}}'::jsonb,
    attempts     INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    failed_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, id)
);
COMMENT ON TABLE {dead} IS
    'loafer_postgres dead letters of {table}, schema version {SCHEMA_VERSION}';
CREATE OR REPLACE FUNCTION {notify}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{schema}.{table}', NEW.queue);
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS "{table}_notify" ON {q};
CREATE TRIGGER "{table}_notify" AFTER INSERT ON {q}
    FOR EACH ROW EXECUTE FUNCTION {notify}();
"""


def _inbox_table_sql(schema: str, table: str) -> str:
    t = f'"{schema}"."{table}"'
    return f"""
CREATE TABLE IF NOT EXISTS {t} (
    consumer    TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    handled_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
COMMENT ON TABLE {t} IS 'loafer_postgres inbox, schema version {SCHEMA_VERSION}';
"""


def schema_sql(
    *,
    schema: str = "public",
    queue_tables: tuple[str, ...] = (DEFAULT_QUEUE_TABLE, DEFAULT_OUTBOX_TABLE),
    inbox_table: str | None = DEFAULT_INBOX_TABLE,
) -> str:
    """The SQL that creates the tables (idempotent: ``IF NOT EXISTS`` throughout).

    ``queue_tables``: each a queue or outbox table with its ``_dead`` table and its
    notify trigger; ``inbox_table``: the inbox's table (``None``: none).
    """
    check_identifier(schema, "schema")
    parts = [f'CREATE SCHEMA IF NOT EXISTS "{schema}";']
    parts += [_queue_table_sql(schema, check_identifier(t)) for t in queue_tables]
    if inbox_table is not None:
        parts.append(_inbox_table_sql(schema, check_identifier(inbox_table)))
    return "\n".join(parts)


async def create_schema(conn: Any, **options: Any) -> None:
    """Create the tables on an asyncpg connection, in one transaction (``schema_sql`` options).

    Serialised by an advisory lock, so several processes may run it at once.
    """
    sql = schema_sql(**options)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('loafer_postgres.schema'))")
        await conn.execute(sql)


async def drop_schema(
    conn: Any,
    *,
    schema: str = "public",
    queue_tables: tuple[str, ...] = (DEFAULT_QUEUE_TABLE, DEFAULT_OUTBOX_TABLE),
    inbox_table: str | None = DEFAULT_INBOX_TABLE,
) -> None:
    """Drop what :func:`create_schema` created (tests, ``loafer postgres init --drop``)."""
    check_identifier(schema, "schema")
    statements = []
    for t in queue_tables:
        check_identifier(t)
        statements.append(f'DROP TABLE IF EXISTS "{schema}"."{t}", "{schema}"."{t}_dead";')
        statements.append(f'DROP FUNCTION IF EXISTS "{schema}"."{t}_notify"();')
    if inbox_table is not None:
        statements.append(f'DROP TABLE IF EXISTS "{schema}"."{check_identifier(inbox_table)}";')
    async with conn.transaction():
        await conn.execute("\n".join(statements))
