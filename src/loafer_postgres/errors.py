"""Translating asyncpg's exceptions at the plugin's edge, with the URL's password masked.

What leaves this package is a :class:`~loafer_core.errors.ProviderError` (transient: a
lost connection, a server shutting down; the dispatcher retries with backoff), a
:class:`~loafer_core.errors.ConfigurationError` (fix the set-up: a refused login, a
missing database or table, a missing privilege) or a
:class:`~loafer_core.errors.PublishRefused` (the server refused the row itself), never
with a password in its text. The one table is :func:`translate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from loafer_core import kit
from loafer_core.errors import ConfigurationError, LoaferError, ProviderError, PublishRefused

__all__ = [
    "INIT_COMMAND",
    "LOGGERS",
    "URL_RULES",
    "check_url",
    "mask_url",
    "missing_table",
    "protect",
    "scrub",
    "secrets_of",
    "translate",
]

#: The command that creates the tables (named by every "missing table" error).
INIT_COMMAND = "loafer postgres init"


def _parse(url: str) -> object:
    """Each host of ``postgresql://user:pw@h1:5432,h2:5433/db`` with a valid port."""
    parsed = urlsplit(url)
    netloc = parsed.netloc.rpartition("@")[2]
    for host in netloc.split(",") if netloc else ():
        urlsplit(f"//{host}").port  # noqa: B018 - raises ValueError on a bad port
    return parsed


#: PostgreSQL URLs (libpq's and asyncpg's): ``user:password@``; the query is passed on
#: (``?password=...``, ``?sslpassword=...``, ``?options=...`` may hold secrets): every
#: query value is masked; several hosts are comma-separated.
URL_RULES = kit.UrlRules(
    schemes=("postgresql", "postgres"),
    mask_query=True,
    secret_query=r"pass|secret|token|options",
    secret_options=("password", "sslpassword"),
    separators=",",
    refuse_fragment=True,
    validate=_parse,
)
#: Loggers whose records are filtered (and their children).
LOGGERS = ("asyncpg", "loafer_postgres")


def mask_url(url: str) -> str:
    """``url`` with its password and every query value replaced by ``******``."""
    return kit.mask_url(url, URL_RULES)


def secrets_of(url: str, options: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The URL's password (as written and percent-decoded), its secret query values and
    the ``password``/``sslpassword`` connection options, longest first."""
    return kit.secrets_of(url, URL_RULES, options)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every PostgreSQL URL in it masked and each of ``secrets`` replaced."""
    return kit.scrub(text, URL_RULES, secrets)


def check_url(owner: str, url: object) -> str:
    """Refuse, at construction, what is not a ``postgresql://`` URL read as meant; the
    message never shows the password."""
    return kit.check_url(owner, url, URL_RULES)


def protect(secrets: Iterable[str]) -> None:
    """Mask ``secrets``, and every PostgreSQL URL's password, in the records of asyncpg's
    loggers and this plugin's. Idempotent."""
    kit.protect(LOGGERS, secrets, urls=URL_RULES)


def missing_table(where: str, table: str) -> ConfigurationError:
    """The error of a start (or a publish) that finds its table missing."""
    return ConfigurationError(
        f"{where}: table {table} does not exist; create the tables with "
        f"`{INIT_COMMAND} --url URL --schema SCHEMA` (or loafer_postgres.schema.create_schema "
        "/ the SQL `loafer postgres init --print-sql` prints, in your migrations)"
    )


def _describe(exc: BaseException, secrets: Iterable[str]) -> str:
    detail = scrub(str(exc), tuple(secrets)) or type(exc).__name__
    return f"{type(exc).__name__}: {detail}"


#: Server errors that retrying cannot fix (the set-up is wrong).
_CONFIGURATION = (
    asyncpg.InvalidAuthorizationSpecificationError,  # 28000, 28P01: login refused
    asyncpg.InvalidCatalogNameError,  # 3D000: no such database
    asyncpg.InsufficientPrivilegeError,  # 42501
    asyncpg.UndefinedColumnError,  # 42703: a table of another shape
    asyncpg.UndefinedFunctionError,  # 42883: an older server (gen_random_uuid: 13+)
    asyncpg.InvalidSchemaNameError,  # 3F000
)
#: Errors by which the server refuses a row itself (a constraint, a trigger's RAISE).
_REFUSALS = (
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.RaiseError,
    asyncpg.DataError,
    asyncpg.ProgramLimitExceededError,
)


def translate(
    what: str, exc: BaseException, where: str, secrets: Iterable[str], *, table: str = ""
) -> LoaferError:
    """The plugin's one translation table: ``exc`` (raised while doing ``what`` against
    ``where``, the masked server) as a loafer-core error.

    A missing table is a ConfigurationError naming ``loafer postgres init``; a refused
    login, a missing database or privilege a ConfigurationError; a row the server
    refuses a :class:`~loafer_core.errors.PublishRefused`; anything else (a lost
    connection, a server shutting down, a timeout) a ProviderError.
    """
    if isinstance(exc, LoaferError):
        return exc
    if isinstance(exc, asyncpg.UndefinedTableError):
        return missing_table(where, table or "(unknown)")
    if isinstance(exc, _CONFIGURATION):
        return ConfigurationError(
            f"{where}: {what} refused ({_describe(exc, secrets)}); check the URL's user, "
            "password and database, the user's privileges and the tables' shape"
        )
    if isinstance(exc, _REFUSALS):
        return PublishRefused(f"{where}: {what} refused ({_describe(exc, secrets)})")
    if isinstance(exc, TimeoutError):
        return ProviderError(f"{where}: {what} timed out")
    return ProviderError(f"{where}: {what} failed ({_describe(exc, secrets)})")
