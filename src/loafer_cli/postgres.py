"""``loafer postgres init``: create (or drop, or print) the PostgreSQL plugin's tables.

The tables are never created at import or at start-up: this command, the SQL it prints
(``--print-sql``, for your migrations) or :func:`loafer_postgres.schema.create_schema`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated, Any

import typer

from loafer_core.errors import ConfigurationError

__all__ = ["DEFAULT_URL_ENV", "init_tables", "postgres_app"]

#: The environment variable read when ``--url`` is not given.
DEFAULT_URL_ENV = "LOAFER_POSTGRES_URL"

postgres_app = typer.Typer(
    name="postgres",
    help="The PostgreSQL plugin's tables: `loafer postgres init` creates them.",
    no_args_is_help=True,
    add_completion=False,
)


def _tables(queue_tables: list[str] | None, inbox: str | None, no_inbox: bool) -> dict[str, Any]:
    from loafer_postgres import schema

    options: dict[str, Any] = {}
    if queue_tables:
        options["queue_tables"] = tuple(queue_tables)
    options["inbox_table"] = None if no_inbox else (inbox or schema.DEFAULT_INBOX_TABLE)
    return options


async def init_tables(url: str, schema: str, *, drop: bool = False, **options: Any) -> None:
    """Create (``drop``: drop) the tables in ``schema`` of the server at ``url``."""
    import asyncpg

    from loafer_postgres import schema as tables
    from loafer_postgres.errors import mask_url, protect, secrets_of, translate

    secrets = secrets_of(url)
    protect(secrets)
    where = f"PostgreSQL at {mask_url(url)}"
    try:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            if drop:
                await tables.drop_schema(conn, schema=schema, **options)
            else:
                await tables.create_schema(conn, schema=schema, **options)
        finally:
            await conn.close()
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        what = "dropping the tables" if drop else "creating the tables"
        raise translate(what, exc, where, secrets) from None


@postgres_app.command(
    "init",
    help="Create the queue, outbox, dead-letter and inbox tables (idempotent), or print "
    "their SQL, or drop them.",
)
def init(
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help=f"The server's postgresql:// URL (default: ${DEFAULT_URL_ENV})."
        ),
    ] = None,
    schema: Annotated[str, typer.Option("--schema", help="The schema of the tables.")] = "public",
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table",
            help="A queue or outbox table (repeatable; default: loafer_queue and loafer_outbox).",
        ),
    ] = None,
    inbox: Annotated[
        str | None, typer.Option("--inbox", help="The inbox table (default: loafer_inbox).")
    ] = None,
    no_inbox: Annotated[bool, typer.Option("--no-inbox", help="No inbox table.")] = False,
    print_sql: Annotated[
        bool, typer.Option("--print-sql", help="Print the SQL and connect to nothing.")
    ] = False,
    drop: Annotated[bool, typer.Option("--drop", help="Drop the tables instead.")] = False,
) -> None:
    """Create the PostgreSQL plugin's tables (see docs/providers/postgres.md)."""
    from loafer_postgres import schema as tables
    from loafer_postgres.errors import check_url, mask_url

    try:
        options = _tables(table, inbox, no_inbox)
        if print_sql:
            tables.check_identifier(schema, "schema")
            sys.stdout.write(tables.schema_sql(schema=schema, **options).strip() + "\n")
            return
        chosen = url or os.environ.get(DEFAULT_URL_ENV)
        if not chosen:
            raise ConfigurationError(f"give the server with --url or ${DEFAULT_URL_ENV}")
        check_url("loafer postgres init", chosen)
        tables.check_identifier(schema, "schema")
        asyncio.run(init_tables(chosen, schema, drop=drop, **options))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except ConfigurationError as exc:
        raise _fail(str(exc), 78) from None
    except Exception as exc:  # a ProviderError: the server could not be reached
        raise _fail(str(exc)) from None
    names = ", ".join(
        f"{schema}.{t}" for t in options.get("queue_tables", ("loafer_queue", "loafer_outbox"))
    )
    print(f"{'dropped' if drop else 'created'} {names} (with _dead tables) at {mask_url(chosen)}")


def _fail(message: str, code: int = 1) -> typer.Exit:
    print(f"loafer: error: {message}", file=sys.stderr, flush=True)
    return typer.Exit(code)
