"""The AMQP provider's default translator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loafer_core.errors import TranslationError
from loafer_core.translator import decode_json

__all__ = ["AMQPTranslator"]


class AMQPTranslator:
    """JSON for data sections and strings; structured AMQP values pass through.

    - ``bytes`` (a data section) or ``str`` (an AMQP string value): decoded as UTF-8
      JSON; invalid UTF-8 or JSON raises :class:`~loafer_core.errors.TranslationError`.
    - maps, lists (AMQP value or sequence sections), numbers, booleans: handed over as
      they are (already plain Python).
    - no body: TranslationError.
    """

    def translate(self, raw: Any) -> Mapping[str, Any]:
        """Return ``{"content": ..., "metadata": {}}`` for one AMQP message body."""
        if raw is None:
            raise TranslationError("AMQP message has no body")
        if isinstance(raw, bytes | bytearray | memoryview | str):
            return {"content": decode_json(raw), "metadata": {}}
        return {"content": raw, "metadata": {}}
