"""Settings objects of the NATS plugin: :class:`NATSSettings` (the provider's) and
:class:`NATSPublisherSettings` (the publisher's), frozen dataclasses checked when built.

``NATSProvider(NATSSettings(stream="ORDERS", consumer="billing"))`` and
``NATSProvider("ORDERS", consumer="billing")`` build the same provider: the flat keywords
of today are mapped onto these fields (:attr:`NATSSettings.flat`). The pieces:
:class:`StreamSetup` and :class:`ConsumerSetup` (what ``create=True`` makes),
:class:`DeadLetters`, and core's :class:`~loafer_core.settings.Connection` and
:class:`~loafer_core.settings.Timeouts` (with this plugin's defaults,
:data:`DEFAULT_TIMEOUTS`).
"""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from loafer_core.errors import ConfigurationError
from loafer_core.settings import (
    Check,
    Connection,
    SettingError,
    Settings,
    Timeouts,
    optional,
    seconds,
    setting,
    shared_flat,
    whole,
)
from loafer_core.settings import settings_of as _settings_of
from loafer_core.typed import TYPE_HEADER
from loafer_nats.errors import URL_RULES, check_url

__all__ = [
    "DEFAULT_TIMEOUTS",
    "DEFAULT_URL",
    "ConsumerSetup",
    "DeadLetters",
    "NATSPublisherSettings",
    "NATSSettings",
    "StreamSetup",
]

#: The server a provider or publisher connects to when no URL is given.
DEFAULT_URL = "nats://127.0.0.1:4222"
#: The plugin's timeouts (seconds): connect 10, close 10, poll 5, publish (a JetStream API
#: answer or a publish ack) 10, reconnect (the pause between attempts) 1.
DEFAULT_TIMEOUTS = Timeouts(connect=10.0, close=10.0, poll=5.0, publish=10.0, reconnect=1.0)

S = TypeVar("S", bound=Settings)

_SCHEMES = "a nats://, tls://, ws:// or wss:// URL"


def _jetstream_name(what: str) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, str) and value and not any(c in value for c in " .*>"):
            return None
        return f"a {what} name (no spaces, '.', '*' or '>')"

    return check


def _subjects(value: Any) -> str | None:
    if value is None or (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(isinstance(s, str) and s for s in value)
    ):
        return None
    return "a list of subjects or None"


def _url_problem(url: Any) -> str | None:
    """What a NATS URL should be, or ``None`` when it is one (see :func:`check_url`)."""
    try:
        check_url("", url)
    except ConfigurationError:
        schemes = tuple(f"{s}://" for s in URL_RULES.schemes)
        if not isinstance(url, str) or not url.startswith(schemes):
            return _SCHEMES
        return (
            f"{_SCHEMES} read as meant (a valid host and port; any '#', '/', '?' or '@' in "
            "the user name, password or token percent-encoded)"
        )
    return None


