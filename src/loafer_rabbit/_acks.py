"""Coalescing acknowledgements: which delivery tags one ``basic.ack(multiple=True)`` covers.

A channel's delivery tags grow by one per delivery. ``basic.ack(tag, multiple=True)``
acknowledges every *outstanding* tag up to ``tag``, so it is only safe up to the first
tag still being handled. :class:`AckTracker` keeps the outstanding tags of one channel in
order and turns a batch of tags to acknowledge into one multiple ack (the settled prefix)
plus single acks for the rest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

__all__ = ["AckTracker"]


class AckTracker:
    """Outstanding delivery tags of one channel, in delivery order."""

    __slots__ = ("_done", "_outstanding")

    def __init__(self) -> None:
        self._outstanding: deque[int] = deque()
        self._done: set[int] = set()

    def __len__(self) -> int:
        return len(self._outstanding)

    def delivered(self, tag: int) -> None:
        """Record a delivery (tags must arrive in increasing order)."""
        self._outstanding.append(tag)

    def settled(self, tag: int) -> None:
        """Record that ``tag`` was settled by a frame already sent (nack, reject, ack)."""
        self._done.add(tag)

    def plan(self, tags: Iterable[int]) -> tuple[int | None, list[int]]:
        """Return ``(multiple, singles)`` to acknowledge ``tags``: ack ``multiple`` with
        ``multiple=True`` (None: no such ack), then each of ``singles`` on its own.

        The multiple ack covers only tags in ``tags`` or already settled, never one
        still outstanding. Send the frames before the next call to :meth:`plan`.
        """
        pending = set(tags)
        outstanding, done = self._outstanding, self._done
        highest: int | None = None
        while outstanding:
            head = outstanding[0]
            if head in pending:
                pending.discard(head)
                highest = head
            elif head in done:
                done.discard(head)
            else:
                break
            outstanding.popleft()
        singles = sorted(pending)
        done.update(singles)
        if not outstanding:
            done.clear()
        return highest, singles
