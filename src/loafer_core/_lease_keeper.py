"""Extends the leases of a route's unsettled deliveries while their handlers run."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from loafer_core.errors import ConfigurationError
from loafer_core.provider import Delivery, LeaseExtender, Provider, Support

logger = logging.getLogger("loafer_core.dispatcher")


class LeaseKeeper:
    """Every third of the provider's lease, extends the leases of the deliveries fetched
    longer ago than that and not yet settled (``unsettled`` maps each to when it was
    fetched or last extended). A ``ConfigurationError`` is fatal (``fail``); any other
    failure is logged and tried again at the next tick."""

    def __init__(
        self,
        route: str,
        provider: Provider,
        unsettled: dict[Delivery, float],
        fail: Callable[[ConfigurationError], None],
    ) -> None:
        self.route = route
        self.provider = provider
        self.unsettled = unsettled
        self.fail = fail

    def start(self) -> asyncio.Task[None] | None:
        """The keeper's task, or None for a provider without lease extension."""
        provider = self.provider
        if provider.capabilities.lease_extension is Support.NONE:
            return None
        if not isinstance(provider, LeaseExtender):
            return None
        duration = provider.lease_duration
        if duration is None or not math.isfinite(duration) or duration <= 0:
            return None
        return asyncio.create_task(
            self._loop(provider, float(duration)), name=f"loafer:{self.route}:lease"
        )

    async def _loop(self, provider: LeaseExtender, duration: float) -> None:
        interval = duration / 3
        unsettled = self.unsettled
        while True:
            await asyncio.sleep(interval)  # a periodic timer, not a synchronisation stand-in
            now = time.monotonic()
            due = [d for d, t in unsettled.items() if now - t >= interval * 0.9]
            if not due:
                continue
            try:
                await provider.extend_leases(due, duration)
            except asyncio.CancelledError:
                raise
            except ConfigurationError as exc:
                self.fail(exc)
                return
            except Exception as exc:
                logger.warning(
                    "route %r: extending %d leases failed (%s: %s)",
                    self.route,
                    len(due),
                    type(exc).__name__,
                    exc,
                )
                continue
            for delivery in due:
                if delivery in unsettled:
                    unsettled[delivery] = now
