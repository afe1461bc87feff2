"""Receiver credit: how much to grant, and when, so that the broker holds at most ``capacity``.

Why not simply top credit up as deliveries settle: RabbitMQ 3.10's AMQP 1.0 plugin turns
a ``flow`` frame into an *absolute* credit for the queue (``basic.credit`` ignores the
count), computed from the count of transfers its session has written. Deliveries the
queue has already handed to the session but not yet written are then counted twice: every
top-up sent while some are in flight inside the broker grants that many extra. The extra
deliveries arrive beyond the link's credit (proton's ``link.credit`` goes negative), and a
top-up computed from a negative credit grants still more: with a few thousand messages
queued and a capacity of 10 the broker held thousands unacknowledged.

The rule here: grant only once the link's credit has drained to zero (every delivery the
broker was allowed to send has arrived, so nothing is in flight and the absolute credit
the broker computes is exact), grant every free slot at once (one flow per batch, not one
per settlement), and never grant while deliveries beyond the credit are unsettled. A
delivery that arrives beyond the credit anyway is counted and logged (at a bounded rate).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["CreditGate"]

logger = logging.getLogger("loafer_amqp")


class CreditGate:
    """Reactor side: the credit policy of one receiver (one per client, kept across links).

    :param capacity: most deliveries unsettled at once (the route's ``max_concurrency``).
    :param label: the client's label, for the warning.
    :param warn_every: least seconds between two warnings about deliveries beyond credit.
    """

    def __init__(
        self,
        capacity: int,
        label: str,
        *,
        warn_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.label = label
        self.beyond_credit = 0  # deliveries received beyond the credit granted (a statistic)
        self._warn_every = warn_every
        self._clock = clock
        self._unreported = 0
        self._last_warning: float | None = None

    def grant(self, credit: int, unsettled: int) -> int:
        """How much to add to the link's credit now (``link.flow(n)``; 0: nothing).

        ``credit`` is the link's current credit (negative after deliveries beyond it) and
        ``unsettled`` the deliveries held, including any that came beyond the credit.
        """
        if credit > 0:
            return 0  # not drained: some may be in flight inside the broker
        free = self.capacity - unsettled
        if free <= 0:
            return 0  # full, or over: wait until enough have been settled
        # Brings the link's credit to exactly `free` (from zero, or from below it).
        return free - credit

    def received(self, credit: int) -> None:
        """A delivery arrived; ``credit`` is the link's credit after it (negative: beyond)."""
        if credit >= 0:
            return
        self.beyond_credit += 1
        self._unreported += 1
        now = self._clock()
        if self._last_warning is not None and now - self._last_warning < self._warn_every:
            return
        self._last_warning = now
        logger.warning(
            "%s: the broker sent %d deliveries beyond the credit granted (capacity %d); "
            "no more credit until they are settled",
            self.label,
            self._unreported,
            self.capacity,
        )
        self._unreported = 0
