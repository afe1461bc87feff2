"""Handlers, translators and error handlers named by the config tests' files."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

#: set by a test (in its event loop) to receive what the handlers saw
SEEN: asyncio.Queue[Any] | None = None
HANDLED: list[Any] = []


async def handle(content: Any, metadata: Mapping[str, Any]) -> bool:
    """Record the content."""
    HANDLED.append(content)
    if SEEN is not None:
        SEEN.put_nowait(content)
    return True


class Handler:
    """A class-based handler (instantiated with no arguments by the config)."""

    async def handle(self, content: Any, metadata: Mapping[str, Any]) -> bool:
        return await handle(content, metadata)


class UpperTranslator:
    """Text bodies, upper-cased (to see that the configured translator ran)."""

    def translate(self, raw: Any) -> dict[str, Any]:
        body = raw.body if hasattr(raw, "body") else raw
        text = body.decode() if isinstance(body, bytes) else str(body)
        return {"content": text.upper(), "metadata": {}}


def on_error(exc_type: type[BaseException], exc: BaseException, message: Any) -> bool:
    """Accept whatever failed."""
    return True


class NeedsArguments:
    """A handler class that cannot be created with no arguments."""

    def __init__(self, db: str) -> None:
        self.db = db

    async def handle(self, content: Any, metadata: Mapping[str, Any]) -> None:
        return None


async def takes_one(content: Any) -> None:
    """A handler that cannot take (content, metadata)."""
