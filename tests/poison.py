"""A poison message under a route's default settings: how fast it comes back, how much
it logs. Shared by the core test and each broker's."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from loafer_core import JSONTranslator

POISON = b'{"not json'


class Attempts:
    """A JSON translator that notes when each delivery of the poison body came."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner or JSONTranslator()
        self.times: list[float] = []
        self._changed = asyncio.Event()

    def translate(self, raw: Any) -> Mapping[str, Any]:
        if raw == POISON:
            self.times.append(time.monotonic())
            self._changed.set()
        return self.inner.translate(raw)

    async def wait_for(self, count: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.times) < count:
                self._changed.clear()
                await self._changed.wait()

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


def error_lines(records: list[logging.LogRecord]) -> list[str]:
    """The route's error lines about messages (what a poison message writes)."""
    return [
        r.getMessage()
        for r in records
        if r.name == "loafer_core.route" and r.levelno >= logging.ERROR
    ]
