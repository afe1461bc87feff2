"""Delayed publish on NATS JetStream, emulated: the consumer holds early messages back.

JetStream has no per-message delay, so ``NATSPublisher.publish(body, delay=...)`` stores
the message at once with the time it is due in the
:data:`~loafer_core.kit.NOT_BEFORE` header (:class:`~loafer_core.kit.DelayingPublisher`),
and ``NATSProvider.fetch`` gives a message whose header is still in the future back with
``nak(delay=<what is left>)``: the server redelivers it then. The cost: that nak counts
one delivery (``num_delivered``, so the attempt the handler sees is one higher, and
``max_deliver`` is reached one delivery sooner); a message whose next delivery would be
past ``max_deliver`` is handed out at once instead (early, not lost). A consumer that
does not read the header (another program) gets the message early.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from nats.aio.msg import Msg

from loafer_core.kit import not_before

logger = logging.getLogger("loafer_nats")


class HoldBack:
    """Splits fetched messages into the due and the early; naks the early ones back
    with their remaining delay, in tasks of their own (a cancelled fetch loses none)."""

    def __init__(self, what: str, max_deliver: int | None) -> None:
        self._what = what
        self._max_deliver = max_deliver
        self._naks: set[asyncio.Task[None]] = set()

    def due(self, messages: Sequence[Msg]) -> list[Msg]:
        """The messages to hand out now; the others are nak'ed back until due."""
        out: list[Msg] = []
        for msg in messages:
            left = not_before(msg.headers) if msg.headers else None
            if left is None or self._last_delivery(msg):
                out.append(msg)
                continue
            task = asyncio.get_running_loop().create_task(self._nak(msg, left))
            self._naks.add(task)
            task.add_done_callback(self._naks.discard)
        return out

    def _last_delivery(self, msg: Msg) -> bool:
        limit = self._max_deliver
        return limit is not None and limit > 0 and msg.metadata.num_delivered >= limit

    async def _nak(self, msg: Any, delay: float) -> None:
        try:
            await msg.nak(delay=delay)
        except Exception as exc:  # its ack_wait lapses: redelivered then, not lost
            logger.debug("%s: holding back a delayed message failed: %r", self._what, exc)

    async def wait(self, timeout: float) -> None:
        """Let the naks in flight finish (at close), within ``timeout``."""
        if self._naks:
            await asyncio.wait(set(self._naks), timeout=timeout)
