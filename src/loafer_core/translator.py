"""Translators: raw message -> ``{'content': ..., 'metadata': {...}}`` (Loafer's contract).

A translator never mutates the raw message. Content that is ``None`` or empty is an
error (:class:`~loafer_core.errors.TranslationError`, a ``ValueError``, as in Loafer) and
reaches the route's error handler.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from loafer_core.errors import TranslationError

__all__ = [
    "JSONTranslator",
    "PassThroughTranslator",
    "StringMessageTranslator",
    "TextTranslator",
    "Translator",
    "decode_json",
    "decode_text",
]


@runtime_checkable
class Translator(Protocol):
    """Turns a provider's raw message into handler content and metadata."""

    def translate(self, raw: Any) -> Mapping[str, Any]:
        """Return ``{'content': ..., 'metadata': {...}}`` (metadata optional)."""
        ...


def decode_text(raw: Any) -> str:
    """Decode ``bytes``/``bytearray``/``memoryview`` as UTF-8; ``str`` passes through."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TranslationError(f"message body is not valid UTF-8: {exc}") from exc
    raise TranslationError(f"expected bytes or str, got {type(raw).__name__}")


def decode_json(raw: Any, what: str = "message body") -> Any:
    """Decode UTF-8 JSON (``bytes``-like or ``str``); any failure is a TranslationError.

    That includes JSON nested too deeply for the parser (a ``RecursionError``): every
    body that cannot be decoded is the sender's fault, never a reason to retry. ``what``
    names the thing decoded in the error message.
    """
    text = decode_text(raw)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise TranslationError(f"{what} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise TranslationError(f"{what} is JSON nested too deeply to decode") from exc


class JSONTranslator:
    """Decodes a UTF-8 JSON body (bytes or str) into content."""

    def translate(self, raw: Any) -> Mapping[str, Any]:
        return {"content": decode_json(raw), "metadata": {}}


class TextTranslator:
    """Decodes a UTF-8 body into a ``str``."""

    def translate(self, raw: Any) -> Mapping[str, Any]:
        return {"content": decode_text(raw), "metadata": {}}


class PassThroughTranslator:
    """Hands the raw message over unchanged."""

    def translate(self, raw: Any) -> Mapping[str, Any]:
        return {"content": raw, "metadata": {}}


class StringMessageTranslator:
    """Loafer 2.x's ``loafer.message_translators.StringMessageTranslator``: the content is
    the raw message as a string (``str(raw)``), metadata empty.

    One change: ``bytes`` are decoded as UTF-8 (a :class:`TextTranslator`) where Loafer's
    ``str()`` gave ``"b'...'"``. On an SQS route the raw message is the SQS message dict,
    so this gives its ``str()`` as Loafer's did; for the body as text use
    :class:`~loafer_sqs.SQSTextTranslator`.
    """

    def translate(self, raw: Any) -> Mapping[str, Any]:
        """Return ``str(raw)`` (bytes decoded as UTF-8) as content."""
        if isinstance(raw, bytes | bytearray | memoryview):
            return {"content": decode_text(raw), "metadata": {}}
        return {"content": str(raw), "metadata": {}}
