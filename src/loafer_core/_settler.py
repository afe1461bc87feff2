"""Settles a route's deliveries with their outcomes, retrying a failed settle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from loafer_core._handler import really_cancelled
from loafer_core._message_errors import message_fields
from loafer_core._shutdown_clock import ShutdownClock
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import RELEASE, Outcome, OutcomeKind
from loafer_core.policy import Backoff
from loafer_core.provider import Delivery, Provider

logger = logging.getLogger("loafer_core.dispatcher")


class Settler:
    """Sends each delivery's outcome to the provider.

    A failed settle is tried again with backoff, up to ``attempts`` in all (not once the
    shutdown is cut short), then given up: logged, counted, and left to the broker, which
    delivers the message again. A ``ConfigurationError`` is fatal (``fail``). A settle cut
    short by the shutdown is remembered in :attr:`cut`, to be sent again. Settled or given
    up, the delivery's slot is freed (``forget``).
    """

    def __init__(
        self,
        route: str,
        provider: Provider,
        attempts: int,
        backoff: Backoff,
        clock: ShutdownClock,
        forget: Callable[[Delivery], None],
        fail: Callable[[ConfigurationError], None],
    ) -> None:
        self.route = route
        self.provider = provider
        self.attempts = attempts
        self.backoff = backoff
        self.clock = clock
        self.forget = forget
        self.fail = fail
        #: settled, by outcome
        self.settled: dict[OutcomeKind, int] = dict.fromkeys(OutcomeKind, 0)
        #: settles given up
        self.failures = 0
        #: settles the shutdown cut short: sent again once the workers ended
        self.cut: dict[Delivery, Outcome] = {}

    async def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Settle one delivery (the workers' call, once per message)."""
        try:
            try:
                await self.provider.settle(delivery, outcome)
                self.settled[outcome.kind] += 1
            except ConfigurationError as exc:
                self._given_up(delivery, outcome, 1, exc)
                self.fail(exc)
            except asyncio.CancelledError as exc:
                if really_cancelled():
                    raise
                await self._again(delivery, outcome, exc)
            except Exception as exc:
                await self._again(delivery, outcome, exc)
        except asyncio.CancelledError:
            # cut short by the shutdown (settling, or waiting to try again): the delivery
            # stays unsettled, and the dispatcher sends this outcome again at the end
            self.cut[delivery] = outcome
            raise
        self.forget(delivery)

    async def _again(self, delivery: Delivery, outcome: Outcome, exc: BaseException) -> None:
        """The first settle failed: retry with backoff, up to ``attempts`` in all."""
        failures = 0
        while True:
            failures += 1
            if failures >= self.attempts or self.clock.now.is_set():
                self._given_up(delivery, outcome, failures, exc)
                return
            delay = self.backoff.delay(failures)
            logger.warning(
                "route %r: settling message %s failed (%s: %s); retrying in %.2fs",
                self.route,
                delivery.message_id,
                type(exc).__name__,
                exc,
                delay,
                extra=message_fields(self.route, delivery, outcome),
            )
            await asyncio.sleep(delay)
            try:
                await self.provider.settle(delivery, outcome)
                self.settled[outcome.kind] += 1
                return
            except ConfigurationError as again:
                self._given_up(delivery, outcome, failures + 1, again)
                self.fail(again)
                return
            except asyncio.CancelledError as again:
                if really_cancelled():
                    raise
                exc = again
            except Exception as again:
                exc = again

    def _given_up(
        self, delivery: Delivery, outcome: Outcome, tries: int, exc: BaseException
    ) -> None:
        self.failures += 1
        logger.error(
            "route %r: could not settle message %s with %r after %d tries (%s: %s); the "
            "broker will deliver it again",
            self.route,
            delivery.message_id,
            outcome,
            tries,
            type(exc).__name__,
            exc,
            extra=message_fields(self.route, delivery, outcome),
        )

    async def release_all(self, deliveries: list[Delivery]) -> None:
        """RELEASE these at once, bounded (see :meth:`settle_all`)."""
        await self.settle_all([(d, RELEASE) for d in deliveries])

    async def settle_all(self, settlements: list[tuple[Delivery, Outcome]]) -> None:
        """Settle these at once, bounded by the shutdown clock; past the bound, the broker
        delivers them again when their lease or connection ends."""
        if not settlements:
            return
        settling: Any = asyncio.gather(*(self.settle(d, o) for d, o in settlements))
        if not await self.clock.bounded(settling):
            logger.warning(
                "route %r: settling %d messages at shutdown did not finish in time; the "
                "broker will deliver the unsettled ones again when their lease or "
                "connection ends",
                self.route,
                len(settlements),
            )
            for delivery, _ in settlements:
                self.cut.pop(delivery, None)
                self.forget(delivery)  # given up: not tried again
