"""Settings objects of the Pub/Sub plugin: :class:`PubSubSettings` (the provider's) and
:class:`PubSubPublisherSettings` (the publisher's), frozen dataclasses checked when built.

``PubSubProvider(PubSubSettings(project="shop", subscription="orders-billing"))`` and
``PubSubProvider("orders-billing", project="shop")`` build the same provider: the flat
keywords are mapped onto these fields (:attr:`PubSubSettings.flat`). The pieces:
:class:`Endpoint` (the emulator or the real service, and the credentials file),
:class:`SubscriptionSetup` (what ``create=True`` makes) and core's
:class:`~loafer_core.settings.Timeouts` (with this plugin's defaults,
:data:`DEFAULT_TIMEOUTS`).
"""

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from loafer_core.settings import (
    Check,
    Settings,
    Timeouts,
    optional,
    seconds,
    setting,
    whole,
)
from loafer_core.typed import TYPE_HEADER

__all__ = [
    "DEFAULT_TIMEOUTS",
    "MAX_ACK_DEADLINE",
    "MAX_PULL",
    "Endpoint",
    "PubSubPublisherSettings",
    "PubSubSettings",
    "SubscriptionSetup",
]

#: The plugin's timeouts (seconds): connect (one admin call at start) 10, close 10, poll
#: (one fetch's longest wait) 5, publish (a publish answer, a dead letter's) 30,
#: reconnect 1.
DEFAULT_TIMEOUTS = Timeouts(connect=10.0, close=10.0, poll=5.0, publish=30.0, reconnect=1.0)
#: Pub/Sub's longest ack deadline (and so the longest RETRY delay), seconds.
MAX_ACK_DEADLINE = 600
#: The most messages one pull returns.
MAX_PULL = 1000

# https://cloud.google.com/pubsub/docs/pubsub-basics#resource_names
_RESOURCE = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
_PROJECT = re.compile(r"[a-z][a-z0-9\-.:]{0,61}[a-z0-9]|[a-z]")
_SCHEMA = re.compile(r"projects/[^/\s]+/schemas/[^/\s]+")
_HOST = re.compile(r"[A-Za-z0-9.\-]+:[0-9]{1,5}|\[[0-9A-Fa-f:]+\]:[0-9]{1,5}")


def _resource(what: str) -> Check:
    def check(value: Any) -> str | None:
        if (
            isinstance(value, str)
            and _RESOURCE.fullmatch(value)
            and not value.lower().startswith("goog")
        ):
            return None
        return (
            f"a {what} name (3 to 255 letters, digits or -_.~+%, starting with a letter, "
            "not with 'goog'; the short name, not projects/.../)"
        )

    return check


def _project(value: Any) -> str | None:
    if isinstance(value, str) and _PROJECT.fullmatch(value):
        return None
    return "a Google Cloud project id (lowercase letters, digits and hyphens)"


def _host(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and _HOST.fullmatch(value)):
        return None
    return "host:port of a Pub/Sub emulator (as PUBSUB_EMULATOR_HOST) or None"


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, str) and value) else "a path or None"


def _attempts(value: Any) -> str | None:
    if value is None or (
        isinstance(value, int) and not isinstance(value, bool) and 5 <= value <= 100
    ):
        return None
    return "an int from 5 to 100 (Pub/Sub's bounds) or None"


def _schema(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and _SCHEMA.fullmatch(value)):
        return None
    return "a schema's full name, projects/<project>/schemas/<schema>, or None"


def _encoding(value: Any) -> str | None:
    return None if value in ("JSON", "BINARY") else "'JSON' or 'BINARY' (Pub/Sub's encodings)"


