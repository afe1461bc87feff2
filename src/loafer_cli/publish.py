"""``loafer publish``: put messages on any broker through its plugin's publisher.

Publishers are found by name in the ``loafer.publishers`` entry point group, loaded only
when named. The bundled ones (``rabbit``, ``amqp``, ``sqs``, ``sns``) take the command's
QUEUE as their target (routing key, address, queue, topic) and ``--url`` as their
broker URL (SQS/SNS: the endpoint URL); any other publisher class is called as
``cls(QUEUE, url=URL, **options)``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata as metadata
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from loafer_core.errors import ConfigurationError
from loafer_core.kit import check_delay
from loafer_core.provider import Support

__all__ = [
    "ENTRY_POINT_GROUP",
    "PublishResult",
    "build_publisher",
    "check_publish_delay",
    "load_publisher",
    "parse_pairs",
    "publish_all",
]

ENTRY_POINT_GROUP = "loafer.publishers"

# The extra that installs each bundled publisher's library.
_EXTRAS = {
    "rabbit": "rabbit",
    "amqp": "amqp",
    "sqs": "sqs",
    "sns": "sqs",
    "nats": "nats",
    "redis": "redis",
    "postgres": "postgres",
    "pubsub": "pubsub",
}

# How each bundled publisher takes the target and the URL: (target keyword, URL keyword).
_BUNDLED: dict[str, tuple[str, str]] = {
    "rabbit": ("routing_key", "url"),
    "amqp": ("address", "url"),
    "sqs": ("queue", "endpoint_url"),
    "sns": ("topic", "endpoint_url"),
    "nats": ("subject", "url"),
    "redis": ("stream", "url"),
    "postgres": ("queue", "url"),
    "pubsub": ("topic", "api_root"),
}

#: messages published concurrently (each awaits its own confirm)
WINDOW = 100


def parse_pairs(pairs: Iterable[str], what: str) -> dict[str, Any]:
    """``key=value`` strings to a dict; values are JSON where they parse, else strings."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"{what} {pair!r}: expected key=value")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        result[key] = value
    return result


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def publisher_names() -> list[str]:
    """The installed publishers' names."""
    return sorted(_entry_points())


def load_publisher(name: str) -> Any:
    """Import the publisher registered as ``name`` and return its class.

    An unknown name or a plugin whose library is missing is a ``ConfigurationError``
    (listing the installed names, or naming the extra to install)."""
    eps = _entry_points()
    ep = eps.get(name)
    if ep is None:
        raise ConfigurationError(
            f"no publisher named {name!r} in the {ENTRY_POINT_GROUP!r} entry point group; "
            f"installed: {', '.join(sorted(eps)) or 'none'}"
        )
    try:
        return ep.load()
    except ImportError as exc:
        extra = _EXTRAS.get(name)
        how = f"; pip install 'loafer-core[{extra}]'" if extra else ""
        raise ConfigurationError(
            f"publisher {name!r} ({ep.value}) cannot be loaded: the module "
            f"{exc.name or exc!s} is missing{how}"
        ) from exc


def build_publisher(name: str, target: str, url: str | None, options: Mapping[str, Any]) -> Any:
    """Build publisher ``name`` for ``target`` (queue, routing key, address or topic)."""
    cls = load_publisher(name)
    target_key, url_key = _BUNDLED.get(name, ("", "url"))
    kwargs = dict(options)
    if url is not None:
        kwargs[url_key] = url
    try:
        if target_key:
            kwargs[target_key] = target
            return cls(**kwargs)
        return cls(target, **kwargs)
    except TypeError as exc:
        raise ConfigurationError(f"publisher {name!r}: {exc}") from exc


def check_publish_delay(publisher: Any, name: str, delay: float | None) -> None:
    """Refuse ``--delay`` before anything is sent where ``publisher`` takes no delay (its
    ``delay_support``) or not that long (its ``max_delay``): a ConfigurationError."""
    if delay is None:
        return
    support = getattr(publisher, "delay_support", Support.NONE)
    refused = None
    if support is Support.NONE:
        refused = f"publisher {name!r} declares no delayed publish (docs/scheduling.md)"
    check_delay(
        delay,
        what=f"loafer publish {name} --delay",
        maximum=getattr(publisher, "max_delay", None),
        refused=refused,
    )


@dataclass(frozen=True)
class PublishResult:
    """One message's fate: ``error`` is ``None`` once the broker confirmed it."""

    index: int
    error: str | None


async def publish_all(
    publisher: Any,
    bodies: Iterable[str],
    headers: Mapping[str, Any],
    report: Callable[[PublishResult], None],
    *,
    window: int = WINDOW,
    delay: float | None = None,
) -> tuple[int, int]:
    """Publish every body (``window`` awaiting their confirms at a time), calling
    ``report`` per message in order; close the publisher; return (confirmed, failed).
    ``delay``: seconds each message is held back (``publish(..., delay=...)``)."""
    confirmed = failed = 0
    extra: dict[str, Any] = {} if delay is None else {"delay": delay}

    async def one(index: int, body: str) -> PublishResult:
        try:
            await publisher.publish(body, headers=dict(headers) or None, **extra)
        except Exception as exc:
            return PublishResult(index, f"{type(exc).__name__}: {exc}")
        return PublishResult(index, None)

    try:
        batch: list[str] = []
        index = 0
        iterator = iter(bodies)
        while True:
            batch = [b for _, b in zip(range(window), iterator, strict=False)]
            if not batch:
                break
            results = await asyncio.gather(*(one(index + i, body) for i, body in enumerate(batch)))
            index += len(batch)
            for result in results:
                report(result)
                if result.error is None:
                    confirmed += 1
                else:
                    failed += 1
    finally:
        await publisher.close()
    return confirmed, failed
