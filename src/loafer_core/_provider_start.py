"""Starts a route's provider, retrying what a broker not yet reachable makes fail."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from loafer_core.errors import ConfigurationError
from loafer_core.policy import Backoff
from loafer_core.provider import Provider

logger = logging.getLogger("loafer_core.dispatcher")


class ProviderStarter:
    """Starts the provider with the route's capacity: a ``ConfigurationError`` is fatal
    and raised; any other error (a broker not yet reachable at boot) is logged and
    retried with backoff until it starts or ``stopped`` is set. :attr:`failures` and
    :attr:`last_failure` tell the route's status while it backs off."""

    def __init__(
        self,
        route: str,
        provider: Provider,
        capacity: int,
        backoff: Backoff,
        time_left: Callable[[], float],
    ) -> None:
        self.route = route
        self.provider = provider
        self.capacity = capacity
        self.backoff = backoff
        self.time_left = time_left  # how long a start that swallows its cancel may hold us
        #: failed starts in a row (0 once started)
        self.failures = 0
        #: the last failure, as ``"Type: text"``
        self.last_failure: str | None = None

    async def __call__(self, stopped: asyncio.Event) -> bool:
        """Start the provider; False if ``stopped`` was set first."""
        route, provider = self.route, self.provider
        failures = 0
        stop = asyncio.ensure_future(stopped.wait())
        try:
            while True:
                starting = asyncio.ensure_future(provider.start(self.capacity))
                try:
                    await asyncio.wait({starting, stop}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not starting.done():
                        starting.cancel()
                        # a start that swallows its cancellation must not hold the shutdown
                        await asyncio.wait({starting}, timeout=self.time_left())
                if not starting.done():
                    logger.warning(
                        "route %r: the provider's start did not end when cancelled; left "
                        "behind (a bug of the provider: its start must be cancellable)",
                        route,
                    )
                    return False
                if starting.cancelled():
                    return False
                exc = starting.exception()
                if exc is None:
                    self.failures = 0
                    if failures:
                        logger.info("route %r: provider started after %d failures", route, failures)
                    return True
                if isinstance(exc, ConfigurationError):
                    raise exc
                failures += 1
                self.failures = failures
                self.last_failure = f"{type(exc).__name__}: {exc}"
                delay = self.backoff.delay(failures)
                logger.warning(
                    "route %r: starting the provider failed (%s: %s); retrying in %.2fs",
                    route,
                    type(exc).__name__,
                    exc,
                    delay,
                    exc_info=failures == 1,
                )
                await asyncio.wait({stop}, timeout=delay)
                if stop.done():
                    return False
        finally:
            stop.cancel()
