"""Streams and consumers: checked at start (a missing one is a ConfigurationError saying
what to do), or created on request (``create=True``).

JetStream has no dead-letter queue: a provider with ``dead_letter_subject`` republishes
rejected messages there, so that subject must be captured by a stream (created with the
others when ``create=True``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from loafer_core.errors import ConfigurationError

__all__ = ["Topology", "ensure", "jetstream_error"]


@dataclass(frozen=True)
class Topology:
    """What ``start`` checks or creates (from the provider's settings)."""

    stream: str
    consumer: str
    subjects: Sequence[str] | None = None
    create: bool = False
    ack_wait: float = 30.0
    max_deliver: int | None = None
    filter_subject: str | None = None
    dead_letter_subject: str | None = None
    dead_letter_stream: str | None = None
    stream_options: Mapping[str, Any] = field(default_factory=dict)
    consumer_options: Mapping[str, Any] = field(default_factory=dict)
    where: str = "NATS"


def jetstream_error(exc: BaseException, where: str) -> ConfigurationError | None:
    """JetStream not enabled (no responders on the API), or the account refused: a
    ConfigurationError; ``None`` for anything else."""
    if isinstance(exc, nats.errors.NoRespondersError | nats.js.errors.ServiceUnavailableError):
        return ConfigurationError(
            f"{where}: JetStream does not answer; enable it on the server "
            "(nats-server -js, or a jetstream {} block in its configuration)"
        )
    return None


def _stream_config(name: str, subjects: Sequence[str], options: Mapping[str, Any]) -> Any:
    settings: dict[str, Any] = {
        "name": name,
        "subjects": list(subjects),
        "retention": api.RetentionPolicy.WORK_QUEUE,
        "storage": api.StorageType.FILE,
    }
    settings.update(options)
    return api.StreamConfig(**settings)


async def ensure(js: JetStreamContext, topology: Topology, *, check_only: bool = False) -> Any:
    """Check (and with ``create``, create unless ``check_only``) the stream, the durable
    pull consumer and the dead-letter stream; return the consumer's info (``None`` when
    ``check_only`` finds it missing but would create it)."""
    t = topology
    try:
        await js.stream_info(t.stream)
    except nats.js.errors.NotFoundError:
        if not t.create:
            subjects = " ".join(t.subjects or [t.stream])
            raise ConfigurationError(
                f"{t.where}: stream {t.stream!r} does not exist; create it (nats stream add "
                f"{t.stream} --subjects '{subjects}'), or pass create=True and "
                "subjects=[...] to create it at start"
            ) from None
        if check_only:
            return None
        await js.add_stream(_stream_config(t.stream, t.subjects or [t.stream], t.stream_options))
    info = await _consumer(js, t, check_only=check_only)
    if t.dead_letter_subject:
        try:
            await js.find_stream_name_by_subject(t.dead_letter_subject)
        except nats.js.errors.NotFoundError:
            if not t.create:
                raise ConfigurationError(
                    f"{t.where}: no stream captures the dead-letter subject "
                    f"{t.dead_letter_subject!r}; create one (nats stream add "
                    f"{t.dead_letter_stream or t.stream + '-dead'} --subjects "
                    f"'{t.dead_letter_subject}'), or pass create=True"
                ) from None
            if not check_only:
                name = t.dead_letter_stream or f"{t.stream}-dead"
                config = _stream_config(name, [t.dead_letter_subject], {})
                config.retention = api.RetentionPolicy.LIMITS
                await js.add_stream(config)
    return info


async def _consumer(js: JetStreamContext, t: Topology, *, check_only: bool) -> Any:
    try:
        info = await js.consumer_info(t.stream, t.consumer)
    except nats.js.errors.NotFoundError:
        if not t.create:
            raise ConfigurationError(
                f"{t.where}: stream {t.stream!r} has no consumer {t.consumer!r}; create a "
                f"durable pull consumer with explicit acks (nats consumer add {t.stream} "
                f"{t.consumer} --pull --ack explicit), or pass create=True"
            ) from None
        if check_only:
            return None
        settings: dict[str, Any] = {
            "durable_name": t.consumer,
            "ack_policy": api.AckPolicy.EXPLICIT,
            "deliver_policy": api.DeliverPolicy.ALL,
            "ack_wait": t.ack_wait,
            "max_deliver": t.max_deliver if t.max_deliver else -1,
        }
        if t.filter_subject:
            settings["filter_subject"] = t.filter_subject
        settings.update(t.consumer_options)
        info = await js.add_consumer(t.stream, api.ConsumerConfig(**settings))
    config = info.config
    if config.deliver_subject:
        raise ConfigurationError(
            f"{t.where}: consumer {t.consumer!r} of stream {t.stream!r} is a push consumer "
            f"(deliver subject {config.deliver_subject!r}); loafer needs a pull consumer: "
            "create one without a deliver subject"
        )
    if config.ack_policy not in (api.AckPolicy.EXPLICIT, "explicit"):
        raise ConfigurationError(
            f"{t.where}: consumer {t.consumer!r} of stream {t.stream!r} has ack policy "
            f"{config.ack_policy!s}; loafer needs explicit acks (--ack explicit)"
        )
    return info
