"""Every statement the queue provider and publisher run, for one table.

Each settlement is one statement (one transaction), naming the lease it settles
(``id = $1 AND lease = $2``): repeated, or sent after the lease lapsed and the row was
leased again, it changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from loafer_postgres.schema import check_identifier

#: Now, as ``datetime.isoformat()`` writes a UTC time.
_NOW_ISO = "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00'"
#: The common dead-letter keys (see loafer_core.deadletters) of a rejected row ``gone``
#: with reason ``$3``: a JSON object merged into its headers.
DEAD_KEYS_SQL = f"""jsonb_build_object(
        'loafer-dead-reason', $3::text,
        'loafer-dead-attempts', greatest(attempts, 1)::text,
        'loafer-dead-origin', queue,
        'loafer-dead-first-failure', coalesce(headers->>'loafer-dead-first-failure', {_NOW_ISO}),
        'loafer-dead-last-failure', {_NOW_ISO})"""


@dataclass(frozen=True)
class Statements:
    """The SQL of one ``schema.table`` (names checked as plain identifiers)."""

    schema: str
    table: str

    def __post_init__(self) -> None:
        check_identifier(self.schema, "schema")
        check_identifier(self.table)

    @property
    def qualified(self) -> str:
        """``"schema"."table"``."""
        return f'"{self.schema}"."{self.table}"'

    @property
    def dead(self) -> str:
        """``"schema"."table_dead"``."""
        return f'"{self.schema}"."{self.table}_dead"'

    @property
    def channel(self) -> str:
        """The notification channel of the table's inserts: ``schema.table``."""
        return f"{self.schema}.{self.table}"

    @property
    def exists(self) -> str:
        """``$1``: the table's qualified name; ``$2`` its dead-letter table's."""
        return "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL"

    @property
    def claim(self) -> str:
        """Lease up to ``$2`` ready rows of queue ``$1`` for ``$3`` seconds, counting an
        attempt on each. Ready: available, not leased (or its lease lapsed), and, for a
        keyed row, the oldest row of its key still in the table (so a key's rows go one
        at a time, in id order, whatever the number of consumers)."""
        t = self.qualified
        # ``id = ANY(ARRAY(...))``: the leased rows found by their primary key (a join
        # with the CTE may be planned as a scan of the whole table)
        return f"""
UPDATE {t} AS q
SET attempts = q.attempts + 1,
    leased_until = now() + $3 * interval '1 second',
    lease = gen_random_uuid()
WHERE q.id = ANY(ARRAY(
    SELECT r.id FROM {t} AS r
    WHERE r.queue = $1 AND r.available_at <= now()
      AND (r.leased_until IS NULL OR r.leased_until <= now())
      AND (r.key IS NULL OR NOT EXISTS (
          SELECT 1 FROM {t} AS o WHERE o.queue = r.queue AND o.key = r.key AND o.id < r.id))
    ORDER BY r.id
    LIMIT $2
    FOR UPDATE OF r SKIP LOCKED
))
RETURNING q.id, q.key, q.destination, q.body, q.headers::text AS headers, q.attempts,
          q.lease, q.created_at
"""

    @property
    def due(self) -> str:
        """Seconds until the next row of queue ``$1`` may become ready without a
        notification (a delayed row, a lease lapsing); NULL when none."""
        t = self.qualified
        return f"""
SELECT EXTRACT(EPOCH FROM LEAST(
    (SELECT min(available_at) FROM {t} WHERE queue = $1 AND available_at > now()),
    (SELECT min(leased_until) FROM {t} WHERE queue = $1 AND leased_until > now())
) - now())::float8
"""

    @property
    def accept(self) -> str:
        """Delete the leased rows ``($1[i], $2[i])``; notify ``$3`` (payload ``$4``) when a
        keyed row went (the next row of its key is ready). Returns how many went."""
        return f"""
WITH gone AS (
    DELETE FROM {self.qualified} AS q
    USING unnest($1::bigint[], $2::uuid[]) AS s(id, lease)
    WHERE q.id = s.id AND q.lease = s.lease
    RETURNING q.key
), told AS (
    SELECT pg_notify($3, $4) FROM (SELECT 1 FROM gone WHERE key IS NOT NULL LIMIT 1) AS k
)
SELECT (SELECT count(*) FROM gone) + 0 * (SELECT count(*) FROM told)
"""

    @property
    def retry(self) -> str:
        """Row ``$1`` of lease ``$2`` available again in ``$3`` seconds; notify ``$4``."""
        return f"""
WITH back AS (
    UPDATE {self.qualified}
    SET available_at = now() + $3 * interval '1 second', leased_until = NULL, lease = NULL
    WHERE id = $1 AND lease = $2
    RETURNING queue
)
SELECT count(*) FROM (SELECT pg_notify($4, queue) FROM back) AS n
"""

    @property
    def release(self) -> str:
        """The leased rows ``($1[i], $2[i])`` ready again at once, their attempt given
        back; notify ``$3`` (payload ``$4``) when any was."""
        return f"""
WITH back AS (
    UPDATE {self.qualified} AS q
    SET attempts = greatest(q.attempts - 1, 0), leased_until = NULL, lease = NULL
    FROM unnest($1::bigint[], $2::uuid[]) AS s(id, lease)
    WHERE q.id = s.id AND q.lease = s.lease
    RETURNING q.id
), told AS (
    SELECT pg_notify($3, $4) FROM (SELECT 1 FROM back LIMIT 1) AS k
)
SELECT (SELECT count(*) FROM back) + 0 * (SELECT count(*) FROM told)
"""

    @property
    def reject(self) -> str:
        """Move row ``$1`` of lease ``$2`` to the dead-letter table with reason ``$3``
        (also in its headers, with the other ``loafer-dead-*`` keys), in one statement;
        notify ``$4`` when it had a key."""
        return f"""
WITH gone AS (
    DELETE FROM {self.qualified} WHERE id = $1 AND lease = $2
    RETURNING id, queue, destination, key, body, headers, attempts, created_at
), dead AS (
    INSERT INTO {self.dead}
        (id, queue, destination, key, body, headers, attempts, reason, created_at)
    SELECT id, queue, destination, key, body, headers || {DEAD_KEYS_SQL},
           attempts, $3, created_at FROM gone
    ON CONFLICT DO NOTHING
    RETURNING id
), told AS (
    SELECT pg_notify($4, queue) FROM gone WHERE key IS NOT NULL
)
SELECT (SELECT count(*) FROM gone) + 0 * (SELECT count(*) FROM dead)
       + 0 * (SELECT count(*) FROM told)
"""

    @property
    def drop(self) -> str:
        """Delete row ``$1`` of lease ``$2`` (a REJECT without dead letters); notify
        ``$3`` when it had a key. Returns the row's attempts."""
        return f"""
WITH gone AS (
    DELETE FROM {self.qualified} WHERE id = $1 AND lease = $2 RETURNING queue, key, attempts
), told AS (
    SELECT pg_notify($3, queue) FROM gone WHERE key IS NOT NULL
)
SELECT (SELECT max(attempts) FROM gone) + 0 * (SELECT count(*) FROM told)
"""

    @property
    def extend(self) -> str:
        """The leases ``($1[i], $2[i])`` held ``$3`` more seconds (from now)."""
        return f"""
UPDATE {self.qualified} AS q SET leased_until = now() + $3 * interval '1 second'
FROM unnest($1::bigint[], $2::uuid[]) AS s(id, lease)
WHERE q.id = s.id AND q.lease = s.lease
"""

    @property
    def backlog(self) -> str:
        """Rows of queue ``$1`` ready now (keyed rows behind an older one included)."""
        return f"""
SELECT count(*) FROM {self.qualified}
WHERE queue = $1 AND available_at <= now() AND (leased_until IS NULL OR leased_until <= now())
"""

    @property
    def insert(self) -> str:
        """One row: queue ``$1``, body ``$2``, headers ``$3`` (JSON text), key ``$4``,
        available in ``$5`` seconds, destination ``$6``. Returns its id."""
        return f"""
INSERT INTO {self.qualified} (queue, body, headers, key, available_at, destination)
VALUES ($1, $2, $3::jsonb, $4, now() + $5 * interval '1 second', $6)
RETURNING id
"""

    @property
    def insert_many(self) -> str:
        """Rows ``$2[i]`` (bodies) with headers ``$3[i]``, keys ``$4[i]``, all in queue
        ``$1``, available in ``$5`` seconds, in array order."""
        return f"""
INSERT INTO {self.qualified} (queue, body, headers, key, available_at)
SELECT $1, m.body, m.headers::jsonb, m.key, now() + $5 * interval '1 second'
FROM unnest($2::bytea[], $3::text[], $4::text[]) WITH ORDINALITY AS m(body, headers, key, n)
ORDER BY m.n
"""


