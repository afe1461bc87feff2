"""How a publisher turns a body into bytes, written once for the plugins."""

from __future__ import annotations

import json
from typing import Any

from loafer_core.errors import ConfigurationError


def encode_body(body: Any, owner: str) -> bytes:
    """Bytes pass through; ``str`` is UTF-8 text; anything else is encoded as JSON.

    :param body: what the caller publishes.
    :param owner: the publisher named in the error (``"NATSPublisher"``).
    :raises ConfigurationError: the body is not JSON-serialisable.
    """
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    try:
        return json.dumps(body).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{owner}: cannot encode a {type(body).__name__} body as JSON ({exc}); pass "
            "bytes, str or a JSON-serialisable object"
        ) from exc
