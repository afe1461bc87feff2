"""PostgreSQL plugin for loafer-core: a queue provider and publisher on a table, and (in
its own modules) a transactional outbox and inbox.

``from loafer_postgres import PostgresProvider, PostgresPublisher, PostgresRoute`` (and
their settings objects, ``PostgresSettings`` and ``PostgresPublisherSettings``:
:mod:`loafer_postgres.settings`). The tables and the SQL that creates them:
:mod:`loafer_postgres.schema` (``loafer postgres init``).
"""

from __future__ import annotations

from loafer_postgres.errors import mask_url
from loafer_postgres.provider import PostgresProvider
from loafer_postgres.publisher import PostgresPublisher
from loafer_postgres.route import PostgresRoute
from loafer_postgres.schema import create_schema, drop_schema, schema_sql
from loafer_postgres.settings import PostgresPublisherSettings, PostgresSettings

__all__ = [
    "PostgresProvider",
    "PostgresPublisher",
    "PostgresPublisherSettings",
    "PostgresRoute",
    "PostgresSettings",
    "create_schema",
    "drop_schema",
    "mask_url",
    "schema_sql",
]
