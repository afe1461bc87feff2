"""Settings of the AMQP 1.0 provider and publisher, as frozen dataclasses.

``AMQPProvider(AMQPSettings(address="/amq/queue/orders", connection=Connection(
url="amqp://broker:5672"), amqp=AMQPConnection(user="app", password=...)))`` is the same
provider as ``AMQPProvider("amqp://broker:5672", "/amq/queue/orders", user="app",
password=...)``: the flat keywords of today are mapped onto these fields (``flat``). The
pieces :class:`AMQPConnection` (SASL, virtual host, heartbeat) and :class:`TLS`
(``ssl_*``) are shared by :class:`AMQPSettings` and :class:`AMQPPublisherSettings`, with
core's :class:`~loafer_core.settings.Connection` (the URL) and
:class:`~loafer_core.settings.Timeouts`.
"""

# No ``from __future__ import annotations``: the config loader hands the field types to
# pydantic, so they must be real objects.

import dataclasses
import math
from typing import Any, Literal

from loafer_amqp._url import parse_url
from loafer_core.errors import ConfigurationError
from loafer_core.settings import (
    Check,
    Connection,
    SettingError,
    Settings,
    Timeouts,
    choice,
    name,
    optional,
    seconds,
    setting,
    shared_flat,
)
from loafer_core.typed import TYPE_HEADER

__all__ = [
    "TLS",
    "AMQPCommonSettings",
    "AMQPConnection",
    "AMQPPublisherSettings",
    "AMQPSettings",
    "BrokerProfile",
]

#: The ``broker`` outcome profiles (spelled out again on the field, where ruff needs it).
BrokerProfile = Literal["auto", "rabbitmq", "generic"]


