"""Settings objects of the PostgreSQL plugin: :class:`PostgresSettings` (the queue
provider's) and :class:`PostgresPublisherSettings` (the publisher's), frozen dataclasses
checked when built (:mod:`loafer_core.settings`).

``PostgresProvider(PostgresSettings(queue="jobs", connection=Connection(url=...)))`` is
the same provider as ``PostgresProvider("jobs", url=...)``: the flat keywords are mapped
onto the fields (:attr:`PostgresSettings.flat`). The URL's password and its query values
never appear in a ``repr`` or an error.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from loafer_core.errors import ConfigurationError
from loafer_core.settings import (
    Connection,
    SettingError,
    Settings,
    Timeouts,
    seconds,
    setting,
    shared_flat,
    whole,
)
from loafer_core.settings import name as non_empty
from loafer_core.settings import settings_of as _settings_of
from loafer_core.typed import TYPE_HEADER
from loafer_postgres.errors import check_url
from loafer_postgres.schema import DEFAULT_QUEUE_TABLE, check_identifier

__all__ = [
    "DEFAULT_TIMEOUTS",
    "DEFAULT_URL",
    "PostgresPublisherSettings",
    "PostgresSettings",
]

S = TypeVar("S", bound=Settings)

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
"""The server when no URL is given: a local PostgreSQL, user and database ``postgres``."""
DEFAULT_TIMEOUTS = Timeouts(connect=10.0, close=10.0, poll=5.0, publish=30.0, reconnect=1.0)
"""The plugin's timeouts (seconds): connect 10, close 10, poll 5 (one fetch's longest wait
when nothing is ready), publish (one statement: an insert, a settlement) 30, reconnect
(the listening connection's pause between attempts) 1."""


def _identifier(what: str) -> Any:
    def check(value: Any) -> str | None:
        try:
            check_identifier(value, what)
        except ValueError:
            return "a plain lower-case SQL identifier (letters, digits, _; at most 48)"
        return None

    return check


def _check_connection(settings: Settings, connection: Connection) -> None:
    try:
        check_url(type(settings).__name__, connection.url)
    except ConfigurationError:
        # the URL may hold a password: its value is never shown
        raise SettingError(
            type(settings).__name__,
            "connection.url",
            "a postgresql:// (or postgres://) URL read as meant (any '#', '/', '?' or '@' "
            "in the user name or password percent-encoded)",
            connection.url,
            secret=True,
        ) from None
    if connection.tls is not None and not hasattr(connection.tls, "wrap_socket"):
        raise SettingError(
            type(settings).__name__, "connection.tls", "an ssl.SSLContext or None", connection.tls
        )


_SHARED = shared_flat(
    "url", "connection_name", "connection_options", "connect_timeout", "close_timeout"
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PostgresSettings(Settings):
    """A :class:`~loafer_postgres.PostgresProvider`'s settings: a queue kept in a table.

    :param queue: the queue's name (rows whose ``queue`` column holds it); any
        non-empty string.
    :param table: the table (``loafer_queue``; an outbox table for a relay), created by
        ``loafer postgres init``.
    :param schema: the table's schema (``public``).
    :param lease: seconds a fetched row stays leased (its visibility timeout): not
        handed out again before it lapses; extended while its handler runs.
    :param poll_interval: longest pause between two claims while idle: a consumer
        waits on LISTEN/NOTIFY (and on the earliest delayed row) and claims at least
        this often in case a notification was missed.
    :param batch_size: most rows one claim leases.
    :param dead_letters: REJECT moves the row to ``<table>_dead`` with its reason
        (``False``: a rejected row is deleted, logged).
    :param listen: wait on LISTEN/NOTIFY (one extra connection) rather than poll.
    :param pool_size: connections of the provider's pool (claims, settlements).
    :param connection: the server (flat: ``url``, a ``postgresql://`` URL whose
        password and query values never appear in logs, errors or reprs;
        ``connection_name``, the ``application_name``, default ``"loafer:<queue>"``;
        ``tls``, an ``ssl.SSLContext``; ``connection_options``, more
        ``asyncpg.connect`` arguments).
    :param timeouts: :data:`DEFAULT_TIMEOUTS` (flat: ``wait`` or ``poll_timeout``, one
        fetch's longest wait; ``statement_timeout``, one statement's longest run;
        ``connect_timeout``; ``close_timeout``; ``reconnect_wait``).
    """

    primary = "queue"
    flat = {
        **_SHARED,
        "tls": "connection.tls",
        "wait": "timeouts.poll",
        "poll_timeout": "timeouts.poll",
        "statement_timeout": "timeouts.publish",
        "reconnect_wait": "timeouts.reconnect",
    }

    queue: str = setting(check=non_empty)
    table: str = setting(DEFAULT_QUEUE_TABLE, check=_identifier("table"))
    schema: str = setting("public", check=_identifier("schema"))
    lease: float = setting(30.0, check=seconds)
    poll_interval: float = setting(5.0, check=seconds)
    batch_size: int = setting(100, check=whole(1))
    dead_letters: bool = True
    listen: bool = True
    pool_size: int = setting(4, check=whole(1))
    connection: Connection = Connection(url=DEFAULT_URL)
    timeouts: Timeouts = DEFAULT_TIMEOUTS

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_connection(self, self.connection)

    @property
    def qualified(self) -> str:
        """The table as SQL names it: ``"schema"."table"``."""
        return f'"{self.schema}"."{self.table}"'


@dataclasses.dataclass(frozen=True, kw_only=True)
class PostgresPublisherSettings(Settings):
    """A :class:`~loafer_postgres.PostgresPublisher`'s settings.

    :param queue: the default queue (``publish(..., queue=...)`` overrides it).
    :param table: the table (``loafer_queue``).
    :param schema: the table's schema (``public``).
    :param pool_size: connections of the publisher's pool.
    :param type_header: the header a typed object's type is named in (``None``: none).
    :param connection: the server, as :class:`PostgresSettings`' (flat: ``url``,
        ``connection_name``, default ``"loafer:publisher"``, ``tls``,
        ``connection_options``).
    :param timeouts: :data:`DEFAULT_TIMEOUTS` (flat: ``timeout``, one insert's longest
        wait; ``connect_timeout``; ``close_timeout``).
    """

    primary = "queue"
    flat = {**_SHARED, "tls": "connection.tls", "timeout": "timeouts.publish"}

    queue: str | None = None
    table: str = setting(DEFAULT_QUEUE_TABLE, check=_identifier("table"))
    schema: str = setting("public", check=_identifier("schema"))
    pool_size: int = setting(4, check=whole(1))
    type_header: str | None = TYPE_HEADER
    connection: Connection = Connection(url=DEFAULT_URL, name="loafer:publisher")
    timeouts: Timeouts = DEFAULT_TIMEOUTS

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_connection(self, self.connection)
        if self.queue is not None and non_empty(self.queue) is not None:
            raise SettingError(
                type(self).__name__, "queue", "a non-empty string or None", self.queue
            )

    @property
    def qualified(self) -> str:
        """The table as SQL names it: ``"schema"."table"``."""
        return f'"{self.schema}"."{self.table}"'


def settings_of(
    settings_type: type[S], owner: str, settings: S | str | None, options: Mapping[str, Any]
) -> S:
    """Core's :func:`~loafer_core.settings.settings_of`, a flat ``url`` checked first so
    that its error shows it masked."""
    if "url" in options:
        check_url(owner, options["url"])
    return _settings_of(settings_type, owner, settings, options)
