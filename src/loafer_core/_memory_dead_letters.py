"""The dead letters of a memory queue: a replay moves each one in one step (exactly once)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol

from loafer_core.deadletters import DeadLetter, DeadLetters, read_dead_letter, replay_headers

__all__ = ["MemoryDeadLetters"]


class _Message(Protocol):
    body: Any
    headers: dict[str, Any]
    message_id: str


class _Broker(Protocol):
    """What the store uses of a :class:`~loafer_core.memory.MemoryBroker`."""

    def dead_letters(self, queue: str) -> Sequence[_Message]: ...

    def _take_dead(self, queue: str, message_id: str, requeue: dict[str, Any] | None) -> bool: ...


class MemoryDeadLetters(DeadLetters):
    """The REJECTED messages of one :class:`~loafer_core.memory.MemoryBroker` queue."""

    guarantee = "exactly-once"

    def __init__(self, broker: _Broker, queue: str) -> None:
        self._broker = broker
        self._queue = queue

    @property
    def where(self) -> str:
        """``memory:<queue>``."""
        return f"memory:{self._queue}"

    async def count(self) -> int:
        """Messages in the queue's dead-letter list."""
        return len(self._broker.dead_letters(self._queue))

    async def _scan(self) -> AsyncGenerator[DeadLetter, None]:
        for msg in self._broker.dead_letters(self._queue):
            yield read_dead_letter(msg.message_id, msg.body, msg.headers, origin=self._queue)

    async def _move(self, letter: DeadLetter) -> None:
        self._broker._take_dead(self._queue, letter.id, replay_headers(letter))

    async def _remove(self, letter: DeadLetter) -> None:
        self._broker._take_dead(self._queue, letter.id, None)
