"""Log throttling: a poison message must not write megabytes of logs.

:class:`LogThrottle` says whether a line of a given kind may be written now: the first
of each kind at once, then at most one per ``interval`` seconds; the lines held back in
between are counted, and the count goes with the next line written (or with
:meth:`LogThrottle.held`, at shutdown). Routes use one for the errors of their messages.
"""

from __future__ import annotations

import time
from collections.abc import Hashable

__all__ = ["LogThrottle"]

_OVERFLOW = ("loafer: more kinds than a throttle tracks",)


class LogThrottle:
    """At most one line per kind (``key``) every ``interval`` seconds.

    At most ``max_keys`` kinds are tracked; past that, kinds not seen within the last
    ``interval`` are forgotten, and if all are recent, any new kind shares one budget.
    Not thread-safe: use it from one event loop.
    """

    def __init__(self, interval: float = 30.0, max_keys: int = 256) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._kinds: dict[Hashable, list[float | int]] = {}  # key -> [last written, held]

    def admit(self, key: Hashable) -> int | None:
        """``None`` to hold this line back (counted); else how many lines of this kind
        were held back since the last one written (write it, with that count)."""
        now = time.monotonic()
        kinds = self._kinds
        entry = kinds.get(key)
        if entry is None:
            if len(kinds) >= self.max_keys and key != _OVERFLOW:
                for old in [k for k, e in kinds.items() if now - e[0] >= self.interval]:
                    if not kinds[old][1]:  # keep the counts not yet reported
                        del kinds[old]
                if len(kinds) >= self.max_keys:
                    return self.admit(_OVERFLOW)  # one budget for every kind past the limit
            kinds[key] = [now, 0]
            return 0
        if now - entry[0] >= self.interval:
            held = int(entry[1])
            entry[0], entry[1] = now, 0
            return held
        entry[1] += 1
        return None

    def held(self) -> int:
        """Lines held back and not yet reported (all kinds); resets the counts."""
        total = 0
        for entry in self._kinds.values():
            total += int(entry[1])
            entry[1] = 0
        return total
