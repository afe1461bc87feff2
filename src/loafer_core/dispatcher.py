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
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from loafer_core._keyed_queue import KeyedQueue
from loafer_core._lease_keeper import LeaseKeeper
from loafer_core._provider_start import ProviderStarter
from loafer_core._settler import Settler
from loafer_core._shutdown_clock import ShutdownClock
from loafer_core.errors import ConfigurationError
from loafer_core.middleware import Middleware, chain, fetch_gates
from loafer_core.outcome import RELEASE, RETRY, Outcome, OutcomeKind
from loafer_core.policy import Backoff
from loafer_core.provider import Delivery, Drainable
from loafer_core.route import Route, message_fields
from loafer_core.status import RouteState, RouteStatus

__all__ = ["Dispatcher"]

logger = logging.getLogger("loafer_core.dispatcher")

_STOP: Any = object()

#: A worker yields to the event loop at least once per this many deliveries.
_YIELD_EVERY = 32
#: Outcomes after which the next delivery of the same ordering key may run.
_KEY_GOES_ON = (OutcomeKind.ACCEPT, OutcomeKind.REJECT)


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
        #: middlewares that may hold fetching (the circuit breaker); asked before a fetch
        self._gates = fetch_gates([*middleware, *route.middleware])
        self._paused = False
        #: told when a handler raises KeyboardInterrupt or SystemExit (a request to stop
        #: the service); without it, the dispatcher stops only its own route
        self.on_exit = on_exit
        self.provider = route.provider
        self.backoff = backoff or Backoff()
        self.settle_attempts = settle_attempts
        self._unsettled: dict[Delivery, float] = {}
        # the parts: the shutdown's deadlines, the provider's start, the settles
        self._clock = ShutdownClock(close_timeout, forced_grace)
        self._starter = ProviderStarter(
            route.name, self.provider, route.max_concurrency, self.backoff, self._clock.time_left
        )
        self._settler = Settler(
            route.name,
            self.provider,
            settle_attempts,
            self.backoff,
            self._clock,
            self._forget,
            self._fail,
        )
        self._ready: deque[Delivery] = deque()
        self._idle: deque[asyncio.Future[None]] = deque()
        self._woken: asyncio.Future[None] | None = None  # woken by _wake_one, not yet running
        self._keyed = KeyedQueue()
        self._fetching: asyncio.Task[Any] | None = None
        self._fetch_failures = 0
        self._failure: str | None = None  # the last fetch failure, while backing off
        self._finished = False
        self._received = 0
        self._fetch_failures_total = 0
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
        self._done = asyncio.Event()
        self._started = asyncio.Event()
        self._fatal: BaseException | None = None

    @property
    def close_timeout(self) -> float:
        """The longest a broker call of the shutdown (stop_fetching, releases, close) may
        take."""
        return self._clock.close_timeout

    @close_timeout.setter
    def close_timeout(self, value: float) -> None:
        self._clock.close_timeout = value

    @property
    def forced_grace(self) -> float:
        """Once stop(now=True) was called, the longest a broker call may still take."""
        return self._clock.forced_grace

    @forced_grace.setter
    def forced_grace(self, value: float) -> None:
        self._clock.forced_grace = value

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
            failures = self._starter.failures
            state = RouteState.BACKING_OFF if failures else RouteState.STARTING
        elif self._fetch_failures:
            failures = self._fetch_failures
            state = RouteState.BACKING_OFF
        elif self._paused:
            state = RouteState.PAUSED
        elif self._capacity <= 0:
            state = RouteState.STALLED
        else:
            state = RouteState.RUNNING
        error = None
        if failures:
            error = self._failure if self._started.is_set() else self._starter.last_failure
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
            settled={kind.name: count for kind, count in self._settler.settled.items()},
            message_errors=route.message_errors,
            last_message_error=route.last_message_error,
            fetch_failures=self._fetch_failures_total,
            settle_failures=self._settler.failures,
        )

    async def wait_started(self) -> None:
        """Wait until the provider started and the route passed its checks."""
        await self._started.wait()

    # -- control ----------------------------------------------------------------------------

    def stop(self, *, now: bool = False) -> None:
        """Start a graceful drain; with ``now``, cut in-flight handlers short (released)."""
        self._clock.stopped()
        self._stopping = True
        self._done.set()
        if now:
            self._clock.now.set()
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
        self._clock.shutdown_timeout = shutdown_timeout
        try:
            if not await self._starter(self._done):
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
        lease_task = LeaseKeeper(route.name, provider, self._unsettled, self._fail).start()
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
                cut = self._settler.cut
                await self._settler.settle_all(
                    [(d, cut.pop(d, RELEASE)) for d in list(self._unsettled)]
                )
            route.stop()
            await self._close_provider()
            self._finished = True
        if self._fatal is not None:
            raise self._fatal

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
                    if self._gates and (hold := self._held()) is not None:
                        await self._pause(hold)
                        continue
                    await self._fetch()
                    continue
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle.append(fut)
            try:
                await fut
            finally:
                if self._woken is fut:
                    self._woken = None

    def _held(self) -> float | None:
        """How long a gate holds fetching (the longest), or None; sets the paused state."""
        name = self.route.name
        holds = [hold for gate in self._gates if (hold := gate(name)) is not None]
        self._paused = bool(holds)
        return max(holds) if holds else None

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
        if key is None or self._keyed.admit(delivery, key):
            self._ready.append(delivery)

    # -- handling ---------------------------------------------------------------------------

    async def _worker(self) -> None:
        route, ready = self.route, self._ready
        process, settle = self._process, self._settler.settle
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
        go_on = not self._stopping and outcome.kind in _KEY_GOES_ON
        following, waiting = self._keyed.after(key, go_on)
        if following is not None:
            if self._idle and not self._ready:
                self._wake_one()  # capacity freed while this worker stays on its key
            return following
        if waiting:
            # a later message of this key must not overtake one that will come back
            await self._settler.release_all(waiting)
        return None

    def _forget(self, delivery: Delivery) -> None:
        """A delivery is settled (or given up on): free its slot."""
        unsettled = self._unsettled
        unsettled.pop(delivery, None)
        if self._fetched_once and not unsettled:
            self._done.set()
        elif self._idle and not self._ready:
            self._wake_fetcher()

    # -- shutdown ---------------------------------------------------------------------------

    async def _drain(self, workers: list[asyncio.Task[None]], timeout: float | None) -> None:
        # 0. a provider the broker pushes to stops receiving and gives its buffer back
        provider = self.provider
        if isinstance(provider, Drainable):
            try:
                if not await self._clock.bounded(provider.stop_fetching()):
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
        unstarted.extend(self._keyed.take_waiting())
        self._wake_all()
        if unstarted:
            logger.info(
                "route %r: releasing %d fetched but unstarted messages",
                self.route.name,
                len(unstarted),
            )
            await self._settler.release_all(unstarted)
        # 2. in-flight handlers finish (until the deadline or stop(now=True))
        pending_workers = [w for w in workers if not w.done()]
        if not pending_workers:
            return
        now_task: asyncio.Future[Any] = asyncio.ensure_future(self._clock.now.wait())
        all_done: asyncio.Future[Any] = asyncio.gather(*pending_workers, return_exceptions=True)
        timeout = self._clock.drain_left(timeout)  # from the first stop()
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
            if not await self._clock.bounded(self.provider.close()):
                logger.warning(
                    "route %r: closing the provider did not finish in time", self.route.name
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("route %r: closing the provider failed", self.route.name)
