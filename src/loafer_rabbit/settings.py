"""What a :class:`~loafer_rabbit.RabbitProvider` and a :class:`~loafer_rabbit.RabbitPublisher`
are configured with: frozen settings objects (:mod:`loafer_core.settings`).

``RabbitProvider(RabbitSettings(queue="orders", connection=Connection(url=...),
topology=Topology(declare=True)))`` is the same provider as ``RabbitProvider("orders",
url=..., declare=True)``: each settings class maps the historical flat keywords onto its
fields (:attr:`RabbitSettings.flat`). Every value is checked when the settings are built;
the URL's password and query values never appear in a ``repr`` or an error.
"""

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from loafer_core.errors import ConfigurationError
from loafer_core.settings import (
    Connection,
    Settings,
    Timeouts,
    choice,
    name,
    optional,
    setting,
    shared_flat,
    whole,
)
from loafer_core.typed import TYPE_HEADER
from loafer_rabbit.errors import check_url

__all__ = [
    "DEFAULT_URL",
    "DeadLetters",
    "RabbitPublisherSettings",
    "RabbitSettings",
    "Retries",
    "Topology",
]

#: The broker URL when none is given: a local RabbitMQ with its default user.
DEFAULT_URL = "amqp://guest:guest@localhost:5672/"

#: What ``dead_letter`` takes: ``True``, ``False`` or ``"queue"``.
DeadLetter = bool | Literal["queue"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Topology(Settings):
    """The work queue as ``start`` declares it (or only checks it exists).

    :param declare: declare the work queue (durable, ``queue_type``, ``arguments``)
        instead of only checking it exists; a missing queue is a ConfigurationError at
        start-up otherwise.
    :param queue_type: ``"classic"`` or ``"quorum"``, used when ``declare`` is true.
    :param durable: durability of a declared work queue (a quorum queue is always durable).
    :param arguments: extra ``x-`` arguments of a declared work queue.
    """

    declare: bool = False
    queue_type: Literal["classic", "quorum"] = setting("classic", check=choice("classic", "quorum"))
    durable: bool = True
    arguments: Mapping[str, Any] | None = setting(default_factory=dict)

    def __post_init__(self) -> None:
        if self.arguments is None:
            object.__setattr__(self, "arguments", {})
        super().__post_init__()
        if self.queue_type == "quorum" and not self.durable:
            raise ConfigurationError(
                "RabbitProvider: quorum queues are always durable "
                "(queue_type='quorum' with durable=False)"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Retries(Settings):
    """How ``RETRY(delay)`` waits.

    :param delayed: declare a retry queue so that ``RETRY(delay)`` waits ``delay``
        seconds (per-message TTL, dead-lettered back to the work queue); ``False``: a
        delayed retry is retried at once.
    :param queue: the retry queue's name (``None``: ``"<queue>.retry"``); with ``tiers``,
        the prefix of the retry queues' names.
    :param tiers: one retry queue per power-of-two band of delays (``"<queue>.<N>ms"``
        holds delays in ``(N/2, N]`` ms), declared on first use. RabbitMQ expires
        messages only at the head of a queue, so in a single retry queue a short delay
        waits behind a longer one published before it; in a band it waits at most twice
        its delay. ``False``: one retry queue.
    """

    delayed: bool = True
    queue: str | None = setting(None, check=optional(name))
    tiers: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeadLetters(Settings):
    """Where REJECT sends a message.

    :param mode: ``False``: REJECT is ``basic.reject(requeue=False)`` and nothing is
        claimed; ``"queue"``: the same, and the queue is known to have its own
        dead-letter exchange (argument or policy); ``True``: the provider declares a
        dead-letter exchange and queue and REJECT lands there.
    :param exchange: name of the declared dead-letter exchange (``None``:
        ``"<queue>.dlx"``).
    :param queue: name of the declared dead-letter queue (``None``: ``"<queue>.dead"``).
    """

    mode: bool | Literal["queue"] = setting(False, check=choice(True, False, "queue"))
    exchange: str | None = setting(None, check=optional(name))
    queue: str | None = setting(None, check=optional(name))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RabbitSettings(Settings):
    """A :class:`~loafer_rabbit.RabbitProvider`'s settings.

    :param queue: the work queue's name.
    :param connection: the broker: ``url`` (``amqp://`` or ``amqps://``, with user,
        password, host, port, vhost and aio-pika's query options; the password never
        appears in logs or errors), ``name`` (shown in RabbitMQ's management tools;
        ``None``: ``"loafer:<queue>"``), ``tls`` (an ``ssl.SSLContext`` for
        ``amqps://``), ``options`` (extra keyword arguments for
        ``aio_pika.connect_robust``).
    :param timeouts: in seconds: ``connect`` (the first connection), ``close``
        (``close()``'s goodbyes to the broker: pending acks, consumer cancel, requeues;
        closing the connection then gets what is left of it, at least one second; a
        start in progress is abandoned), ``poll`` (one ``fetch`` call when nothing
        arrives), ``publish`` (a publisher confirm), ``reconnect`` (the pause between
        reconnection attempts).
    :param topology: the work queue's declaration (:class:`Topology`).
    :param retries: delayed retries (:class:`Retries`).
    :param dead_letters: dead-lettering (:class:`DeadLetters`).
    :param prefetch_headroom: deliveries the broker may push beyond the route's capacity
        (0: the prefetch equals ``max_concurrency``).

    Flat keywords (``RabbitProvider("q", url=..., declare=True)``): ``url``,
    ``connection_name``, ``ssl_context``, ``connection_options``; ``poll_timeout``,
    ``publish_timeout``, ``connect_timeout``, ``close_timeout``, ``reconnect_interval``;
    ``declare``, ``queue_type``, ``durable``, ``queue_arguments``; ``delayed_retry``,
    ``retry_queue``, ``retry_tiers``; ``dead_letter``, ``dead_letter_exchange``,
    ``dead_letter_queue``.
    """

    primary: ClassVar[str | None] = "queue"
    flat: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            **shared_flat(
                "url",
                "connection_name",
                "ssl_context",
                "connection_options",
                "poll_timeout",
                "publish_timeout",
                "connect_timeout",
                "close_timeout",
            ),
            "reconnect_interval": "timeouts.reconnect",
            "declare": "topology.declare",
            "queue_type": "topology.queue_type",
            "durable": "topology.durable",
            "queue_arguments": "topology.arguments",
            "delayed_retry": "retries.delayed",
            "retry_queue": "retries.queue",
            "retry_tiers": "retries.tiers",
            "dead_letter": "dead_letters.mode",
            "dead_letter_exchange": "dead_letters.exchange",
            "dead_letter_queue": "dead_letters.queue",
        }
    )

    queue: str = setting(check=name)
    connection: Connection = Connection(url=DEFAULT_URL)
    timeouts: Timeouts = Timeouts()
    topology: Topology = Topology()
    retries: Retries = Retries()
    dead_letters: DeadLetters = DeadLetters()
    prefetch_headroom: int = setting(0, check=whole(0))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_url("RabbitProvider", self.connection.url)  # never shows the password


