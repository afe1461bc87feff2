"""A handler for trying the example: ``handler = "loafer_sqlite_example.demo:show"``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


async def show(content: Any, metadata: Mapping[str, Any]) -> bool:
    """Print the message and accept it."""
    print(f"message {metadata.get('message_id')} (attempt {metadata.get('attempt')}): {content}")
    return True
