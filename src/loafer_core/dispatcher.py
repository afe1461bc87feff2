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
  (from start, fetch, settle or a lease extension) is fatal: the route drains and
  :meth:`Dispatcher.run` raises it;
- on :meth:`Dispatcher.stop`, drains: stops fetching, RELEASEs fetched-but-unstarted
  deliveries at once, lets in-flight handlers finish (until ``stop(now=True)`` or the
  manager's deadline), RELEASEs the deliveries of handlers cut short and sends a settle
  cut short again, calls the handler's ``stop()`` and closes the provider.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from loafer_core.errors import ConfigurationError
from loafer_core.handler import really_cancelled as _really_cancelled
from loafer_core.middleware import Middleware, chain
from loafer_core.outcome import RELEASE, RETRY, Outcome, OutcomeKind
from loafer_core.policy import Backoff
from loafer_core.provider import Delivery, Drainable, LeaseExtender, Support
from loafer_core.route import Route, message_fields
from loafer_core.status import RouteState, RouteStatus

__all__ = ["Dispatcher"]

logger = logging.getLogger("loafer_core.dispatcher")

_STOP: Any = object()

#: A worker yields to the event loop at least once per this many deliveries.
_YIELD_EVERY = 32


class Dispatcher:
    """Runs one route until stopped. Created by :class:`~loafer_core.manager.Manager`.

    Design note: there is no separate fetcher task. A worker that finds nothing ready
    fetches for the free capacity itself (one fetch at a time), keeps the first delivery
    and wakes one idle worker if more are ready; each woken worker wakes the next. With
    fast handlers one worker drains a batch without a context switch; with slow ones
    concurrency ramps up within a loop iteration per worker.
    """

    def __init__(
        self,
        route: Route,
        *,
        backoff: Backoff | None = None,
        settle_attempts: int = 5,
        close_timeout: float = 30.0,
        forced_grace: float = 1.0,
        on_exit: Callable[[BaseException], None] | None = None,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        self.route = route
        #: the route's processing inside the manager's and the route's middlewares
        self._process = chain(route, [*middleware, *route.middleware], route.pipeline())
        #: told when a handler raises KeyboardInterrupt or SystemExit (a request to stop
        #: the service); without it, the dispatcher stops only its own route
        self.on_exit = on_exit
        self.provider = route.provider
        self.backoff = backoff or Backoff()
        self.settle_attempts = settle_attempts
        #: the longest a broker call of the shutdown (stop_fetching, releases, close) may take
        self.close_timeout = close_timeout
        #: ... and once stop(now=True) was called, the longest it may still take
        self.forced_grace = forced_grace
        self._unsettled: dict[Delivery, float] = {}
        self._cut: dict[Delivery, Outcome] = {}  # settles the shutdown cut short
        self._ready: deque[Delivery] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()
        self._woken: asyncio.Future[None] | None = None  # woken by _wake_one, not yet running
        self._keys: dict[str, deque[Delivery]] = {}
        self._fetching: asyncio.Task[Any] | None = None
        self._fetch_failures = 0
        self._start_failures = 0
        self._failure: str | None = None  # the last start or fetch failure, while backing off
        self._finished = False
        self._received = 0
        self._fetch_failures_total = 0
        self._settle_failures = 0
        self._settled: dict[OutcomeKind, int] = dict.fromkeys(OutcomeKind, 0)
        self._empty_streak = 0
        # Fetch in batches: while others are in flight, wait until this many slots are free.
        # Small routes keep every slot busy; from 50 slots up, a tenth (at most 10) is
        # worth the fewer, larger fetches.
        mc = route.max_concurrency
        self._batch = 1 if mc < 50 else min(10, mc // 10)
        # slots a delivery may take: max_concurrency, less sync handler threads stuck in a
        # call that overran handler_timeout (fetching for them would only time messages
        # out unrun, burning their attempts)
        self._capacity = mc
        route.watch_stuck(self._stuck_changed)
        self._once = False
        self._fetched_once = False
        self._stopping = False
        self._now = asyncio.Event()
        self._done = asyncio.Event()
        self._started = asyncio.Event()
        self._fatal: BaseException | None = None
        # the shutdown's deadline: shutdown_timeout (given to run()) from the first stop()
        self._shutdown_timeout: float | None = None
        self._stopped_at: float | None = None

    def __repr__(self) -> str:
        return f"<Dispatcher {self.route.name!r} unsettled={len(self._unsettled)}>"

    @property
    def unsettled(self) -> int:
        """Deliveries fetched and not yet settled."""
        return len(self._unsettled)

    def status(self) -> RouteStatus:
        """The route's state and counters now."""
        route = self.route
        failures = 0
        if self._finished:
            state = RouteState.FAILED if self._fatal is not None else RouteState.STOPPED
        elif self._stopping:
            state = RouteState.DRAINING
        elif not self._started.is_set():
            failures = self._start_failures
            state = RouteState.BACKING_OFF if failures else RouteState.STARTING
        elif self._fetch_failures:
            failures = self._fetch_failures
            state = RouteState.BACKING_OFF
        elif self._capacity <= 0:
            state = RouteState.STALLED
        else:
            state = RouteState.RUNNING
        error = self._failure if failures else None
        if state is RouteState.FAILED:
            error = f"{type(self._fatal).__name__}: {self._fatal}"
        return RouteStatus(
            name=route.name,
            state=state,
            failures=failures,
            error=error,
            in_flight=len(self._unsettled),
            stuck_handlers=route.max_concurrency - self._capacity,
            received=self._received,
            settled={kind.name: count for kind, count in self._settled.items()},
            message_errors=route.message_errors,
            last_message_error=route.last_message_error,
            fetch_failures=self._fetch_failures_total,
            settle_failures=self._settle_failures,
        )

    async def wait_started(self) -> None:
        """Wait until the provider started and the route passed its checks."""
        await self._started.wait()

    # -- control ----------------------------------------------------------------------------

    def stop(self, *, now: bool = False) -> None:
        """Start a graceful drain; with ``now``, cut in-flight handlers short (released)."""
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        self._stopping = True
        self._done.set()
        if now:
            self._now.set()
        fetching = self._fetching
        if fetching is not None and not fetching.done():
            fetching.cancel()
        self._wake_all()

    def _fail(self, exc: ConfigurationError) -> None:
        """The provider says its configuration is wrong (queue gone, access refused): no
        retry can help. Stop the route; run() raises ``exc`` once it has drained."""
        if self._fatal is None:
            self._fatal = exc
        self.stop()

    async def run(self, *, once: bool = False, shutdown_timeout: float | None = None) -> None:
        """Run the route until :meth:`stop` (or, with ``once``, for one fetch).

        ``shutdown_timeout`` bounds how long in-flight handlers may run after stop; then
        they are cancelled and their deliveries RELEASED.
        """
        route, provider = self.route, self.provider
        self._once = once
        self._shutdown_timeout = shutdown_timeout
        try:
            if not await self._start_provider():
                logger.info("route %r: stopped before its provider started", route.name)
                route.stop()
                await self._close_provider()
                self._finished = True
                return
            route.check_capabilities(provider.capabilities)
        except BaseException as exc:
            route.stop()  # the handler's stop() is called whatever ended the route
            await self._close_provider()
            if self._fatal is None and isinstance(exc, Exception):
                self._fatal = exc
            self._finished = True
            raise
        self._started.set()
        workers = [
            asyncio.create_task(self._worker(), name=f"loafer:{route.name}:worker{i}")
            for i in range(route.max_concurrency)
        ]
        lease_task = self._start_lease_loop()
        try:
            await self._done.wait()
            self.stop()
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
                # a handler cancelled by the shutdown: RELEASE; a settle it cut short: again
                cut = self._cut
                await self._settle_all([(d, cut.pop(d, RELEASE)) for d in list(self._unsettled)])
            route.stop()
            await self._close_provider()
            self._finished = True
        if self._fatal is not None:
            raise self._fatal

    async def _start_provider(self) -> bool:
        """Start the provider, retrying transient failures; False if stopped meanwhile.

        A ``ConfigurationError`` is fatal and raised; any other error (a broker not yet
        reachable at boot) is logged and retried with backoff until it starts or stop().
        """
        route, provider = self.route, self.provider
        failures = 0
        stopped = asyncio.ensure_future(self._done.wait())
        try:
            while True:
                starting = asyncio.ensure_future(provider.start(route.max_concurrency))
                try:
                    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not starting.done():
                        starting.cancel()
                        # a start that swallows its cancellation must not hold the shutdown
                        await asyncio.wait({starting}, timeout=self._time_left())
                if not starting.done():
                    logger.warning(
                        "route %r: the provider's start did not end when cancelled; left "
                        "behind (a bug of the provider: its start must be cancellable)",
                        route.name,
                    )
                    return False
                if starting.cancelled():
                    return False
                exc = starting.exception()
                if exc is None:
                    self._start_failures = 0
                    if failures:
                        logger.info(
                            "route %r: provider started after %d failures", route.name, failures
                        )
                    return True
                if isinstance(exc, ConfigurationError):
                    raise exc
                failures += 1
                self._start_failures = failures
                self._failure = f"{type(exc).__name__}: {exc}"
                delay = self.backoff.delay(failures)
                logger.warning(
                    "route %r: starting the provider failed (%s: %s); retrying in %.2fs",
                    route.name,
                    type(exc).__name__,
                    exc,
                    delay,
                    exc_info=failures == 1,
                )
                await asyncio.wait({stopped}, timeout=delay)
                if stopped.done():
                    return False
        finally:
            stopped.cancel()

    def _stuck_changed(self, stuck: int) -> None:
        """On the loop: ``stuck`` of the route's sync handler threads are in calls that
        overran handler_timeout. Fetch only for the others; say when that changes."""
        route = self.route
        before = route.max_concurrency - self._capacity
        self._capacity = max(0, route.max_concurrency - stuck)
        if stuck >= route.max_concurrency and before < stuck:
            logger.error(
                "route %r: all %d handler threads are stuck in calls that overran "
                "handler_timeout=%ss: no message is fetched until one returns",
                route.name,
                route.max_concurrency,
                route.handler_timeout,
            )
        elif stuck > before:
            logger.warning(
                "route %r: %d of %d handler threads are stuck in calls that overran "
                "handler_timeout=%ss; the route fetches for the others",
                route.name,
                stuck,
                route.max_concurrency,
                route.handler_timeout,
            )
        elif stuck < before:
            logger.info(
                "route %r: a stuck handler call returned; %d still stuck", route.name, stuck
            )
            if self._idle and not self._ready:
                self._wake_fetcher()

    # -- waking workers -----------------------------------------------------------------------

    def _wake_one(self) -> None:
        if self._woken is not None:
            # a worker woken earlier has not run yet: when it does, it takes what is ready
            # (and wakes the next one if more is). One wake in flight at a time: a fast
            # handler's worker drains a batch without a wake per delivery, and concurrency
            # still ramps up one worker per loop iteration.
            return
        idle = self._idle
        while idle:
            fut = idle.popleft()
            if not fut.done():
                fut.set_result(None)
                self._woken = fut
                return

    def _wake_fetcher(self) -> None:
        """Nothing is ready: if a batch of capacity is free and nobody fetches, wake one."""
        if self._fetching is not None or self._fetched_once or self._stopping:
            return
        unsettled = len(self._unsettled)
        free = self._capacity - unsettled
        if free >= self._batch or (free > 0 and unsettled == 0):
            self._wake_one()

    def _wake_all(self) -> None:
        idle = self._idle
        while idle:
            fut = idle.popleft()
            if not fut.done():
                fut.set_result(None)

    # -- fetching -----------------------------------------------------------------------------

    async def _next(self) -> Any:
        """The next delivery for a worker, fetching if nothing is ready; _STOP to exit."""
        ready = self._ready
        while True:
            if self._stopping:
                return _STOP
            if ready:
                delivery = ready.popleft()
                if ready:
                    self._wake_one()  # chain: the next idle worker takes the next one
                elif self._idle:
                    self._wake_fetcher()
                return delivery
            if self._fetching is None and not self._fetched_once:
                unsettled = len(self._unsettled)
                free = self._capacity - unsettled
                if free >= self._batch or (free > 0 and unsettled == 0):
                    await self._fetch()
                    continue
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle.append(fut)
            try:
                await fut
            finally:
                if self._woken is fut:
                    self._woken = None

    async def _fetch(self) -> None:
        route, provider = self.route, self.provider
        task = asyncio.current_task()
        self._fetching = task
        began = time.monotonic()
        error: BaseException | None = None
        try:
            deliveries = await provider.fetch(self._capacity - len(self._unsettled))
        except asyncio.CancelledError as exc:
            if task is None or task.cancelling():
                if task is not None and self._stopping:
                    task.uncancel()  # our own stop(): the worker just exits
                    return
                raise
            error = exc  # the provider raised CancelledError itself: a failure like any other
        except ConfigurationError as exc:
            self._fetching = None  # so that stop() does not cancel this very task
            self._fail(exc)
            return
        except Exception as exc:
            error = exc
        finally:
            self._fetching = None
        if error is not None:
            self._fetch_failures += 1
            self._fetch_failures_total += 1
            self._failure = f"{type(error).__name__}: {error}"
            delay = self.backoff.delay(self._fetch_failures)
            logger.warning(
                "route %r: fetch failed (%s: %s); retrying in %.2fs (failure %d)",
                route.name,
                type(error).__name__,
                error,
                delay,
                self._fetch_failures,
                exc_info=error if self._fetch_failures == 1 else None,
            )
            await self._pause(delay)
            return
        if self._fetch_failures:
            logger.info(
                "route %r: fetching again after %d failures", route.name, self._fetch_failures
            )
            self._fetch_failures = 0
        if self._once:
            self._fetched_once = True
            if not deliveries and not self._unsettled:
                self._done.set()
        if not deliveries:
            # a provider that returns at once with nothing must not spin the event loop
            if time.monotonic() - began < 0.05:
                self._empty_streak += 1
                await self._pause(min(1.0, 0.001 * 2 ** min(self._empty_streak, 10)))
            return
        self._empty_streak = 0
        self._received += len(deliveries)
        now = time.monotonic()
        unsettled, ready = self._unsettled, self._ready
        for delivery in deliveries:
            unsettled[delivery] = now
            if delivery.ordering_key is None:
                ready.append(delivery)
            else:
                self._dispatch(delivery)
        if self._stopping:
            self._wake_all()

    async def _pause(self, delay: float) -> None:
        """Sleep before fetching again, as the fetching worker (stop() interrupts it)."""
        task = asyncio.current_task()
        self._fetching = task
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if task is not None and self._stopping:
                task.uncancel()
                return
            raise
        finally:
            self._fetching = None

    def _dispatch(self, delivery: Delivery) -> None:
        key = delivery.ordering_key
        if key is not None:
            pending = self._keys.get(key)
            if pending is not None:
                pending.append(delivery)
                return
            self._keys[key] = deque()
        self._ready.append(delivery)

    # -- handling ---------------------------------------------------------------------------

    async def _worker(self) -> None:
        route, ready = self.route, self._ready
        process, settle = self._process, self._settle
        # A provider that hands out and settles without ever suspending (the memory broker
        # with a backlog) would otherwise keep the event loop to this worker: no timers,
        # no stop(), no signal handlers. Yield once every _YIELD_EVERY deliveries.
        countdown = _YIELD_EVERY
        while True:
            # fast path: take a ready delivery without a coroutine call
            delivery: Delivery | None
            if ready and not self._stopping:
                delivery = ready.popleft()
                if ready:
                    self._wake_one()
                elif self._idle:
                    self._wake_fetcher()
            else:
                delivery = await self._next()
                if delivery is _STOP:
                    return
            while delivery is not None:
                try:
                    outcome = await process(delivery)
                except (KeyboardInterrupt, SystemExit) as exc:
                    outcome = RELEASE  # not the message's fault: for the next consumer
                    self._exit_requested(exc, delivery)
                except asyncio.CancelledError:
                    raise
                except BaseException:  # process() handles user errors; this is a bug of ours
                    outcome = RETRY()  # counted, so max_attempts still bounds it
                    logger.exception(
                        "route %r: internal error on message %s; it will be retried",
                        route.name,
                        delivery.message_id,
                        extra=message_fields(route.name, delivery, outcome),
                    )
                await settle(delivery, outcome)
                countdown -= 1
                if not countdown:
                    countdown = _YIELD_EVERY
                    await asyncio.sleep(0)
                if delivery.ordering_key is None:
                    break
                delivery = await self._next_of_key(delivery, outcome)

    def _exit_requested(self, exc: BaseException, delivery: Delivery) -> None:
        """A handler raised KeyboardInterrupt or SystemExit: the service is asked to stop.
        Drain gracefully (the manager exits with that exception once drained)."""
        logger.error(
            "route %r: the handler raised %s on message %s: the message is released and "
            "the service stops (graceful drain)",
            self.route.name,
            repr(exc),
            delivery.message_id,
            extra=message_fields(self.route.name, delivery, RELEASE),
        )
        if self.on_exit is not None:
            self.on_exit(exc)
        else:
            self.stop()

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
            if self._idle and not self._ready:
                self._wake_one()  # capacity freed while this worker stays on its key
            return pending.popleft()
        del self._keys[key]
        if pending:
            # a later message of this key must not overtake one that will come back
            await self._release_all(list(pending))
        return None

    async def _settle(self, delivery: Delivery, outcome: Outcome) -> None:
        try:
            try:
                await self.provider.settle(delivery, outcome)
                self._settled[outcome.kind] += 1
            except ConfigurationError as exc:
                self._settle_failed(delivery, outcome, 1, exc)
                self._fail(exc)
            except asyncio.CancelledError as exc:
                if _really_cancelled():
                    raise
                await self._settle_again(delivery, outcome, exc)
            except Exception as exc:
                await self._settle_again(delivery, outcome, exc)
        except asyncio.CancelledError:
            # cut short by the shutdown (settling, or waiting to try again): the delivery
            # stays unsettled, and run() sends this outcome again once the workers ended
            self._cut[delivery] = outcome
            raise
        self._forget(delivery)

    async def _settle_again(self, delivery: Delivery, outcome: Outcome, exc: BaseException) -> None:
        """The first settle failed: retry with backoff, up to ``settle_attempts`` in all."""
        failures = 0
        while True:
            failures += 1
            if failures >= self.settle_attempts or self._now.is_set():
                self._settle_failed(delivery, outcome, failures, exc)
                return
            delay = self.backoff.delay(failures)
            logger.warning(
                "route %r: settling message %s failed (%s: %s); retrying in %.2fs",
                self.route.name,
                delivery.message_id,
                type(exc).__name__,
                exc,
                delay,
                extra=message_fields(self.route.name, delivery, outcome),
            )
            await asyncio.sleep(delay)
            try:
                await self.provider.settle(delivery, outcome)
                self._settled[outcome.kind] += 1
                return
            except ConfigurationError as again:
                self._settle_failed(delivery, outcome, failures + 1, again)
                self._fail(again)
                return
            except asyncio.CancelledError as again:
                if _really_cancelled():
                    raise
                exc = again
            except Exception as again:
                exc = again

    def _settle_failed(
        self, delivery: Delivery, outcome: Outcome, tries: int, exc: BaseException
    ) -> None:
        self._settle_failures += 1
        logger.error(
            "route %r: could not settle message %s with %r after %d tries (%s: %s); the "
            "broker will deliver it again",
            self.route.name,
            delivery.message_id,
            outcome,
            tries,
            type(exc).__name__,
            exc,
            extra=message_fields(self.route.name, delivery, outcome),
        )

    def _forget(self, delivery: Delivery) -> None:
        """A delivery is settled (or given up on): free its slot."""
        unsettled = self._unsettled
        unsettled.pop(delivery, None)
        if self._fetched_once and not unsettled:
            self._done.set()
        elif self._idle and not self._ready:
            self._wake_fetcher()

    async def _release_all(self, deliveries: list[Delivery]) -> None:
        await self._settle_all([(d, RELEASE) for d in deliveries])

    async def _settle_all(self, settlements: list[tuple[Delivery, Outcome]]) -> None:
        """Settle these at once, bounded (see :meth:`_bounded`); past the bound, the
        broker delivers them again when their lease or connection ends."""
        if not settlements:
            return
        settling = asyncio.gather(*(self._settle(d, o) for d, o in settlements))
        if not await self._bounded(settling):
            logger.warning(
                "route %r: settling %d messages at shutdown did not finish in time; the "
                "broker will deliver the unsettled ones again when their lease or "
                "connection ends",
                self.route.name,
                len(settlements),
            )
            for delivery, _ in settlements:
                self._cut.pop(delivery, None)
                self._forget(delivery)  # given up: not tried again

    def _time_left(self) -> float:
        """How long one broker call of the shutdown may take now: ``close_timeout``, or
        what is left of the shutdown's deadline (``shutdown_timeout`` from the first
        stop()) if less, but never under ``forced_grace``, so that the final releases and
        the close always get a moment."""
        limit = self.close_timeout
        if self._shutdown_timeout is not None and self._stopped_at is not None:
            left = self._stopped_at + self._shutdown_timeout - time.monotonic()
            limit = min(limit, left)
        return max(limit, self.forced_grace)

    async def _bounded(self, aw: Awaitable[Any]) -> bool:
        """Await ``aw`` for up to :meth:`_time_left`, and for at most ``forced_grace`` once
        ``stop(now=True)`` is called (a broker that hangs must not hold the shutdown);
        past that it is cancelled. True if it finished; its exception propagates."""
        task = asyncio.ensure_future(aw)
        limit = self._time_left()
        deadline = time.monotonic() + limit
        try:
            if not self._now.is_set():
                now = asyncio.ensure_future(self._now.wait())
                try:
                    await asyncio.wait(
                        {task, now},
                        timeout=limit,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    now.cancel()
            if not task.done():
                remaining = min(self.forced_grace, deadline - time.monotonic())
                if remaining > 0:
                    await asyncio.wait({task}, timeout=remaining)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=self.forced_grace)
        if not task.done() or task.cancelled():
            return False
        task.result()
        return True

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
            except ConfigurationError as exc:
                self._fail(exc)
                return
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
        # 0. a provider the broker pushes to stops receiving and gives its buffer back
        provider = self.provider
        if isinstance(provider, Drainable):
            try:
                if not await self._bounded(provider.stop_fetching()):
                    logger.warning(
                        "route %r: stop_fetching did not finish in time", self.route.name
                    )
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("route %r: stop_fetching failed", self.route.name)
        # 1. fetched but not started: back to the broker at once
        unstarted = list(self._ready)
        self._ready.clear()
        for pending in list(self._keys.values()):
            unstarted.extend(pending)
            pending.clear()
        self._wake_all()
        if unstarted:
            logger.info(
                "route %r: releasing %d fetched but unstarted messages",
                self.route.name,
                len(unstarted),
            )
            await self._release_all(unstarted)
        # 2. in-flight handlers finish (until the deadline or stop(now=True))
        pending_workers = [w for w in workers if not w.done()]
        if not pending_workers:
            return
        now_task: asyncio.Future[Any] = asyncio.ensure_future(self._now.wait())
        all_done: asyncio.Future[Any] = asyncio.gather(*pending_workers, return_exceptions=True)
        if timeout is not None and self._stopped_at is not None:  # from the first stop()
            timeout = max(0.0, self._stopped_at + timeout - time.monotonic())
        try:
            await asyncio.wait(
                {all_done, now_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            now_task.cancel()
        if any(not w.done() for w in pending_workers):
            logger.warning(
                "route %r: %d handlers or settles still running at shutdown were cancelled; "
                "their messages are released (a cut settle is sent again)",
                self.route.name,
                len(self._unsettled),
            )

    async def _close_provider(self) -> None:
        try:
            if not await self._bounded(self.provider.close()):
                logger.warning(
                    "route %r: closing the provider did not finish in time", self.route.name
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("route %r: closing the provider failed", self.route.name)
