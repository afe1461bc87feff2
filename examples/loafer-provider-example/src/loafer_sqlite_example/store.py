"""The queue's tables and every SQL statement, as plain synchronous functions.

One table holds every queue's messages; a message is *ready* when ``available_at`` has
passed and it holds no live lease (``leased_until`` is NULL or past). A fetch leases
ready messages (a new random ``lease`` token each time, counting an attempt); every
settlement names the lease it settles, so a settlement of a lease that lapsed and was
taken again, or a settlement sent twice, changes nothing. Times are wall-clock seconds
(``time.time()``): several processes may share the file.

The set-up functions (:func:`create_queue`, :func:`put`, :func:`dead_letters`, ...) open
the file themselves; the provider calls the others on its own connection.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "Claimed",
    "DeadLetter",
    "connect",
    "create_queue",
    "dead_letters",
    "delete_queue",
    "put",
    "put_many",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS loafer_queues (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS loafer_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body BLOB NOT NULL,
    headers TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    uncounted INTEGER NOT NULL DEFAULT 0,  -- released: the next lease counts no attempt
    available_at REAL NOT NULL,            -- RETRY(delay) moves it forward
    leased_until REAL,                     -- NULL: not leased
    lease TEXT                             -- the current lease's token
);
CREATE INDEX IF NOT EXISTS loafer_messages_ready ON loafer_messages (queue, available_at);
CREATE TABLE IF NOT EXISTS loafer_dead_letters (
    id INTEGER PRIMARY KEY,
    queue TEXT NOT NULL,
    body BLOB NOT NULL,
    headers TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    rejected_at REAL NOT NULL
);
"""


class Claimed(NamedTuple):
    """A message just leased: ``lease`` is the token its settlement must name."""

    id: int
    body: bytes
    headers: dict[str, Any]
    attempt: int
    lease: str


class DeadLetter(NamedTuple):
    """A message REJECTED from a queue, with the reason given."""

    id: int
    body: bytes
    headers: dict[str, Any]
    attempts: int
    reason: str