@dataclass(frozen=True)
class DeadStatements:
    """The SQL of the dead letters of one queue in ``schema.table_dead``."""

    sql: Statements

    @property
    def page(self) -> str:
        """Up to ``$3`` dead rows of queue ``$1`` after id ``$2``, by id."""
        return f"""
SELECT id, body, headers::text AS headers, reason, attempts, failed_at
FROM {self.sql.dead} WHERE queue = $1 AND id > $2 ORDER BY id LIMIT $3
"""

    @property
    def count(self) -> str:
        """Dead rows of queue ``$1``."""
        return f"SELECT count(*) FROM {self.sql.dead} WHERE queue = $1"

    @property
    def replay(self) -> str:
        """Dead row ``$2`` of queue ``$1`` back in the queue table with headers ``$3``
        (JSON text), in one statement (one transaction: exactly once). Returns 1 if moved."""
        return f"""
WITH gone AS (
    DELETE FROM {self.sql.dead} WHERE queue = $1 AND id = $2
    RETURNING queue, destination, key, body
), back AS (
    INSERT INTO {self.sql.qualified} (queue, destination, key, body, headers)
    SELECT queue, destination, key, body, $3::jsonb FROM gone
    RETURNING id
)
SELECT count(*) FROM back
"""

    @property
    def remove(self) -> str:
        """Delete dead row ``$2`` of queue ``$1``."""
        return f"DELETE FROM {self.sql.dead} WHERE queue = $1 AND id = $2"