def _deadline(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ACK_DEADLINE:
        return None
    return f"whole seconds from 1 to {MAX_ACK_DEADLINE} (the real service takes 10 at least)"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Endpoint(Settings):
    """Where the API is and who calls it.

    :param emulator_host: ``host:port`` of a Pub/Sub emulator (plain HTTP, no
        credentials). ``None``: the ``PUBSUB_EMULATOR_HOST`` environment variable when
        set (read at start), else the real service.
    :param api_root: the API's root URL instead (``https://pubsub.googleapis.com/v1``,
        a regional endpoint, a proxy); wins over both. A plain ``http://`` root is sent
        no credentials (an emulator elsewhere, a local proxy).
    :param service_file: a service account key file (``None``: the application default
        credentials). Its path is kept out of reprs and errors, its content out of logs.
    """

    emulator_host: str | None = setting(None, check=_host)
    api_root: str | None = setting(None, check=_text)
    service_file: str | None = setting(None, check=_text, secret=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SubscriptionSetup(Settings):
    """The topic and subscription ``create=True`` makes when missing (an existing
    subscription's own settings are read at start and win).

    :param topic: the topic to subscribe (required with ``create``).
    :param ack_deadline: the subscription's ack deadline, the lease of a delivery,
        seconds.
    :param message_ordering: deliver messages of one ordering key in order.
    :param max_delivery_attempts: the dead-letter policy's limit (5 to 100), when the
        provider's ``dead_letter_topic`` is set (that topic is created too).
    :param options: more Subscription fields, as the REST API spells them
        (``{"retainAckedMessages": True}``).
    """

    topic: str | None = setting(None, check=optional(_resource("topic")))
    ack_deadline: int = setting(30, check=_deadline)
    message_ordering: bool = False
    max_delivery_attempts: int = setting(5, check=_attempts)
    options: Mapping[str, Any] = setting(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PubSubSettings(Settings):
    """A :class:`~loafer_pubsub.PubSubProvider`'s settings: one pull subscription.

    :param subscription: the subscription's short name.
    :param project: the Google Cloud project id.
    :param create: create the topic, the subscription and the dead-letter topic when
        missing (:attr:`setup`); otherwise a missing subscription is a
        ConfigurationError at start saying how to create it.
    :param setup: what ``create`` makes (flat: ``topic``, ``ack_deadline``,
        ``message_ordering``, ``max_delivery_attempts``,
        ``subscription_options``).
    :param dead_letter_topic: where REJECT publishes; ``None``: the subscription's own
        dead-letter policy topic (read at start). Without either, REJECT acks the
        message (dropped, with a warning).
    :param max_messages: the most messages one pull asks for (also bounded by the
        route's free capacity: Pub/Sub's flow control is ours).
    :param poll_interval: the pause between two pulls that found nothing, seconds
        (pulls return at once: a pull abandoned mid-wait would keep its messages leased).
    :param schema: the topic's schema (``projects/<project>/schemas/<schema>``), when it
        has one: named in the AsyncAPI ``googlepubsub`` channel binding, which requires
        it (loafer validates nothing against it; Pub/Sub does, at publish).
    :param schema_encoding: how the topic's messages are encoded against ``schema``:
        ``"JSON"`` or ``"BINARY"``.
    :param endpoint: :class:`Endpoint` (flat: ``emulator_host``, ``api_root``,
        ``service_file``).
    :param timeouts: :data:`DEFAULT_TIMEOUTS` (flat: ``poll_timeout``,
        ``publish_timeout``, ``connect_timeout``, ``close_timeout``).
    """

    primary = "subscription"
    flat = {
        "emulator_host": "endpoint.emulator_host",
        "api_root": "endpoint.api_root",
        "service_file": "endpoint.service_file",
        "topic": "setup.topic",
        "ack_deadline": "setup.ack_deadline",
        "message_ordering": "setup.message_ordering",
        "max_delivery_attempts": "setup.max_delivery_attempts",
        "subscription_options": "setup.options",
        "poll_timeout": "timeouts.poll",
        "publish_timeout": "timeouts.publish",
        "connect_timeout": "timeouts.connect",
        "close_timeout": "timeouts.close",
    }

    subscription: str = setting(check=_resource("subscription"))
    project: str = setting(check=_project)
    create: bool = False
    setup: SubscriptionSetup = SubscriptionSetup()
    dead_letter_topic: str | None = setting(None, check=optional(_resource("topic")))
    max_messages: int = setting(500, check=whole(1))
    poll_interval: float = setting(0.05, check=seconds)
    schema: str | None = setting(None, check=_schema)
    schema_encoding: str = setting("JSON", check=_encoding)
    endpoint: Endpoint = Endpoint()
    timeouts: Timeouts = DEFAULT_TIMEOUTS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_messages > MAX_PULL:
            object.__setattr__(self, "max_messages", MAX_PULL)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PubSubPublisherSettings(Settings):
    """A :class:`~loafer_pubsub.PubSubPublisher`'s settings.

    :param topic: the default topic's short name (``publish(..., topic=...)`` overrides).
    :param project: the Google Cloud project id.
    :param max_batch: the most messages one publish call carries (concurrent publishes
        share calls; Pub/Sub takes 1,000 and 10 MB a call).
    :param linger: how long a publish waits for others to share its call, seconds.
    :param type_header: the attribute a typed object's type is named in (``None``: none).
    :param schema: the topic's schema, for the AsyncAPI binding (as
        :attr:`PubSubSettings.schema`).
    :param schema_encoding: ``"JSON"`` or ``"BINARY"`` (as
        :attr:`PubSubSettings.schema_encoding`).
    :param endpoint: :class:`Endpoint` (flat: ``emulator_host``, ``api_root``,
        ``service_file``).
    :param timeouts: :data:`DEFAULT_TIMEOUTS` (flat: ``timeout``, one publish answer's
        longest wait; ``close_timeout``).
    """

    primary = "topic"
    flat = {
        "emulator_host": "endpoint.emulator_host",
        "api_root": "endpoint.api_root",
        "service_file": "endpoint.service_file",
        "timeout": "timeouts.publish",
        "close_timeout": "timeouts.close",
    }

    topic: str | None = setting(None, check=optional(_resource("topic")))
    project: str = setting(check=_project)
    max_batch: int = setting(1000, check=whole(1))
    linger: float = setting(0.005, check=lambda v: None if v == 0 else seconds(v))
    type_header: str | None = TYPE_HEADER
    schema: str | None = setting(None, check=_schema)
    schema_encoding: str = setting("JSON", check=_encoding)
    endpoint: Endpoint = Endpoint()
    timeouts: Timeouts = DEFAULT_TIMEOUTS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_batch > MAX_PULL:
            object.__setattr__(self, "max_batch", MAX_PULL)