def connect(path: str | os.PathLike[str], *, create: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from any
    thread (the caller serialises its use). Without ``create``, a missing file raises
    ``sqlite3.OperationalError`` rather than being created empty."""
    target: str | os.PathLike[str] = path
    if not create:
        target = Path(path).resolve().as_uri() + "?mode=rw"
    return sqlite3.connect(
        target, timeout=5.0, isolation_level=None, check_same_thread=False, uri=not create
    )


def _set_up(path: str | os.PathLike[str]) -> sqlite3.Connection:
    conn = connect(path)
    conn.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    conn.executescript(SCHEMA)
    return conn


def create_queue(path: str | os.PathLike[str], queue: str) -> None:
    """Create the tables (if needed) in the file ``path`` and the queue ``queue``."""
    with closing(_set_up(path)) as conn:
        conn.execute("INSERT OR IGNORE INTO loafer_queues (name) VALUES (?)", (queue,))


def delete_queue(path: str | os.PathLike[str], queue: str) -> None:
    """Delete the queue, its messages and its dead letters."""
    with closing(connect(path)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        for table, column in (
            ("loafer_messages", "queue"),
            ("loafer_dead_letters", "queue"),
            ("loafer_queues", "name"),
        ):
            conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (queue,))
        conn.execute("COMMIT")


def put(
    path: str | os.PathLike[str],
    queue: str,
    body: bytes,
    headers: Mapping[str, Any] | None = None,
    *,
    delay: float = 0.0,
) -> int:
    """Put one message on ``queue`` (available after ``delay`` seconds); its id."""
    with closing(connect(path)) as conn:
        return insert(conn, queue, [body], headers, delay=delay)[0]


def put_many(path: str | os.PathLike[str], queue: str, bodies: Sequence[bytes]) -> list[int]:
    """Put many messages on ``queue`` in one transaction; their ids."""
    with closing(connect(path)) as conn:
        return insert(conn, queue, bodies)


def dead_letters(path: str | os.PathLike[str], queue: str) -> list[DeadLetter]:
    """The messages rejected from ``queue``, oldest first."""
    with closing(connect(path)) as conn:
        rows = conn.execute(
            "SELECT id, body, headers, attempts, reason FROM loafer_dead_letters "
            "WHERE queue = ? ORDER BY rejected_at, id",
            (queue,),
        ).fetchall()
    return [DeadLetter(i, bytes(b), json.loads(h), a, r) for i, b, h, a, r in rows]


# -- on the provider's connection ----------------------------------------------------------


def queue_exists(conn: sqlite3.Connection, queue: str) -> bool:
    """True when the queue was created (False too when the tables were never made)."""
    try:
        row = conn.execute("SELECT 1 FROM loafer_queues WHERE name = ?", (queue,)).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return False
        raise
    return row is not None


def insert(
    conn: sqlite3.Connection,
    queue: str,
    bodies: Sequence[bytes],
    headers: Mapping[str, Any] | None = None,
    *,
    delay: float = 0.0,
) -> list[int]:
    """Insert messages in one transaction; their ids."""
    text = json.dumps(dict(headers or {}))
    at = time.time() + delay
    conn.execute("BEGIN IMMEDIATE")
    try:
        ids = [
            int(
                conn.execute(
                    "INSERT INTO loafer_messages (queue, body, headers, available_at) "
                    "VALUES (?, ?, ?, ?)",
                    (queue, bytes(body), text, at),
                ).lastrowid
                or 0
            )
            for body in bodies
        ]
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return ids


def claim(conn: sqlite3.Connection, queue: str, limit: int, lease: float) -> list[Claimed]:
    """Lease up to ``limit`` ready messages for ``lease`` seconds, oldest first, counting
    an attempt on each (none for a message that was RELEASED)."""
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = conn.execute(
            "SELECT id, body, headers, attempts, uncounted FROM loafer_messages "
            "WHERE queue = ? AND available_at <= ? AND (leased_until IS NULL OR leased_until <= ?) "
            "ORDER BY id LIMIT ?",
            (queue, now, now, limit),
        ).fetchall()
        claimed = []
        for id_, body, headers, attempts, uncounted in rows:
            attempt = max(attempts, 1) if uncounted else attempts + 1
            token = uuid.uuid4().hex
            conn.execute(
                "UPDATE loafer_messages SET attempts = ?, uncounted = 0, leased_until = ?, "
                "lease = ? WHERE id = ?",
                (attempt, now + lease, token, id_),
            )
            claimed.append(Claimed(id_, bytes(body), json.loads(headers), attempt, token))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return claimed


def accept(conn: sqlite3.Connection, id_: int, lease: str) -> bool:
    """Delete the message; False if that lease is no longer its own."""
    cur = conn.execute("DELETE FROM loafer_messages WHERE id = ? AND lease = ?", (id_, lease))
    return cur.rowcount > 0


def retry(conn: sqlite3.Connection, id_: int, lease: str, delay: float) -> bool:
    """Make the message ready again after ``delay`` seconds (its next lease counts)."""
    cur = conn.execute(
        "UPDATE loafer_messages SET available_at = ?, leased_until = NULL, lease = NULL "
        "WHERE id = ? AND lease = ?",
        (time.time() + delay, id_, lease),
    )
    return cur.rowcount > 0


def release(conn: sqlite3.Connection, leases: Iterable[tuple[int, str]]) -> int:
    """Make messages ready again at once, their next lease counting no attempt."""
    cur = conn.executemany(
        "UPDATE loafer_messages SET available_at = ?, leased_until = NULL, lease = NULL, "
        "uncounted = 1 WHERE id = ? AND lease = ?",
        [(time.time(), id_, lease) for id_, lease in leases],
    )
    return cur.rowcount


def reject(conn: sqlite3.Connection, id_: int, lease: str, reason: str) -> bool:
    """Move the message to the dead letters, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT INTO loafer_dead_letters (id, queue, body, headers, attempts, reason, "
            "rejected_at) SELECT id, queue, body, headers, attempts, ?, ? "
            "FROM loafer_messages WHERE id = ? AND lease = ?",
            (reason, time.time(), id_, lease),
        )
        moved = accept(conn, id_, lease)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return moved


def extend(conn: sqlite3.Connection, leases: Iterable[tuple[int, str]], seconds: float) -> None:
    """Push each lease's end to ``seconds`` from now (a lease already lost stays lost)."""
    until = time.time() + seconds
    conn.executemany(
        "UPDATE loafer_messages SET leased_until = ? WHERE id = ? AND lease = ?",
        [(until, id_, lease) for id_, lease in leases],
    )


def ready_count(conn: sqlite3.Connection, queue: str) -> int:
    """Messages ready now."""
    now = time.time()
    row = conn.execute(
        "SELECT COUNT(*) FROM loafer_messages WHERE queue = ? AND available_at <= ? "
        "AND (leased_until IS NULL OR leased_until <= ?)",
        (queue, now, now),
    ).fetchone()
    return int(row[0])
