"""The manager: runs routes side by side and shuts them down gracefully.

``Manager(routes).run()`` blocks (Loafer 2.x's ``LoaferManager.run``); ``run(forever=False)``
does one fetch per route, handles and settles what came, then stops. Inside an existing
event loop use ``await manager.serve()`` or ``async with manager: ...``.

Shutdown: SIGINT or SIGTERM (under :meth:`Manager.run`) or :meth:`Manager.stop` starts a
graceful drain of every route: stop fetching, RELEASE fetched-but-unstarted deliveries at
once, let in-flight handlers finish for up to ``shutdown_timeout`` seconds, settle them,
flush settlements, call handlers' ``stop()``, close providers. A second signal (or
``stop(now=True)``) ends at once, releasing what it can.

A handler raising ``SystemExit`` or ``KeyboardInterrupt`` asks the service to stop: its
message is RELEASED, every route drains as on SIGTERM, then :meth:`serve` (and
:meth:`run`) raises that exception, so the process exits with its code.

A :class:`~loafer_core.errors.ConfigurationError` from any route (a missing queue, refused
credentials, a route needing what its provider cannot do) stops every route and is raised
from :meth:`run`/:meth:`serve`, so the process exits non-zero.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

from loafer_core.dispatcher import Dispatcher
from loafer_core.errors import ConfigurationError
from loafer_core.forward import publisher_services
from loafer_core.health import HealthServer
from loafer_core.middleware import Middleware, check_middleware, middleware_services
from loafer_core.policy import check_number
from loafer_core.route import Route
from loafer_core.status import RouteState, RouteStatus

__all__ = ["LoaferManager", "Manager", "Service"]

logger = logging.getLogger("loafer_core.manager")


class Manager:
    """Runs a set of routes (on any mix of providers) in one process.

    Arguments:
        routes: the routes (at least one).
        shutdown_timeout: seconds in-flight handlers get to finish once stopping.
        health_port: serve ``/livez``, ``/readyz`` and ``/status`` on this port while
            serving (see :mod:`loafer_core.health`; ``0``: a free port); ``None``: no.
        health_host: the address the health endpoints listen on.
        status_interval: log one status line per route at INFO every this many seconds
            (received, handled/s, in flight, outcomes, last error); ``None``: no. A
            summary line per route is logged at shutdown either way.
        middleware: a list of middlewares wrapped around every delivery of every route
            (see :mod:`loafer_core.middleware`), outside each route's own.
    """

    def __init__(
        self,
        routes: Iterable[Route],
        *,
        shutdown_timeout: float = 30.0,
        health_port: int | None = None,
        health_host: str = "0.0.0.0",
        status_interval: float | None = None,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        if isinstance(routes, Route):
            routes = [routes]
        try:
            route_list = list(routes)
        except TypeError:
            raise ConfigurationError(
                f"Manager(routes=...): expected an iterable of Route, got {type(routes).__name__}"
            ) from None
        if not route_list:
            raise ConfigurationError("Manager(routes=...): at least one route is required")
        for i, route in enumerate(route_list):
            if not isinstance(route, Route):
                raise ConfigurationError(
                    f"Manager(routes=...): item {i} is a {type(route).__name__}, not a Route"
                )
        if len({id(r) for r in route_list}) != len(route_list):
            raise ConfigurationError("Manager(routes=...): the same Route object is listed twice")
        if (
            isinstance(shutdown_timeout, bool)
            or not isinstance(shutdown_timeout, int | float)
            or not math.isfinite(shutdown_timeout)
            or shutdown_timeout < 0
        ):
            raise ConfigurationError(
                f"Manager(shutdown_timeout=...): expected seconds >= 0, got {shutdown_timeout!r}"
            )
        if health_port is not None and (
            isinstance(health_port, bool)
            or not isinstance(health_port, int)
            or not 0 <= health_port <= 65535
        ):
            raise ConfigurationError(
                f"Manager(health_port=...): expected a port number 0-65535 or None, got "
                f"{health_port!r}"
            )
        if status_interval is not None:
            check_number("Manager", "status_interval", status_interval, minimum=0.1)
        self.middleware = check_middleware("Manager", middleware)
        self.routes = route_list
        self.shutdown_timeout = float(shutdown_timeout)
        self.health_port = health_port
        self.health_host = health_host
        self.status_interval = status_interval
        #: the health server while serving (its ``port`` is the one bound)
        self.health: HealthServer | None = None
        #: things started when :meth:`serve` begins, before any route, and closed after
        #: the drain, in reverse order (a metrics endpoint, say): see :class:`Service`.
        #: The routes' ``publish_to`` publishers, the middlewares' ``services`` (an
        #: Idempotency's Redis store) and the handlers' ``loafer_services`` (the publisher
        #: of an ``SQSHandler``) are added by :meth:`serve` (each once)
        self.services: list[Service] = []
        self._dispatchers: list[Dispatcher] = []
        self._signals = 0
        self._task: asyncio.Task[None] | None = None
        self._serving = asyncio.Event()  # set while serve() runs (its dispatchers exist)
        self._ended = asyncio.Event()  # set once a serve() has ended, with _fatal
        self._fatal: BaseException | None = None
        self._stop_request: bool | None = None  # stop(now=...) asked before dispatchers exist
        self._exit: BaseException | None = None  # a handler's SystemExit/KeyboardInterrupt

    def __repr__(self) -> str:
        return f"<Manager routes={[r.name for r in self.routes]}>"

    # -- blocking entry point -------------------------------------------------------------

    def run(self, forever: bool = True) -> None:
        """Run until SIGINT/SIGTERM (or, with ``forever=False``, one iteration), blocking.

        Returns after a clean drain; raises ``ConfigurationError`` after a fatal error.
        Like ``asyncio.run``, but a task that will not end when cancelled (a library's
        reconnect loop, say) cannot keep it from returning: what is left once the
        routes have drained gets :data:`LEFTOVER_GRACE` seconds, then is left behind.
        """
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._run_with_signals(forever))
        finally:
            try:
                _end_leftovers(loop, LEFTOVER_GRACE)
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    async def _run_with_signals(self, forever: bool) -> None:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        try:
            await self.serve(forever=forever)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info(
                "%s received: draining (in-flight handlers get up to %ss; "
                "signal again to stop now)",
                sig.name,
                self.shutdown_timeout,
            )
            self.stop()
        else:
            logger.warning(
                "%s received again: stopping now, releasing in-flight messages", sig.name
            )
            self.stop(now=True)

    # -- async API ------------------------------------------------------------------------

    async def serve(self, *, forever: bool = True) -> None:
        """Run every route until :meth:`stop` (or one iteration); drain; raise a fatal error."""
        if self._serving.is_set():
            raise RuntimeError("this Manager is already running")
        self._ended.clear()
        self._fatal = None
        ran = [route.name for route in self.routes if route.has_run]
        if ran:  # their providers are closed: a second run would start nothing, or spin
            self._fatal = ConfigurationError(
                f"route(s) {ran} already ran (in this or another Manager) and closed their "
                "providers: a route runs once; build new routes, with new providers, to run "
                "again"
            )
            self._ended.set()
            raise self._fatal
        services = self._services()
        started: list[Service] = []
        try:
            for service in services:
                await service.start()
                started.append(service)
        except Exception as refused:  # a port in use, say: nothing runs, serve() says why
            await _close_services(started)
            self._fatal = refused
            self._ended.set()
            raise
        for route in self.routes:
            route.has_run = True
        self._exit = None
        self._dispatchers = [
            Dispatcher(route, on_exit=self._exit_requested, middleware=self.middleware)
            for route in self.routes
        ]
        reporter = (
            asyncio.create_task(self._report(self.status_interval), name="loafer:status")
            if self.status_interval is not None
            else None
        )
        if self._stop_request is not None:  # stop() came before serve() got going
            for d in self._dispatchers:
                d.stop(now=self._stop_request)
        self._serving.set()
        tasks = {
            asyncio.create_task(
                d.run(once=not forever, shutdown_timeout=self.shutdown_timeout),
                name=f"loafer:{d.route.name}",
            ): d
            for d in self._dispatchers
        }
        fatal: BaseException | None = None
        try:
            fatal = await self._first_failure(tasks)
        except asyncio.CancelledError:
            for d in self._dispatchers:
                d.stop(now=True)
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            if reporter is not None:
                reporter.cancel()
                await asyncio.gather(reporter, return_exceptions=True)
            await _close_services(started)
            self._log_summary()
            self._stop_request = None
            self._fatal = fatal
            self._serving.clear()
            self._ended.set()
        if fatal is not None:
            raise fatal
        if self._exit is not None:
            logger.warning("manager stopped: exiting with the handler's %r", self._exit)
            raise self._exit
        logger.info("manager stopped cleanly")

    def _services(self) -> list[Service]:
        """What serve() starts before the routes and closes after them, in order: the
        health server, the user's services, the routes' publish_to publishers, then the
        stores of middlewares and what handlers need opened with them (each once)."""
        services: list[Service] = [*self.services, *publisher_services(self.routes)]
        # the stores of middlewares (an Idempotency's RedisStore) not given already
        chained = [*self.middleware, *(m for route in self.routes for m in route.middleware)]
        # and what handlers need opened with them (the publisher of an SQSHandler)
        for service in [*middleware_services(chained), *handler_services(self.routes)]:
            if not any(service is given for given in services):
                services.append(service)
        if self.health_port is not None:
            self.health = HealthServer(self.status, host=self.health_host, port=self.health_port)
            services.insert(0, self.health)
        return services

    async def _first_failure(
        self, tasks: dict[asyncio.Task[None], Dispatcher]
    ) -> BaseException | None:
        """Wait for every route's task to end; the first to fail stops the others (the
        manager drains) and is returned."""
        fatal: BaseException | None = None
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception() if not task.cancelled() else None
                if exc is not None and fatal is None:
                    fatal = exc
                    logger.critical(
                        "route %r stopped the manager: %s: %s",
                        tasks[task].route.name,
                        type(exc).__name__,
                        exc,
                    )
                    self.stop()
                elif exc is not None:
                    logger.error("route %r failed too: %s", tasks[task].route.name, exc)
        return fatal

    def status(self) -> list[RouteStatus]:
        """Each route's state and counters now (see :mod:`loafer_core.status`); before
        :meth:`serve` every route is ``starting``."""
        if not self._dispatchers:
            return [RouteStatus(route.name, RouteState.STARTING) for route in self.routes]
        return [d.status() for d in self._dispatchers]

    @property
    def ready(self) -> bool:
        """Serving, and every route running (what ``/readyz`` answers)."""
        return self._serving.is_set() and all(status.ready for status in self.status())

    async def _report(self, interval: float) -> None:
        """Log a status line per route every ``interval`` seconds."""
        loop = asyncio.get_running_loop()
        last = {s.name: (loop.time(), sum(s.settled.values())) for s in self.status()}
        while True:
            await asyncio.sleep(interval)  # a periodic report, not a synchronisation
            now = loop.time()
            for status in self.status():
                settled = sum(status.settled.values())
                then, before = last.get(status.name, (now, settled))
                rate = (settled - before) / (now - then) if now > then else 0.0
                last[status.name] = (now, settled)
                logger.info("%s", _status_line(status, rate))

    def _log_summary(self) -> None:
        for status in self.status():
            logger.info("%s", _status_line(status, None))

    def _exit_requested(self, exc: BaseException) -> None:
        """A handler raised SystemExit/KeyboardInterrupt: drain every route, then
        :meth:`serve` raises it (so the process exits with its code, drained)."""
        if self._exit is None:
            self._exit = exc
        self.stop()

    def stop(self, *, now: bool = False) -> None:
        """Start the graceful drain; with ``now``, cut in-flight handlers short.

        Called before :meth:`serve` got going (say, right after ``create_task(serve())``),
        it applies as soon as serve() starts, which then drains at once.
        """
        if not self._serving.is_set():
            self._stop_request = now or bool(self._stop_request)
        for d in self._dispatchers:
            d.stop(now=now)

    async def wait_started(self) -> None:
        """Wait until every route's provider has started (for tests and health checks).

        Raises the fatal error that ended :meth:`serve` if it ended first, or
        ``RuntimeError`` if it ended cleanly before every route started.
        """
        if not self._serving.is_set() and not self._ended.is_set():
            await _first(self._serving.wait(), self._ended.wait())
        if self._serving.is_set():
            started: asyncio.Future[Any] = asyncio.ensure_future(
                asyncio.gather(*(d.wait_started() for d in self._dispatchers))
            )
            if started in await _first(started, self._ended.wait()):
                started.result()
                return
        if self._fatal is not None:
            raise self._fatal
        raise RuntimeError("the manager stopped before its routes started")

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self.serve(), name="loafer:manager")
        await asyncio.sleep(0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        task, self._task = self._task, None
        if task is not None:
            await task


class Service(Protocol):
    """Something that runs alongside a manager's routes (see :attr:`Manager.services`).

    ``start`` is awaited when :meth:`Manager.serve` begins, before any route starts; an
    exception from it ends ``serve()`` with that error, as a fatal route error does
    (``ConfigurationError`` for a port in use). ``close`` is awaited after the drain
    (bounded: :data:`SERVICE_CLOSE_TIMEOUT` seconds each).
    """

    async def start(self) -> None:
        """Begin (bind a port, start a task)."""
        ...

    async def close(self) -> None:
        """End; called once after a successful start."""
        ...


SERVICE_CLOSE_TIMEOUT = 5.0


def handler_services(routes: Iterable[Route]) -> list[Any]:
    """The items of each route handler's ``loafer_services`` attribute (each once): what a
    handler needs started and closed with the manager, as the generic handlers'
    (:class:`~loafer_sqs.SQSHandler`) publisher."""
    found: list[Any] = []
    for route in routes:
        for service in getattr(route.handler, "loafer_services", None) or ():
            if not any(service is seen for seen in found):
                found.append(service)
    return found


async def _close_services(services: list[Service]) -> None:
    for service in reversed(services):
        try:
            async with asyncio.timeout(SERVICE_CLOSE_TIMEOUT):
                await service.close()
        except Exception:
            logger.exception("closing %r failed", service)


def _status_line(status: RouteStatus, rate: float | None) -> str:
    """``route 'x': running, 12.0 handled/s, 3 in flight, received 120, ACCEPT 110 ...``"""
    parts = [f"route {status.name!r}: {status.state.value}"]
    if status.failures:
        parts.append(f"after {status.failures} failures ({status.error})")
    elif status.error:
        parts.append(f"({status.error})")
    if rate is not None:
        parts.append(f"{rate:.1f} handled/s")
    parts.append(f"{status.in_flight} in flight")
    if status.stuck_handlers:
        parts.append(f"{status.stuck_handlers} stuck")
    parts.append(f"received {status.received}")
    parts.extend(f"{kind} {count}" for kind, count in status.settled.items() if count)
    if status.message_errors:
        parts.append(f"{status.message_errors} errors, last: {status.last_message_error}")
    return ", ".join(parts)


LEFTOVER_GRACE = 5.0
"""Seconds :meth:`Manager.run` gives the tasks still running after the drain (cancelled),
the async generators and the default executor to end, each."""


def _end_leftovers(loop: asyncio.AbstractEventLoop, grace: float) -> None:
    """What ``asyncio.run`` does before closing its loop, each step bounded by ``grace``."""
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.wait(tasks, timeout=grace))
        stuck = [task for task in tasks if not task.done()]
        if stuck:
            logger.warning(
                "%d tasks did not end when cancelled, left behind: %s",
                len(stuck),
                ", ".join(sorted(task.get_name() for task in stuck)[:10]),
            )
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                logger.error("a task ended with an error at exit", exc_info=task.exception())
    for step in (loop.shutdown_asyncgens(), loop.shutdown_default_executor()):
        try:
            loop.run_until_complete(asyncio.wait_for(step, grace))
        except TimeoutError:
            logger.warning("closing the event loop: a step did not end within %ss", grace)


async def _first(*aws: Any) -> set[asyncio.Future[Any]]:
    """Wait until the first of ``aws`` finishes; cancel the others; return the finished."""
    futures = [asyncio.ensure_future(aw) for aw in aws]
    try:
        done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        return done
    finally:
        losers = [fut for fut in futures if not fut.done()]
        for fut in losers:
            fut.cancel()
        if losers:  # retrieve their CancelledError (a gather would log it otherwise)
            await asyncio.wait(losers)
            for fut in losers:
                if not fut.cancelled():
                    fut.exception()


LoaferManager = Manager
"""Loafer 2.x's name for :class:`Manager`, kept for migrating code."""