def _at_least_zero(value: Any) -> str | None:
    """A finite number of seconds >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        return "seconds >= 0"
    return None


def _text(value: Any) -> str | None:
    """A string (possibly empty)."""
    return None if isinstance(value, str) else "a string"


_TEXT = optional(_text)
_BOOL = choice(True, False)


def _a(cls: type[Any]) -> Check:
    """An instance of ``cls``."""

    def check(value: Any) -> str | None:
        return None if isinstance(value, cls) else f"a {cls.__name__}"

    return check


@dataclasses.dataclass(frozen=True, kw_only=True)
class AMQPConnection(Settings):
    """How the AMQP connection opens, beyond its URL.

    :param user: / ``password``: SASL PLAIN credentials (override the URL's); without
        any, SASL ANONYMOUS is used. ``password`` is a secret (never shown).
    :param sasl_mechanisms: space-separated mechanisms to allow (``None``: PLAIN with a
        user, ANONYMOUS without).
    :param virtual_host: the ``hostname`` sent in ``open`` (RabbitMQ: ``vhost:NAME``).
    :param heartbeat: idle timeout in seconds (the broker is probed at half of it);
        ``None`` disables it.
    """

    user: str | None = setting(None, check=_TEXT)
    password: str | None = setting(None, check=_TEXT, secret=True)
    sasl_mechanisms: str | None = setting(None, check=_TEXT)
    virtual_host: str | None = setting(None, check=_TEXT)
    heartbeat: float | None = setting(60.0, check=optional(_at_least_zero))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TLS(Settings):
    """TLS for ``amqps://`` URLs (proton's client ``SSLDomain``).

    :param ca: the trusted CAs' file (``ssl_ca``).
    :param cert: / ``key``: a client certificate and its private key (``ssl_cert``,
        ``ssl_key``); ``key_password`` (``ssl_key_password``, a secret) opens the key.
    :param verify: verify the broker's certificate and host name (``ssl_verify``;
        ``False``: encryption without authentication).
    """

    ca: str | None = setting(None, check=_TEXT)
    cert: str | None = setting(None, check=_TEXT)
    key: str | None = setting(None, check=_TEXT)
    key_password: str | None = setting(None, check=_TEXT, secret=True)
    verify: bool = setting(True, check=_BOOL)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cert and not self.key:
            raise ConfigurationError(
                "a client certificate (ssl_cert, TLS.cert) needs its key (ssl_key, TLS.key)"
            )

    @property
    def files(self) -> bool:
        """Whether a CA, certificate or key file is given."""
        return bool(self.ca or self.cert or self.key)


_BROKERS = choice("auto", "rabbitmq", "generic")

#: The flat keywords both the provider and the publisher take.
_COMMON_FLAT = {
    **shared_flat("url", "connect_timeout", "close_timeout"),
    "reconnect_max_delay": "timeouts.reconnect",
    "user": "amqp.user",
    "password": "amqp.password",
    "sasl_mechanisms": "amqp.sasl_mechanisms",
    "virtual_host": "amqp.virtual_host",
    "heartbeat": "amqp.heartbeat",
    "ssl_ca": "tls.ca",
    "ssl_cert": "tls.cert",
    "ssl_key": "tls.key",
    "ssl_key_password": "tls.key_password",
    "ssl_verify": "tls.verify",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class AMQPCommonSettings(Settings):
    """What :class:`AMQPSettings` and :class:`AMQPPublisherSettings` share.

    :param address: the AMQP address: the provider's source, the publisher's target.
    :param connection: the broker's URL, ``amqp://[user[:password]@]host[:port]`` or
        ``amqps://...`` (no path: the address is separate); its ``name`` is the AMQP
        container id (``None``: a random one). Its ``tls`` and ``options`` are not used
        by proton (TLS is :attr:`tls`): giving them is an error.
    :param amqp: SASL, virtual host, heartbeat (:class:`AMQPConnection`).
    :param tls: TLS for ``amqps://`` (:class:`TLS`).
    :param timeouts: ``connect`` (``connect_timeout``, 15 s), ``close``
        (``close_timeout``, 10 s), ``reconnect`` (``reconnect_max_delay``, 10 s: the cap
        of the reconnect backoff, which starts at 0.1 s).
    """

    primary = "address"

    address: str = setting(check=name)
    connection: Connection = setting(check=_a(Connection))
    # (`setting` is a field specifier, which ruff cannot tell: RUF009 does not apply)
    amqp: AMQPConnection = setting(default_factory=AMQPConnection, check=_a(AMQPConnection))  # noqa: RUF009
    tls: TLS = setting(default_factory=TLS, check=_a(TLS))  # noqa: RUF009
    timeouts: Timeouts = setting(
        Timeouts(connect=15.0, close=10.0, reconnect=10.0), check=_a(Timeouts)
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = type(self).__name__
        if self.connection.tls is not None or self.connection.options:
            raise ConfigurationError(
                f"{owner}: connection.tls and connection.options are not used by AMQP 1.0 "
                "(proton takes no ssl.SSLContext): give TLS as tls=TLS(...) (ssl_* options)"
            )
        scheme = parse_url(self.connection.url).scheme  # a masked ConfigurationError
        if scheme != "amqps" and self.tls.files:
            raise ConfigurationError("TLS options (ssl_*) need an amqps:// URL")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AMQPSettings(AMQPCommonSettings):
    """An :class:`~loafer_amqp.AMQPProvider`'s settings (the shared fields are those of
    :class:`AMQPCommonSettings`).

    :param address: the source to consume from. RabbitMQ: ``/amq/queue/NAME`` (an
        existing queue; declares nothing) or ``/queue/NAME``; other brokers: the queue name.
    :param timeouts: ``connect`` (start-up bound: attach or raise ``ProviderError``;
        ``connect_timeout``, 15 s), ``close`` (``close_timeout``, 10 s), ``poll``
        (``fetch_wait``, 20 s: the longest :meth:`~loafer_amqp.AMQPProvider.fetch` waits
        for a first message before returning nothing), ``reconnect``
        (``reconnect_max_delay``, 10 s: the cap of the reconnect backoff, which starts
        at 0.1 s). ``publish`` is not used.
    :param broker: ``"auto"`` (default: detect from the broker's open properties; retries
        are sent as ``released`` unless the broker is known to take ``modified``; no
        attempt counting), ``"rabbitmq"`` (same, for RabbitMQ's AMQP 1.0 plugin) or
        ``"generic"`` (a broker with full outcome support: RETRY sends ``modified`` with
        delivery-failed and attempts come from the header's delivery-count).
    :param batch_window: after waiting for the first message, how long ``fetch`` waits
        for more of the same burst (seconds, 0 up to ``fetch_wait``; default 0: return at
        once).
    :param max_retry_delay: longest ``RETRY(delay)`` held client-side; longer delays are
        capped (a held delivery keeps its credit; brokers may time out unsettled ones).

    Flat keywords: ``url``, ``address``, ``broker``, ``user``, ``password``,
    ``sasl_mechanisms``, ``virtual_host``, ``heartbeat``, ``ssl_ca``, ``ssl_cert``,
    ``ssl_key``, ``ssl_key_password``, ``ssl_verify``, ``connect_timeout``,
    ``close_timeout``, ``fetch_wait``, ``batch_window``, ``max_retry_delay``,
    ``reconnect_max_delay``.
    """

    flat = {**_COMMON_FLAT, "fetch_wait": "timeouts.poll"}

    timeouts: Timeouts = setting(
        Timeouts(connect=15.0, close=10.0, poll=20.0, reconnect=10.0), check=_a(Timeouts)
    )
    broker: Literal["auto", "rabbitmq", "generic"] = setting("auto", check=_BROKERS)
    batch_window: float = setting(0.0, check=_at_least_zero)
    max_retry_delay: float = setting(900.0, check=seconds)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_window > self.timeouts.poll:
            raise SettingError(
                type(self).__name__,
                "batch_window",
                f"seconds <= fetch_wait ({self.timeouts.poll})",
                self.batch_window,
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class AMQPPublisherSettings(AMQPCommonSettings):
    """An :class:`~loafer_amqp.AMQPPublisher`'s settings (the shared fields are those of
    :class:`AMQPCommonSettings`).

    :param address: the target address messages are sent to.
    :param timeouts: ``connect`` (``connect_timeout``, 15 s), ``close``
        (``close_timeout``, 10 s), ``reconnect`` (``reconnect_max_delay``, 10 s: the cap
        of the reconnect backoff). ``poll`` and ``publish`` are not used (see
        ``timeout``).
    :param durable: the messages' ``durable`` header unless a publish says otherwise.
    :param timeout: how long a publish waits for the broker's outcome (seconds; ``None``:
        no limit).
    :param type_header: the application property naming a typed body's type (``None``:
        none; see :func:`~loafer_core.typed.encode`).

    Flat keywords: ``url``, ``address``, ``user``, ``password``, ``sasl_mechanisms``,
    ``virtual_host``, ``heartbeat``, ``ssl_ca``, ``ssl_cert``, ``ssl_key``,
    ``ssl_key_password``, ``ssl_verify``, ``durable``, ``timeout``, ``connect_timeout``,
    ``close_timeout``, ``reconnect_max_delay``, ``type_header``.
    """

    flat = dict(_COMMON_FLAT)

    durable: bool = setting(True, check=_BOOL)
    timeout: float | None = setting(60.0, check=optional(seconds))
    type_header: str | None = setting(TYPE_HEADER, check=optional(name))
