"""Turning proton's message types into plain Python (reactor thread, pure functions)."""

from __future__ import annotations

import uuid
from typing import Any

from proton import Array, Described, Message

__all__ = ["body_of", "message_metadata", "plain"]


def plain(value: Any) -> Any:
    """Convert AMQP-typed data to plain Python: memoryview -> bytes, symbol -> str, ...

    Subclasses of ``int``/``float``/``str`` (ulong, timestamp, symbol, char, ...) become
    their base types; maps and lists are converted recursively; described values become
    ``{"descriptor": ..., "value": ...}``; arrays become lists.
    """
    if value is None or type(value) in (bool, int, float, str, bytes):
        return value
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Array):
        return [plain(v) for v in value.elements]
    if isinstance(value, Described):
        return {"descriptor": plain(value.descriptor), "value": plain(value.value)}
    if isinstance(value, uuid.UUID):
        return value
    return value


def _text_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, memoryview | bytearray | bytes):
        return bytes(value).hex()
    return str(value)


def _symbol_text(value: Any) -> str | None:
    # proton returns symbol("None") for an absent content-type/encoding.
    if value is None or str(value) in ("", "None"):
        return None
    return str(value)


def _str_keys(mapping: Any) -> dict[str, Any]:
    if not mapping:
        return {}
    return {str(k): plain(v) for k, v in mapping.items()}


def body_of(message: Message) -> tuple[Any, str]:
    """The message body as plain Python, and its section: ``data``, ``value`` or ``sequence``."""
    body = message.body
    if message.inferred:
        if isinstance(body, memoryview | bytes | bytearray):
            return bytes(body), "data"
        if isinstance(body, list):
            return plain(body), "sequence"
    if body is None:
        return None, "none"
    return plain(body), "value"


def message_metadata(message: Message, address: str, body_type: str) -> dict[str, Any]:
    """Everything the message header and properties say, as plain Python."""
    meta: dict[str, Any] = {
        "message_id": _text_id(message.id),
        "correlation_id": _text_id(message.correlation_id),
        "subject": message.subject,
        "content_type": _symbol_text(message.content_type),
        "content_encoding": _symbol_text(message.content_encoding),
        "reply_to": message.reply_to,
        "group_id": message.group_id,
        "to": message.address,
        "user_id": bytes(message.user_id).decode("utf-8", "replace") if message.user_id else None,
        "creation_time": float(message.creation_time) if message.creation_time else None,
        "absolute_expiry_time": float(message.expiry_time) if message.expiry_time else None,
        "durable": bool(message.durable),
        "priority": int(message.priority),
        "ttl": float(message.ttl) if message.ttl else None,
        "delivery_count": int(message.delivery_count),
        "first_acquirer": bool(message.first_acquirer),
        "headers": _str_keys(message.properties),
        "annotations": _str_keys(message.annotations),
        "address": address,
        "body_type": body_type,
    }
    return meta
