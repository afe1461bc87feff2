"""Ordering keys: one delivery of a key at a time, the others waiting in arrival order."""

from __future__ import annotations

from collections import deque

from loafer_core.provider import Delivery


class KeyedQueue:
    """Which deliveries of an ordering key may run, and which wait behind their key.

    The dispatcher asks :meth:`admit` for each fetched delivery with a key: the first of
    its key runs now, later ones wait here. When the running one is settled,
    :meth:`after` hands the worker the next of the key (when the outcome lets the key go
    on) or, when it will come back (RETRY, RELEASE) or the route stops, ends the key and
    returns the waiting ones, to be released so that none overtakes it.
    """

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: dict[str, deque[Delivery]] = {}

    def __len__(self) -> int:
        """Keys running now."""
        return len(self._keys)

    def admit(self, delivery: Delivery, key: str) -> bool:
        """True if ``delivery`` (of ``key``) may run now; False: it waits behind its key."""
        waiting = self._keys.get(key)
        if waiting is not None:
            waiting.append(delivery)
            return False
        self._keys[key] = deque()
        return True

    def after(self, key: str, go_on: bool) -> tuple[Delivery | None, list[Delivery]]:
        """The running delivery of ``key`` is settled: ``(next, [])`` when ``go_on`` and
        one waits (it runs on the same worker); else ``(None, waiting)``, the key ended."""
        waiting = self._keys.get(key)
        if waiting is None:
            return None, []
        if waiting and go_on:
            return waiting.popleft(), []
        del self._keys[key]
        return None, list(waiting)

    def take_waiting(self) -> list[Delivery]:
        """Every waiting delivery (the running keys stay, with nothing behind them)."""
        taken: list[Delivery] = []
        for waiting in self._keys.values():
            taken.extend(waiting)
            waiting.clear()
        return taken
