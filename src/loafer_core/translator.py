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

__all__ = ["JSONTranslator", "PassThroughTranslator", "TextTranslator", "Translator", "decode_text"]


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


class JSONTranslator:
    """Decodes a UTF-8 JSON body (bytes or str) into content."""

    def translate(self, raw: Any) -> Mapping[str, Any]:
        text = decode_text(raw)
        try:
            content = json.loads(text)
        except ValueError as exc:
            raise TranslationError(f"message body is not valid JSON: {exc}") from exc
        return {"content": content, "metadata": {}}


class TextTranslator:
    """Decodes a UTF-8 body into a ``str``."""

    def translate(self, raw: Any) -> Mapping[str, Any]:
        return {"content": decode_text(raw), "metadata": {}}


class PassThroughTranslator:
    """Hands the raw message over unchanged."""

    def translate(self, raw: Any) -> Mapping[str, Any]:
        return {"content": raw, "metadata": {}}
