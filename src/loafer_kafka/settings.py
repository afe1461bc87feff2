"""Settings objects of the Kafka plugin: :class:`KafkaSettings` (the provider's) and
:class:`KafkaPublisherSettings` (the publisher's), frozen dataclasses checked when built.

``KafkaProvider(KafkaSettings(topic="orders", group_id="billing"))`` and
``KafkaProvider("orders", group_id="billing")`` build the same provider: the flat
keywords are mapped onto these fields (:attr:`KafkaSettings.flat`). The broker is core's
:class:`~loafer_core.settings.Connection`: a ``kafka://`` URL listing the bootstrap
servers (``kafka://user:password@host1:9092,host2:9092`` for SASL PLAIN, ``kafkas://``
for TLS), and the timeouts core's :class:`~loafer_core.settings.Timeouts` with this
plugin's defaults (:data:`DEFAULT_TIMEOUTS`).
"""

import dataclasses
import re
from typing import Any

from loafer_core.settings import (
    Connection,
    SettingError,
    Settings,
    Timeouts,
    choice,
    optional,
    seconds,
    setting,
    shared_flat,
    whole,
)
from loafer_core.typed import TYPE_HEADER

__all__ = [
    "DEFAULT_TIMEOUTS",
    "DEFAULT_URL",
    "KafkaPublisherSettings",
    "KafkaSettings",
]

#: The plugin's timeouts (seconds): connect 10, close 10, poll (one fetch's longest
#: wait) 1, publish (a send's acknowledgement, a dead letter's) 30, reconnect 1.
DEFAULT_TIMEOUTS = Timeouts(connect=10.0, close=10.0, poll=1.0, publish=30.0, reconnect=1.0)
#: The broker when none is given.
DEFAULT_URL = "kafka://127.0.0.1:9092"

_TOPIC = re.compile(r"[A-Za-z0-9._\-]{1,249}")


def _topic(value: Any) -> str | None:
    if isinstance(value, str) and _TOPIC.fullmatch(value) and value not in (".", ".."):
        return None
    return "a Kafka topic name (1 to 249 letters, digits, '.', '_' or '-')"


def _url(value: Any) -> str | None:
    from loafer_kafka.errors import check_url

    check_url("Kafka", value.url if isinstance(value, Connection) else value)
    return None


_ACKS = choice("all", 1, 0)
_FLAT = {
    **shared_flat("url", "ssl_context", "connection_options"),
    **shared_flat("connect_timeout", "close_timeout"),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class KafkaSettings(Settings):
    """A :class:`~loafer_kafka.KafkaProvider`'s settings: one topic, one consumer group.

    :param topic: the topic consumed.
    :param group_id: the consumer group (``None``: ``loafer-<topic>``); its committed
        offsets are where a restarted consumer resumes.
    :param create: create the topic (and the dead-letter topic) when missing, with
        ``partitions`` partitions; otherwise a missing one is a ConfigurationError.
    :param partitions: the partitions ``create`` gives a new topic.
    :param dead_letter_topic: where REJECT produces; ``{topic}`` is replaced by the
        topic's name. ``None``: REJECT commits the message away with a warning.
    :param ordering: ``"key"``: messages of one key are handled one at a time, in order
        (others concurrently, also within a partition); ``"partition"``: one at a time
        per partition; ``"none"``: no order.
    :param max_poll_records: the most records one fetch takes.
    :param commit_interval: how often settled offsets are committed, seconds (commits
        are batched: never one per message).
    :param revoke_timeout: how long revoked partitions' in-flight work may take to
        settle before it is abandoned (its offsets uncommitted: redelivered), seconds.
    :param session_timeout: the group's session timeout, seconds.
    :param idempotent: the dead-letter producer's idempotence (Tansu refuses it).
    :param max_retry_delay: the longest RETRY delay held in the consumer, seconds.
    :param connection: the broker (flat: ``url``, ``ssl_context``,
        ``connection_options``: more aiokafka consumer keywords).
    :param timeouts: :data:`DEFAULT_TIMEOUTS` (flat: ``poll_timeout``,
        ``publish_timeout``, ``connect_timeout``, ``close_timeout``).
    """

    primary = "topic"
    flat = {
        **_FLAT,
        "poll_timeout": "timeouts.poll",
        "publish_timeout": "timeouts.publish",
    }

    topic: str = setting(check=_topic)
    group_id: str | None = setting(None, check=optional(lambda v: None if v else "a name"))
    create: bool = False
    partitions: int = setting(1, check=whole(1))
    dead_letter_topic: str | None = "{topic}.dlt"
    ordering: str = setting("key", check=choice("key", "partition", "none"))
    max_poll_records: int = setting(500, check=whole(1))
    commit_interval: float = setting(0.2, check=seconds)
    revoke_timeout: float = setting(10.0, check=seconds)
    session_timeout: float = setting(10.0, check=seconds)
    idempotent: bool = True
    max_retry_delay: float = setting(300.0, check=seconds)
    connection: Connection = setting(Connection(url=DEFAULT_URL), check=_url)
    timeouts: Timeouts = DEFAULT_TIMEOUTS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_id is None:
            object.__setattr__(self, "group_id", f"loafer-{self.topic}")
        if self.dead_letter_topic is not None:
            dead = self.dead_letter_topic.replace("{topic}", self.topic)
            wanted = _topic(dead)
            if wanted is not None or dead == self.topic:
                raise SettingError(
                    "KafkaSettings", "dead_letter_topic", wanted or "another topic", dead
                )
            object.__setattr__(self, "dead_letter_topic", dead)


@dataclasses.dataclass(frozen=True, kw_only=True)
class KafkaPublisherSettings(Settings):
    """A :class:`~loafer_kafka.KafkaPublisher`'s settings.

    :param topic: the default topic (``publish(..., topic=...)`` overrides).
    :param acks: ``"all"`` (every in-sync replica has it: the default), ``1`` or ``0``.
    :param idempotent: the idempotent producer (no duplicate from its own retries;
        needs ``acks="all"``; Tansu refuses it).
    :param linger: how long a send waits for others to share its batch, seconds.
    :param max_batch_bytes: the largest batch per partition, bytes.
    :param compression: ``None``, ``"gzip"``, ``"snappy"``, ``"lz4"`` or ``"zstd"``.
    :param type_header: the header a typed object's type is named in (``None``: none).
    :param connection: the broker (flat: ``url``, ``ssl_context``,
        ``connection_options``: more aiokafka producer keywords).
    :param timeouts: :data:`DEFAULT_TIMEOUTS` (flat: ``timeout``, one send's longest
        wait for its acknowledgement; ``connect_timeout``, ``close_timeout``).
    """

    primary = "topic"
    flat = {**_FLAT, "timeout": "timeouts.publish"}

    topic: str | None = setting(None, check=optional(_topic))
    acks: str | int = setting("all", check=_ACKS)
    idempotent: bool = True
    linger: float = setting(0.005, check=lambda v: None if v == 0 else seconds(v))
    max_batch_bytes: int = setting(1_048_576, check=whole(1))
    compression: str | None = setting(None, check=optional(choice("gzip", "snappy", "lz4", "zstd")))
    type_header: str | None = TYPE_HEADER
    connection: Connection = setting(Connection(url=DEFAULT_URL), check=_url)
    timeouts: Timeouts = DEFAULT_TIMEOUTS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.idempotent and self.acks != "all":
            raise SettingError(
                "KafkaPublisherSettings", "acks", "'all' with idempotent=True", self.acks
            )
