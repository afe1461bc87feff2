"""The Redis provider's default translator: the body field as UTF-8 JSON, or an entry's
fields as they are."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loafer_core.translator import decode_json

__all__ = ["RedisTranslator"]


class RedisTranslator:
    """Decodes a delivery's ``raw`` (the entry's body field, bytes) as UTF-8 JSON; an
    entry without a body field (written by another client: ``XADD orders * order 1 sku
    x``) arrives as its fields, a ``dict``, and is the content as it is.

    Invalid UTF-8, invalid JSON and an empty body raise
    :class:`~loafer_core.errors.TranslationError` (a ``ValueError``), which the route
    hands to its error handler. The other fields are the delivery's
    ``metadata["headers"]``.
    """

    def translate(self, raw: Any) -> Mapping[str, Any]:
        """Return ``{"content": ..., "metadata": {}}`` for one entry's body (or fields)."""
        if isinstance(raw, Mapping):
            return {"content": dict(raw), "metadata": {}}
        return {"content": decode_json(raw), "metadata": {}}
