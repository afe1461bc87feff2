"""Per-partition offset bookkeeping: what may be committed while deliveries settle out of
order (as Confluent's parallel consumer does).

Offsets are handed out in increasing order per partition; each is settled once, in any
order. The committable offset is the lowest unsettled one (or, when none is unsettled,
one past the highest settled): committing it never skips a message still in hand.
"""

from __future__ import annotations

from collections import deque

__all__ = ["Offsets"]


class Offsets:
    """One partition's unsettled offsets. Amortised O(1) per offset."""

    __slots__ = ("_done", "_order", "committed", "safe")

    def __init__(self) -> None:
        self._order: deque[int] = deque()
        self._done: set[int] = set()
        #: the offset that may be committed (None: nothing handed out yet)
        self.safe: int | None = None
        #: the offset last committed (by :meth:`mark_committed`)
        self.committed: int | None = None

    def add(self, offset: int) -> None:
        """``offset`` was handed out (higher than every one before)."""
        if self._order and offset <= self._order[-1]:
            raise ValueError(f"offset {offset} handed out after {self._order[-1]}")
        if not self._order and self.safe is None:
            self.safe = offset
        self._order.append(offset)

    def done(self, offset: int) -> bool:
        """``offset`` is settled; True when the committable offset moved."""
        order, done = self._order, self._done
        if not order or offset < order[0] or offset > order[-1] or offset in done:
            return False
        if offset != order[0]:
            done.add(offset)
            return False
        last = order.popleft()
        while order and order[0] in done:
            last = order.popleft()
            done.discard(last)
        self.safe = order[0] if order else last + 1
        return True

    @property
    def pending(self) -> int:
        """How many offsets are handed out and not settled."""
        return len(self._order) - len(self._done)

    def to_commit(self) -> int | None:
        """The offset to commit now, or None when the last commit is still right."""
        if self.safe is None or self.safe == self.committed:
            return None
        return self.safe

    def mark_committed(self, offset: int) -> None:
        """``offset`` was committed."""
        if self.committed is None or offset > self.committed:
            self.committed = offset
