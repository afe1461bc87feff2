"""What the broker's open properties say about the outcomes it takes."""

from __future__ import annotations

import re
from typing import Any

from loafer_core.errors import ConfigurationError, LoaferError

__all__ = ["RABBITMQ_MODIFIED_SINCE", "peer_outcome"]

#: RabbitMQ's AMQP 1.0 plugin accepts the `modified` outcome from this version on.
RABBITMQ_MODIFIED_SINCE = (3, 10, 11)


def _version(text: Any) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", str(text or ""))[:3]
    return tuple(int(n) for n in numbers)


def peer_outcome(profile: str, properties: dict[str, Any]) -> tuple[bool, LoaferError | None]:
    """``(use_modified, error)`` for a broker with these open ``properties`` under
    ``profile``: whether RETRY may be sent as ``modified``, and the error that refuses
    the broker (``generic`` on a RabbitMQ that ends the session on ``modified``)."""
    if str(properties.get("product") or "") == "RabbitMQ":
        modified_ok = _version(properties.get("version")) >= RABBITMQ_MODIFIED_SINCE
        if profile == "generic" and not modified_ok:
            return modified_ok, ConfigurationError(
                f"broker is RabbitMQ {properties.get('version')}, which ends the whole "
                "session on the `modified` outcome (fixed in 3.10.11): use broker='rabbitmq'"
            )
        return modified_ok, None  # never `modified` to a RabbitMQ that dies of it
    # Unknown broker under "auto": `released` is the outcome every broker takes.
    return profile == "generic", None