def _check_connection(settings: Settings, connection: Connection) -> None:
    # the URL may hold a password: its value is never shown (see NATSProvider's
    # constructor, which checks a flat url first to name it masked)
    wanted = _url_problem(connection.url)
    if wanted is not None:
        raise SettingError(
            type(settings).__name__, "connection.url", wanted, connection.url, secret=True
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class StreamSetup(Settings):
    """The stream ``create=True`` makes (work-queue retention, file storage).

    :param subjects: its subjects (``None``: the stream's name); kept as a tuple.
    :param options: more ``StreamConfig`` fields.
    """

    subjects: Sequence[str] | None = setting(None, check=_subjects)
    options: Mapping[str, Any] = setting(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.subjects is not None:
            object.__setattr__(self, "subjects", tuple(self.subjects))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConsumerSetup(Settings):
    """The durable pull consumer ``create=True`` makes (explicit acks).

    :param ack_wait: its ack wait, seconds (an existing consumer's own is read at start:
        it is the provider's ``lease_duration``).
    :param max_deliver: its delivery limit (``None``: unlimited).
    :param filter_subject: its subject filter.
    :param options: more ``ConsumerConfig`` fields (``max_ack_pending``, ...).
    """

    ack_wait: float = setting(30.0, check=seconds)
    max_deliver: int | None = setting(None, check=optional(whole(1)))
    filter_subject: str | None = None
    options: Mapping[str, Any] = setting(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeadLetters(Settings):
    """Where rejected messages are republished before they are ``term``'ed (JetStream
    has no dead-letter queue).

    :param subject: the subject (``None``: rejected messages are only termed); a stream
        must capture it.
    :param stream: the name of the stream ``create=True`` makes for it (``None``:
        ``"<stream>-dead"``).
    """

    subject: str | None = None
    stream: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class NATSSettings(Settings):
    """A :class:`~loafer_nats.NATSProvider`'s settings: a JetStream stream consumed
    through a durable pull consumer.

    :param stream: the stream's name (no spaces, ``.``, ``*`` or ``>``).
    :param consumer: the durable pull consumer's name (``None``: ``"loafer-<stream>"``).
    :param create: create the stream (:attr:`stream_setup`), the consumer
        (:attr:`consumer_setup`) and the dead-letter stream when missing; otherwise a
        missing one is a ConfigurationError at start saying how to create it.
    :param stream_setup: the stream ``create`` makes (flat: ``subjects``,
        ``stream_options``).
    :param consumer_setup: the consumer ``create`` makes (flat: ``ack_wait``,
        ``max_deliver``, ``filter_subject``, ``consumer_options``).
    :param dead_letters: where rejected messages go (flat: ``dead_letter_subject``,
        ``dead_letter_stream``).
    :param connection: the server (flat: ``url``, a ``nats://``, ``tls://`` or
        ``ws[s]://`` URL whose ``user:password@`` or ``token@`` never appears in logs,
        errors or reprs; ``connection_name``, default ``"loafer:<stream>"``; ``tls``, an
        ``ssl.SSLContext``; ``connection_options``, more ``nats.connect`` arguments,
        their secrets masked).
    :param timeouts: :data:`DEFAULT_TIMEOUTS` (flat: ``poll_timeout``, one fetch's
        longest wait, the pull request's ``expires``; ``publish_timeout``, a JetStream
        API answer or a dead letter's publish ack; ``connect_timeout``;
        ``close_timeout``; ``reconnect_wait``).
    """

    primary = "stream"
    flat = {
        **shared_flat(
            "url",
            "connection_name",
            "connection_options",
            "poll_timeout",
            "publish_timeout",
            "connect_timeout",
            "close_timeout",
        ),
        "tls": "connection.tls",
        "reconnect_wait": "timeouts.reconnect",
        "subjects": "stream_setup.subjects",
        "stream_options": "stream_setup.options",
        "ack_wait": "consumer_setup.ack_wait",
        "max_deliver": "consumer_setup.max_deliver",
        "filter_subject": "consumer_setup.filter_subject",
        "consumer_options": "consumer_setup.options",
        "dead_letter_subject": "dead_letters.subject",
        "dead_letter_stream": "dead_letters.stream",
    }

    stream: str = setting(check=_jetstream_name("stream"))
    consumer: str | None = setting(None, check=optional(_jetstream_name("consumer")))
    create: bool = False
    stream_setup: StreamSetup = StreamSetup()
    consumer_setup: ConsumerSetup = ConsumerSetup()
    dead_letters: DeadLetters = DeadLetters()
    connection: Connection = Connection(url=DEFAULT_URL)
    timeouts: Timeouts = DEFAULT_TIMEOUTS

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_connection(self, self.connection)

    @property
    def consumer_name(self) -> str:
        """The consumer's name: :attr:`consumer`, else ``"loafer-<stream>"``."""
        return self.consumer if self.consumer is not None else f"loafer-{self.stream}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class NATSPublisherSettings(Settings):
    """A :class:`~loafer_nats.NATSPublisher`'s settings.

    :param subject: the default subject (``publish(..., subject=...)`` overrides it).
    :param stream: when set, the server refuses messages not stored by this stream.
    :param pipeline: most publish acks awaited at once in ``publish_many``.
    :param type_header: the header a typed object's type is named in (``None``: none).
    :param connection: the server (flat: ``url``, ``connection_name``, default
        ``"loafer:publisher"``, ``tls``, ``connection_options``), as
        :class:`NATSSettings`'.
    :param timeouts: :data:`DEFAULT_TIMEOUTS` (flat: ``timeout``, the longest wait for one
        publish ack; ``connect_timeout``; ``close_timeout``; ``reconnect_wait``).
    """

    primary = "subject"
    flat = {
        **shared_flat(
            "url", "connection_name", "connection_options", "connect_timeout", "close_timeout"
        ),
        "tls": "connection.tls",
        "timeout": "timeouts.publish",
        "reconnect_wait": "timeouts.reconnect",
    }

    subject: str | None = None
    stream: str | None = None
    pipeline: int = setting(1000, check=whole(1))
    type_header: str | None = TYPE_HEADER
    connection: Connection = Connection(url=DEFAULT_URL, name="loafer:publisher")
    timeouts: Timeouts = DEFAULT_TIMEOUTS

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_connection(self, self.connection)


def settings_of(
    settings_type: type[S], owner: str, settings: S | str | None, options: Mapping[str, Any]
) -> S:
    """Core's :func:`~loafer_core.settings.settings_of`, a flat ``url`` checked first so
    that its error shows it masked."""
    if "url" in options:
        check_url(owner, options["url"])
    return _settings_of(settings_type, owner, settings, options)
