"""PostgreSQL plugin for loafer-core: a queue provider and publisher on a table, and (in
its own modules) a transactional outbox and inbox.

``from loafer_postgres import PostgresProvider, PostgresPublisher, PostgresRoute`` (and
their settings objects, ``PostgresSettings`` and ``PostgresPublisherSettings``:
:mod:`loafer_postgres.settings`). The tables and the SQL that creates them:
:mod:`loafer_postgres.schema` (``loafer postgres init``). The outbox, its relay and the
inbox: ``from loafer_postgres import Inbox, Outbox, OutboxRelay``
(:mod:`loafer_postgres.outbox`, :mod:`loafer_postgres.relay`,
:mod:`loafer_postgres.inbox`; ``docs/outbox.md``).
"""

from __future__ import annotations

from loafer_postgres.errors import mask_url
from loafer_postgres.inbox import Inbox
from loafer_postgres.outbox import Outbox
from loafer_postgres.provider import PostgresProvider
from loafer_postgres.publisher import PostgresPublisher
from loafer_postgres.relay import OutboxRelay
from loafer_postgres.route import PostgresRoute
from loafer_postgres.schema import create_schema, drop_schema, schema_sql
from loafer_postgres.settings import PostgresPublisherSettings, PostgresSettings

__all__ = [
    "Inbox",
    "Outbox",
    "OutboxRelay",
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
