"""What a :class:`~loafer_redis.RedisProvider` and a :class:`~loafer_redis.RedisPublisher`
are configured with: frozen settings objects (:mod:`loafer_core.settings`).

``RedisProvider(RedisSettings(stream="orders", connection=Connection(url=...),
group=ConsumerGroup(name="billing", create=True)))`` is the same provider as
``RedisProvider("orders", url=..., group="billing", create=True)``: each settings class
maps the historical flat keywords onto its fields (:attr:`RedisSettings.flat`). Every
value is checked when the settings are built; the URL's password (a lone
``redis://token@host`` is one too) and its query values never appear in a ``repr`` or an
error.
"""

import dataclasses
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from loafer_core.errors import ConfigurationError
from loafer_core.settings import (
    Check,
    Connection,
    SettingError,
    Settings,
    Timeouts,
    optional,
    setting,
    shared_flat,
    whole,
)
from loafer_core.settings import name as non_empty
from loafer_core.settings import settings_of as _settings_of
from loafer_core.typed import TYPE_HEADER
from loafer_redis.errors import check_url

__all__ = [
    "BODY_FIELD",
    "DEFAULT_URL",
    "ConsumerGroup",
    "DeadLetters",
    "DelayedRetries",
    "RedisPublisherSettings",
    "RedisSettings",
    "RedisTimeouts",
    "Trimming",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
"""The Redis URL when none is given: a local Redis, database 0, no password."""
BODY_FIELD = "body"
"""The field holding the message body."""


# -- checks ---------------------------------------------------------------------------


def at_least(minimum: float) -> Check:
    """A finite number (not a bool) >= ``minimum``."""

    def check(value: Any) -> str | None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < minimum
        ):
            return f"a number >= {minimum}"
        return None

    return check


def _forget_after(value: Any) -> str | None:
    """None (never), 0 (at every read) or a number of seconds >= 0.01."""
    if value is None or (not isinstance(value, bool) and value == 0):
        return None
    if at_least(0.01)(value) is None:
        return None
    return "a number >= 0.01, 0 or None"


def _group_start(value: Any) -> str | None:
    """``"0"``, ``"$"`` or an entry id (``"1700000000000-0"``)."""
    if isinstance(value, str) and (value in ("0", "$") or value.replace("-", "").isdigit()):
        return None
    return "'0', '$' or an entry id"


def _dead_letter(value: Any) -> str | None:
    if isinstance(value, bool) or (isinstance(value, str) and value):
        return None
    return "True, False or a stream name"


def _url_problem(url: str) -> str | None:
    """What a Redis URL must be when ``url`` is not one redis-py reads as meant."""
    try:
        check_url("RedisSettings", url)
    except ConfigurationError as exc:
        if "would not be read as meant" in str(exc):
            return (
                "a URL whose user name and password are percent-encoded (an unencoded "
                "'#', '/', '?' or '@' in them is read as the end of the password)"
            )
        scheme, sep, _ = url.partition("://")
        seen = f"not {scheme}://" if sep and scheme.isalnum() else "this one has no scheme"
        return f"a redis://, rediss:// or unix:// URL ({seen})"
    return None


def _check_connection(owner: str, connection: Connection) -> None:
    """A Redis connection: its URL one of Redis's, and nothing Redis would not use."""
    wanted = _url_problem(connection.url)
    if wanted is not None:
        # the URL may hold a password, a lone token or a query secret: never shown
        raise SettingError(owner, "connection.url", wanted, connection.url, secret=True)
    for field, hint in (
        ("name", "set client_name in the connection options"),
        ("tls", "use a rediss:// URL and the ssl_* connection options"),
    ):
        if getattr(connection, field) is not None:
            raise ConfigurationError(
                f"{owner}(connection=...): Redis does not use Connection.{field}; {hint}"
            )