@dataclasses.dataclass(frozen=True, kw_only=True)
class RabbitPublisherSettings(Settings):
    """A :class:`~loafer_rabbit.RabbitPublisher`'s settings.

    :param exchange: the exchange's name (``""``, the default exchange, routes by queue
        name).
    :param routing_key: the default routing key (for the default exchange: the queue
        name); ``None``: each publish names one.
    :param mandatory: ask the broker to return messages no queue receives (an error).
    :param persistent: publish with ``delivery_mode=2`` (survives a broker restart when
        the queue is durable).
    :param pipeline: most unconfirmed messages in flight in ``publish_many``.
    :param type_header: the header a typed object's type is named in (``None``: none).
    :param connection: the broker (``url``, ``name``: default ``"loafer:publisher"``,
        ``tls``, ``options``: as for :class:`RabbitSettings`).
    :param timeouts: in seconds: ``publish`` (one confirm), ``connect`` (the
        connection), ``close`` (``close()``'s wait for the broker).

    Flat keywords (``RabbitPublisher(url, exchange, routing_key=..., timeout=5)``):
    ``url``, ``connection_name``, ``ssl_context``, ``connection_options``, ``timeout``
    (``timeouts.publish``), ``connect_timeout``, ``close_timeout``.
    """

    flat: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            **shared_flat(
                "url",
                "connection_name",
                "ssl_context",
                "connection_options",
                "connect_timeout",
                "close_timeout",
            ),
            "timeout": "timeouts.publish",
        }
    )

    exchange: str = ""
    routing_key: str | None = None
    mandatory: bool = True
    persistent: bool = True
    pipeline: int = setting(1000, check=whole(1))
    type_header: str | None = TYPE_HEADER
    connection: Connection = Connection(url=DEFAULT_URL, name="loafer:publisher")
    timeouts: Timeouts = Timeouts()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_url("RabbitPublisher", self.connection.url)  # never shows the password
