"""loafer-provider-example: a loafer-core provider plugin for a queue in a SQLite table.

Registered as ``sqlite-example`` on the ``loafer.providers`` entry point group. Set up a
queue with :func:`create_queue`, put messages with :func:`put`, read rejected ones with
:func:`dead_letters`.
"""

from __future__ import annotations

from loafer_sqlite_example.provider import SQLiteProvider
from loafer_sqlite_example.store import create_queue, dead_letters, delete_queue, put

__all__ = ["SQLiteProvider", "create_queue", "dead_letters", "delete_queue", "put"]
