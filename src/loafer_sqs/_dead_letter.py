"""Dead-lettering by send-then-delete: what a REJECT sends to the dead-letter queue.

The original body and message attributes, plus the reason (``loafer.reject_reason``,
up to 1,024 characters), the original message id (``loafer.source_message_id``) and
the common ``loafer-dead-*`` keys (:mod:`loafer_core.deadletters`), while SQS's 10
attributes leave room (a message with 4 or more attributes of its own loses some, said
in one warning); on a FIFO dead-letter queue the group is kept and the original message
id deduplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loafer_core.deadletters import DEAD_KEYS, dead_headers
from loafer_core.provider import Delivery

__all__ = ["Reject", "dead_letter_entry"]

logger = logging.getLogger("loafer_sqs")

REASON_ATTRIBUTE = "loafer.reject_reason"
SOURCE_ATTRIBUTE = "loafer.source_message_id"
MAX_ATTRIBUTES = 10


@dataclass(eq=False, slots=True)
class Reject:
    """A delivery to dead-letter, with the reason."""

    delivery: Delivery
    reason: str

    def weight(self) -> int:
        """Its share of the call's payload limit (body, plus room for attributes)."""
        raw = self.delivery.raw
        body = raw.get("Body", "") if isinstance(raw, Mapping) else ""
        return len(str(body).encode("utf-8")) + 2048


def dead_letter_entry(
    index: int, reject: Reject, *, fifo: bool, origin: str = ""
) -> dict[str, Any]:
    """The ``SendMessageBatch`` entry that carries ``reject`` to the dead-letter queue
    (with the common ``loafer-dead-*`` attributes, ``origin`` the queue it came from,
    while SQS's 10 attributes leave room)."""
    message: Mapping[str, Any] = reject.delivery.raw
    attributes: dict[str, Any] = {
        name: dict(value)
        for name, value in (message.get("MessageAttributes") or {}).items()
        if isinstance(value, Mapping)
    }
    headers = reject.delivery.metadata.get("headers") or {}
    extra = {
        REASON_ATTRIBUTE: reject.reason[:1024],
        SOURCE_ATTRIBUTE: str(reject.delivery.message_id),
        **dead_headers(
            headers if isinstance(headers, Mapping) else {},
            reason=reject.reason,
            attempts=reject.delivery.attempt,
            origin=origin,
        ),
    }
    dropped = []
    for name, value in extra.items():
        if (name in attributes and name in DEAD_KEYS) or len(attributes) < MAX_ATTRIBUTES:
            attributes[name] = {"DataType": "String", "StringValue": value or "-"}
        else:
            dropped.append(f"{name}={value!r}")
    if dropped:
        logger.warning(
            "dead-lettering message %s: no room for attributes %s (SQS allows 10)",
            reject.delivery.message_id,
            ", ".join(dropped),
        )
    entry: dict[str, Any] = {
        "Id": str(index),
        "MessageBody": message.get("Body", ""),
    }
    if attributes:
        entry["MessageAttributes"] = attributes
    if fifo:
        system = message.get("Attributes") or {}
        entry["MessageGroupId"] = system.get("MessageGroupId") or "loafer-dead-letters"
        entry["MessageDeduplicationId"] = str(reject.delivery.message_id)[:128]
    return entry