# -- pieces ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class RedisTimeouts(Timeouts):
    """How long each kind of wait may last, in seconds.

    :param connect: the longest connecting may take (a number >= 0.1).
    :param close: the longest ``close()`` spends on its goodbyes (>= 0.1).
    :param poll: the longest one ``XREADGROUP`` blocks waiting for entries (>= 0.01).
    :param call: the longest any other Redis call may take (>= 0.1; redis-py's socket
        timeout): reclaims, settlements, publishes.

    ``publish`` and ``reconnect`` (of :class:`~loafer_core.settings.Timeouts`) are not
    used: every publish is a call, and redis-py connects again on the next call.
    """

    connect: float = setting(10.0, check=at_least(0.1))
    close: float = setting(10.0, check=at_least(0.1))
    poll: float = setting(2.0, check=at_least(0.01))
    call: float = setting(10.0, check=at_least(0.1))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConsumerGroup(Settings):
    """The consumer group the provider reads through, and its consumer in it.

    :param name: the consumer group.
    :param create: create the stream and the group at start if missing (``XGROUP CREATE
        ... MKSTREAM``); otherwise a missing one is a ConfigurationError at start.
    :param start: where a created group starts: ``"0"`` (every entry already in the
        stream), ``"$"`` (only entries added from now on) or an entry id.
    :param consumer: the start of this consumer's name (host, process id and a random
        part follow: unique per process and per provider).
    :param lease: seconds an entry stays leased to this consumer after delivery (>= 0.1;
        its lease is extended while its handler runs); a lapsed lease lets any consumer
        of the group reclaim it (``XCLAIM``): how a dead consumer's entries are taken
        over.
    :param reclaim_interval: how often (seconds, >= 0.01) the reader looks for lapsed
        leases and for delayed retries that other consumers parked (it notices its own
        at once).
    :param forget_after: consumers of the group idle this long (seconds) with nothing
        pending are deleted from it (``XGROUP DELCONSUMER``, only when nothing is pending
        for them: dead processes' names, once their entries were reclaimed); ``None``
        never deletes others. Each provider deletes its own at ``close`` when nothing is
        pending for it.
    """

    name: str = setting("loafer", check=non_empty)
    create: bool = False
    start: str = setting("0", check=_group_start)
    consumer: str = setting("loafer", check=non_empty)
    lease: float = setting(30.0, check=at_least(0.1))
    reclaim_interval: float = setting(1.0, check=at_least(0.01))
    forget_after: float | None = setting(3600.0, check=_forget_after)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DelayedRetries(Settings):
    """How ``RETRY(delay)`` waits.

    :param enabled: ``RETRY(delay)`` keeps the entry pending, its id in a sorted set
        (``key``), until due; ``False``: a RETRY(delay) retries at once.
    :param key: the group's sorted set of delayed retries (``None`` or ``""``:
        ``"<stream>:<group>:delayed"``, one per group: never share it between groups).
    """

    enabled: bool = True
    key: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeadLetters(Settings):
    """Where REJECT puts an entry.

    :param stream: ``True``: the entry is added to ``"<stream>:dead"`` with the reason,
        and acknowledged, in one script; a string: to that stream; ``False``: REJECT
        only acknowledges it (logged at ERROR).
    :param maxlen: trim the dead-letter stream to about this many entries (an int >= 1;
        ``None``: never trimmed).
    """

    stream: bool | str = setting(True, check=_dead_letter)
    maxlen: int | None = setting(None, check=optional(whole(1)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trimming(Settings):
    """How a publisher trims the stream on each add.

    :param maxlen: trim the stream to about this many entries (``MAXLEN ~``; an int
        >= 1); ``None``: never trimmed. Trimming drops the oldest entries, delivered or
        not.
    :param approximate: ``False`` for an exact ``MAXLEN`` (slower for Redis).
    """

    maxlen: int | None = setting(None, check=optional(whole(1)))
    approximate: bool = True


# -- the provider's and the publisher's settings --------------------------------------

_CONNECTION = Connection(url=DEFAULT_URL)
_CONNECTION_FLAT = shared_flat("url", "connection_options")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RedisSettings(Settings):
    """A :class:`~loafer_redis.RedisProvider`'s settings.

    :param stream: the stream's key.
    :param connection: ``url``: ``redis://[[user]:password@]host[:port][/db]``,
        ``rediss://`` (TLS) or ``unix://``; the password (and a lone
        ``redis://token@host``) never appears in logs, errors or reprs. ``options``:
        extra keyword arguments for redis-py's connection pool (``ssl_ca_certs``,
        ``client_name``, ...). Its ``name`` and ``tls`` are not used by Redis (refused).
    :param timeouts: ``connect``, ``close``, ``poll`` (one ``XREADGROUP``'s block) and
        ``call`` (every other Redis call): :class:`RedisTimeouts`.
    :param group: the consumer group and this consumer: :class:`ConsumerGroup`.
    :param retries: delayed retries: :class:`DelayedRetries`.
    :param dead_letters: where REJECT puts an entry: :class:`DeadLetters`.
    :param body_field: the entry field holding the body (loafer's publishers write one
        field, ``body``); every other field is a header. An entry without that field
        (``XADD orders * order 1 sku x``, written by another client) is handed over as
        its fields: ``raw`` is a ``dict`` (``{"order": "1", "sku": "x"}``, values
        ``str`` when UTF-8, else ``bytes``). ``None``: every entry as its fields.
    :param max_connections: the command pool's size (an int >= 2; the blocking read and
        the acknowledgements have a connection each of their own).

    Flat keywords (``RedisProvider("orders", url=..., group="billing", lease=60)``):
    ``url``, ``connection_options``; ``connect_timeout``, ``close_timeout``, ``block``
    (``timeouts.poll``), ``socket_timeout`` (``timeouts.call``); ``group``, ``create``,
    ``group_start``, ``consumer``, ``lease``, ``reclaim_interval``,
    ``forget_consumers_after``; ``delayed_retry``, ``delayed_key``; ``dead_letter``,
    ``dead_letter_maxlen``; and ``stream``, ``body_field``, ``max_connections``.
    """

    primary: ClassVar[str | None] = "stream"
    flat: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            **_CONNECTION_FLAT,
            **shared_flat("connect_timeout", "close_timeout"),
            "block": "timeouts.poll",
            "socket_timeout": "timeouts.call",
            "group": "group.name",
            "create": "group.create",
            "group_start": "group.start",
            "consumer": "group.consumer",
            "lease": "group.lease",
            "reclaim_interval": "group.reclaim_interval",
            "forget_consumers_after": "group.forget_after",
            "delayed_retry": "retries.enabled",
            "delayed_key": "retries.key",
            "dead_letter": "dead_letters.stream",
            "dead_letter_maxlen": "dead_letters.maxlen",
        }
    )

    stream: str = setting(check=non_empty)
    connection: Connection = _CONNECTION
    timeouts: RedisTimeouts = RedisTimeouts()
    group: ConsumerGroup = ConsumerGroup()
    retries: DelayedRetries = DelayedRetries()
    dead_letters: DeadLetters = DeadLetters()
    body_field: str | None = setting(BODY_FIELD, check=optional(non_empty))
    max_connections: int = setting(16, check=whole(2))

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_connection(type(self).__name__, self.connection)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RedisPublisherSettings(Settings):
    """A :class:`~loafer_redis.RedisPublisher`'s settings.

    :param stream: the stream's key (``loafer publish redis STREAM ...``).
    :param connection: ``url``: ``redis://``, ``rediss://`` or ``unix://`` (the password
        is masked); ``options``: extra keyword arguments for redis-py's connection pool.
        Its ``name`` and ``tls`` are not used by Redis (refused).
    :param timeouts: ``connect`` (connecting) and ``call`` (each call: an add, a
        pipelined window, the goodbye at close): :class:`RedisTimeouts`; the others are
        not used.
    :param trimming: trim the stream on each add: :class:`Trimming`.
    :param body_field: the field holding the body (the provider's ``body_field``).
    :param pipeline: most commands per round trip in ``publish_many`` (an int >= 1).
    :param max_connections: the pool's size.
    :param type_header: the header field a typed object's type is named in (``None``:
        none; never the body field).

    Flat keywords (``RedisPublisher("orders", url=..., maxlen=1000)``): ``url``,
    ``connection_options``; ``connect_timeout``, ``socket_timeout`` (``timeouts.call``);
    ``maxlen``, ``approximate``; and ``stream``, ``body_field``, ``pipeline``,
    ``max_connections``, ``type_header``.
    """

    primary: ClassVar[str | None] = "stream"
    flat: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            **_CONNECTION_FLAT,
            **shared_flat("connect_timeout"),
            "socket_timeout": "timeouts.call",
            "maxlen": "trimming.maxlen",
            "approximate": "trimming.approximate",
        }
    )

    stream: str = setting(check=non_empty)
    connection: Connection = _CONNECTION
    timeouts: RedisTimeouts = RedisTimeouts()
    trimming: Trimming = Trimming()
    body_field: str = BODY_FIELD
    pipeline: int = setting(1000, check=whole(1))
    max_connections: int = 8
    type_header: str | None = setting(TYPE_HEADER, check=optional(non_empty))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.type_header is not None and self.type_header == self.body_field:
            raise SettingError(
                type(self).__name__,
                "type_header",
                f"a field other than the body field ({self.body_field!r}), or None",
                self.type_header,
            )
        _check_connection(type(self).__name__, self.connection)


# -- the constructors' adapter ----------------------------------------------------------

S = TypeVar("S", bound=Settings)


def settings_from(
    settings_type: type[S], owner: str, settings: Any, options: Mapping[str, Any]
) -> S:
    """Core's :func:`~loafer_core.settings.settings_of`."""
    return _settings_of(settings_type, owner, settings, options)
