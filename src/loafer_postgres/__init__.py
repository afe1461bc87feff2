"""PostgreSQL plugin for loafer-core: a transactional outbox and inbox, and a queue provider.

The tables and the SQL that creates them: :mod:`loafer_postgres.schema`.
"""

from __future__ import annotations

__all__: list[str] = []
