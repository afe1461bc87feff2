"""The dispatcher: one independent loop per route.

For each route it:

- fetches only for free capacity (``max_concurrency`` minus deliveries fetched and not
  yet settled), so a provider's prefetch or credit can follow it;
- hands deliveries to a pool of ``max_concurrency`` workers; deliveries sharing an
  ordering key go one at a time, in arrival order (different keys run concurrently), and
  when one of them is RETRIED or RELEASED the later ones of its key are RELEASED too, so
  none overtakes it;
- settles every delivery with its outcome, retrying a failed settle with backoff;
- extends the leases of unsettled deliveries on providers that support it;
- retries failed fetches with exponential backoff and jitter; a ``ConfigurationError``
  is fatal and propagates;
- on :meth:`Dispatcher.stop`, drains: stops fetching, RELEASEs fetched-but-unstarted
  deliveries at once, lets in-flight handlers finish (until ``stop(now=True)`` or the
  manager's deadline), RELEASEs what was cut short, calls the handler's ``stop()`` and
  closes the provider.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from typing import Any

from loafer_core.errors import ConfigurationError
from loafer_core.outcome import RELEASE, Outcome, OutcomeKind
from loafer_core.policy import Backoff
from loafer_core.provider import Delivery, LeaseExtender, Support
from loafer_core.route import Route

__all__ = ["Dispatcher"]

logger = logging.getLogger("loafer_core.dispatcher")

_STOP: Any = object()


class Dispatcher:
    """Runs one route until stopped. Created by :class:`~loafer_core.manager.Manager`."""

    def __init__(
        self,
        route: Route,
        *,
        backoff: Backoff | None = None,
        settle_attempts: int = 5,
        close_timeout: float = 30.0,
    ) -> None:
        self.route = route
        self.provider = route.provider
        self.backoff = backoff or Backoff()
        self.settle_attempts = settle_attempts
        self.close_timeout = close_timeout
        self._unsettled: dict[Delivery, float] = {}
        self._ready: asyncio.Queue[Any] = asyncio.Queue()
        self._keys: dict[str, deque[Delivery]] = {}
        self._capacity = asyncio.Event()
        self._stopping = False
        self._now = asyncio.Event()
        self._fetcher: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self.handled = 0

    def __repr__(self) -> str:
        return f"<Dispatcher {self.route.name!r} unsettled={len(self._unsettled)}>"

    @property
    def unsettled(self) -> int:
        """Deliveries fetched and not yet settled."""
        return len(self._unsettled)

    async def wait_started(self) -> None:
        """Wait until the provider started and the route passed its checks."""
        await self._started.wait()

    # -- control ----------------------------------------------------------------------------

    def stop(self, *, now: bool = False) -> None:
        """Start a graceful drain; with ``now``, cut in-flight handlers short (released)."""
        self._stopping = True
        if now:
            self._now.set()
        if self._fetcher is not None and not self._fetcher.done():
            self._fetcher.cancel()

    async def run(self, *, once: bool = False, shutdown_timeout: float | None = None) -> None:
        """Run the route until :meth:`stop` (or, with ``once``, for one fetch).

        ``shutdown_timeout`` bounds how long in-flight handlers may run after stop; then
        they are cancelled and their deliveries RELEASED.
        """
        route, provider = self.route, self.provider
        try:
            await provider.start(route.max_concurrency)
            route.check_capabilities(provider.capabilities)
        except BaseException:
            await self._close_provider()
            raise
        self._started.set()
        workers = [
            asyncio.create_task(self._worker(), name=f"loafer:{route.name}:worker{i}")
            for i in range(route.max_concurrency)
        ]
        lease_task = self._start_lease_loop()
        self._fetcher = asyncio.create_task(
            self._fetch_loop(once), name=f"loafer:{route.name}:fetch"
        )
        fatal: BaseException | None = None
        try:
            try:
                await self._fetcher
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
            except ConfigurationError as exc:
                fatal = exc
            except Exception as exc:  # the fetch loop itself broke: a bug, but drain anyway
                logger.exception("route %r: fetch loop failed", route.name)
                fatal = exc
            if once and fatal is None and not self._stopping:
                await self._wait_settled()
            self._stopping = True
            await self._drain(workers, shutdown_timeout)
        finally:
            for task in workers:
                task.cancel()
            if lease_task is not None:
                lease_task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if lease_task is not None:
                await asyncio.gather(lease_task, return_exceptions=True)
            if self._unsettled:
                await self._release_all(list(self._unsettled))
            route.stop()
            await self._close_provider()
        if fatal is not None:
            raise fatal

    # -- fetching ---------------------------------------------------------------------------

    async def _fetch_loop(self, once: bool) -> None:
        route, provider = self.route, self.provider
        limit = route.max_concurrency
        unsettled = self._unsettled
        failures = 0
        while not self._stopping:
            free = limit - len(unsettled)
            if free <= 0:
                self._capacity.clear()
                await self._capacity.wait()
                continue
            try:
                deliveries = await provider.fetch(free)
            except (ConfigurationError, asyncio.CancelledError):
                raise
            except Exception as exc:
                failures += 1
                delay = self.backoff.delay(failures)
                logger.warning(
                    "route %r: fetch failed (%s: %s); retrying in %.2fs (failure %d)",
                    route.name,
                    type(exc).__name__,
                    exc,
                    delay,
                    failures,
                    exc_info=failures == 1,
                )
                await asyncio.sleep(delay)
                continue
            if failures:
                logger.info("route %r: fetching again after %d failures", route.name, failures)
                failures = 0
            if deliveries:
                now = time.monotonic()
                for delivery in deliveries:
                    unsettled[delivery] = now
                    self._dispatch(delivery)
            if once:
                return

    def _dispatch(self, delivery: Delivery) -> None:
        key = delivery.ordering_key
        if key is not None:
            pending = self._keys.get(key)
            if pending is not None:
                pending.append(delivery)
                return
            self._keys[key] = deque()
        self._ready.put_nowait(delivery)

    # -- handling ---------------------------------------------------------------------------

    async def _worker(self) -> None:
        ready, route = self._ready, self.route
        while True:
            delivery = await ready.get()
            if delivery is _STOP:
                return
            while delivery is not None:
                try:
                    outcome = await route.process(delivery)
                except Exception:  # process() handles user errors; this is a bug of ours
                    logger.exception(
                        "route %r: internal error on message %s", route.name, delivery.message_id
                    )
                    outcome = RELEASE
                await self._settle(delivery, outcome)
                self.handled += 1
                delivery = await self._next_of_key(delivery, outcome)

    async def _next_of_key(self, delivery: Delivery, outcome: Outcome) -> Delivery | None:
        key = delivery.ordering_key
        if key is None:
            return None
        pending = self._keys.get(key)
        if pending is None:
            return None
        if (
            pending
            and not self._stopping
            and outcome.kind
            in (
                OutcomeKind.ACCEPT,
                OutcomeKind.REJECT,
            )
        ):
            return pending.popleft()
        del self._keys[key]
        if pending:
            # a later message of this key must not overtake one that will come back
            await self._release_all(list(pending))
        return None

    async def _settle(self, delivery: Delivery, outcome: Outcome) -> None:
        failures = 0
        try:
            while True:
                try:
                    await self.provider.settle(delivery, outcome)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    if failures >= self.settle_attempts or self._now.is_set():
                        logger.error(
                            "route %r: could not settle message %s with %r after %d tries "
                            "(%s: %s); the broker will deliver it again",
                            self.route.name,
                            delivery.message_id,
                            outcome,
                            failures,
                            type(exc).__name__,
                            exc,
                        )
                        return
                    delay = self.backoff.delay(failures)
                    logger.warning(
                        "route %r: settling message %s failed (%s: %s); retrying in %.2fs",
                        self.route.name,
                        delivery.message_id,
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                    await asyncio.sleep(delay)
        finally:
            self._unsettled.pop(delivery, None)
            if not self._capacity.is_set():
                self._capacity.set()

    async def _release_all(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            await asyncio.gather(*(self._settle(d, RELEASE) for d in deliveries))

    async def _wait_settled(self) -> None:
        while self._unsettled and not self._stopping:
            self._capacity.clear()
            await self._capacity.wait()

    # -- leases -----------------------------------------------------------------------------

    def _start_lease_loop(self) -> asyncio.Task[None] | None:
        provider = self.provider
        if provider.capabilities.lease_extension is Support.NONE:
            return None
        if not isinstance(provider, LeaseExtender):
            return None
        duration = provider.lease_duration
        if duration is None or not math.isfinite(duration) or duration <= 0:
            return None
        return asyncio.create_task(
            self._lease_loop(provider, float(duration)), name=f"loafer:{self.route.name}:lease"
        )

    async def _lease_loop(self, provider: LeaseExtender, duration: float) -> None:
        interval = duration / 3
        while True:
            await asyncio.sleep(interval)  # a periodic timer, not a synchronisation stand-in
            now = time.monotonic()
            due = [d for d, t in self._unsettled.items() if now - t >= interval * 0.9]
            if not due:
                continue
            try:
                await provider.extend_leases(due, duration)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "route %r: extending %d leases failed (%s: %s)",
                    self.route.name,
                    len(due),
                    type(exc).__name__,
                    exc,
                )
                continue
            for delivery in due:
                if delivery in self._unsettled:
                    self._unsettled[delivery] = now

    # -- shutdown ---------------------------------------------------------------------------

    async def _drain(self, workers: list[asyncio.Task[None]], timeout: float | None) -> None:
        # 1. fetched but not started: back to the broker at once
        unstarted: list[Delivery] = []
        while not self._ready.empty():
            item = self._ready.get_nowait()
            if item is not _STOP:
                unstarted.append(item)
        for pending in list(self._keys.values()):
            unstarted.extend(pending)
            pending.clear()
        # 2. workers finish what they hold, then exit
        for _ in workers:
            self._ready.put_nowait(_STOP)
        if unstarted:
            logger.info(
                "route %r: releasing %d fetched but unstarted messages",
                self.route.name,
                len(unstarted),
            )
            await self._release_all(unstarted)
        pending_workers = [w for w in workers if not w.done()]
        if not pending_workers:
            return
        now_task: asyncio.Future[Any] = asyncio.ensure_future(self._now.wait())
        all_done: asyncio.Future[Any] = asyncio.gather(*pending_workers, return_exceptions=True)
        try:
            await asyncio.wait(
                {all_done, now_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            now_task.cancel()
        cut = [w for w in pending_workers if not w.done()]
        if cut:
            logger.warning(
                "route %r: %d handlers still running at shutdown were cancelled; their "
                "messages are released",
                self.route.name,
                len(self._unsettled),
            )

    async def _close_provider(self) -> None:
        try:
            async with asyncio.timeout(self.close_timeout):
                await self.provider.close()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("route %r: closing the provider failed", self.route.name)
