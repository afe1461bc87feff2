"""What a PostgreSQL provider or publisher says of itself (:class:`~loafer_core.kit.Describable`).

AsyncAPI has no binding for PostgreSQL: the server's protocol is ``postgresql``, and the
table, queue and lease are loafer's own extension (``x-loafer-postgres``).
"""

from __future__ import annotations

import re
from typing import Any

from loafer_core import kit


def server(masked_url: str) -> kit.Server | None:
    """Protocol ``postgresql``, the first ``host:port`` (5432 when the URL names none),
    the database as the pathname; a URL without a host (a local socket): no server."""
    found = kit.host_of(masked_url.replace(",", "/", 1))
    if found is None:
        return None
    host = found[0]
    rest = masked_url.partition("://")[2]
    path = re.split(r"[?#]", rest[rest.rfind("@") + 1 :], maxsplit=1)[0].partition("/")[2]
    return kit.Server(
        protocol="postgresql",
        host=kit.with_port(host, 5432),
        pathname=f"/{path}" if path else None,
        description="PostgreSQL (no AsyncAPI binding: the queue is a table)",
    )


def provider(masked_url: str, schema: str, table: str, queue: str, lease: float) -> kit.Description:
    """A consumer of the rows of ``queue`` in ``schema.table``."""
    extension: dict[str, Any] = {"schema": schema, "table": table, "queue": queue, "lease": lease}
    return kit.Description(
        kind="postgres",
        system="postgresql",
        destination=queue,
        address=masked_url,
        server=server(masked_url),
        summary=f"PostgreSQL queue {queue!r}: rows of table {schema}.{table} leased with "
        "FOR UPDATE SKIP LOCKED",
        extensions={"x-loafer-postgres": extension},
    )


def publisher(masked_url: str, schema: str, table: str, queue: str | None) -> kit.Description:
    """A publisher inserting rows of ``queue`` into ``schema.table``."""
    return kit.Description(
        kind="postgres",
        system="postgresql",
        destination=queue,
        address=masked_url,
        server=server(masked_url),
        summary=f"rows inserted into PostgreSQL table {schema}.{table}",
        extensions={"x-loafer-postgres": {"schema": schema, "table": table}},
    )
