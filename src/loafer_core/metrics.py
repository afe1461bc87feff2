"""Prometheus metrics for a :class:`~loafer_core.manager.Manager` (extra ``prometheus``).

Built on the two public seams of the core, nothing else:

- a middleware (:attr:`PrometheusMetrics.middleware`, made the manager's outermost by
  :meth:`PrometheusMetrics.install`) counts what the route decided for each delivery
  (by outcome), the translator's and handler's errors (``delivery.error``) and times the
  processing, in plain per-route tallies;
- :meth:`Manager.status` gives what a middleware cannot see: deliveries received, in
  flight, failed fetches and failed settlements.

Both go to the Prometheus metrics when ``/metrics`` is scraped, and every second (for
other exporters of :attr:`PrometheusMetrics.registry`, and for ``--workers``);
providers implementing :class:`~loafer_core.provider.Backlog` report their queue's
backlog, read every ``backlog_interval`` seconds while the manager serves. See
``docs/observability.md``.

Embedding::

    metrics = PrometheusMetrics(port=9100)   # port=None: no server, use .registry
    metrics.install(manager)                 # before manager.run() / serve()
    manager.run()                            # /metrics served while it runs

or ``serve_metrics(manager, 9100)``. Each :class:`PrometheusMetrics` has its own
:class:`~prometheus_client.CollectorRegistry` (never the global one); importing this
module registers nothing.

Several processes (``loafer run --workers N``): with ``PROMETHEUS_MULTIPROC_DIR`` set
before the workers start, every worker writes its numbers there (prometheus-client's
multiprocess mode) and one process serves their sum with :func:`serve_multiprocess`.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import re
from bisect import bisect_left
from time import perf_counter
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from loafer_core import _http
from loafer_core.errors import ConfigurationError, TranslationError
from loafer_core.middleware import Process
from loafer_core.outcome import Outcome, OutcomeKind
from loafer_core.plugins import provider_kind
from loafer_core.provider import Backlog, Delivery, Reconnects
from loafer_core.status import RouteState, RouteStatus

if TYPE_CHECKING:
    from loafer_core.context import RouteContext
    from loafer_core.manager import Manager
    from loafer_core.route import Route

__all__ = ["PrometheusMetrics", "provider_kind", "serve_metrics", "serve_multiprocess"]

logger = logging.getLogger("loafer_core.metrics")

#: Seconds between two backlog reads, by default.
BACKLOG_INTERVAL = 15.0
#: Seconds one provider's backlog read may take.
BACKLOG_TIMEOUT = 5.0
#: Seconds between two reads of the manager's status (besides each scrape).
STATUS_INTERVAL = 1.0
#: Handler duration buckets, in seconds.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

_LABELS = ("route", "provider")


class PrometheusMetrics:
    """Prometheus metrics of one manager's routes, in their own registry.

    Arguments:
        port: serve ``GET /metrics`` on this port while the manager serves (``0``: a
            free one, see :attr:`port`); ``None``: no server (expose :attr:`registry`
            yourself).
        host: the address to listen on.
        backlog_interval: seconds between two reads of each queue's backlog.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "0.0.0.0",
        backlog_interval: float = BACKLOG_INTERVAL,
    ) -> None:
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535
        ):
            raise ConfigurationError(
                f"PrometheusMetrics(port=...): expected a port number 0-65535 or None, got {port!r}"
            )
        if isinstance(backlog_interval, bool) or not isinstance(backlog_interval, int | float):
            raise ConfigurationError(
                f"PrometheusMetrics(backlog_interval=...): expected seconds, got "
                f"{backlog_interval!r}"
            )
        if not backlog_interval > 0:
            raise ConfigurationError(
                f"PrometheusMetrics(backlog_interval=...): expected seconds > 0, got "
                f"{backlog_interval!r}"
            )
        self.port = port
        self.host = host
        self.backlog_interval = float(backlog_interval)
        #: the registry every metric of this instance is in
        self.registry = CollectorRegistry(auto_describe=True)
        self._create_metrics(self.registry)
        self._manager: Manager | None = None
        self._tallies: dict[RouteContext, _Tally] = {}
        self._seen: dict[tuple[str, str], int] = {}  # (route, counter) -> last total
        self._server: asyncio.Server | None = None
        self._task: asyncio.Task[None] | None = None

    def _create_metrics(self, r: CollectorRegistry) -> None:
        """The metrics, each in registry ``r``."""
        self.received = Counter(
            "loafer_messages_received", "Deliveries fetched from the queue.", _LABELS, registry=r
        )
        self.settled = Counter(
            "loafer_messages_settled",
            "Deliveries processed, by the outcome decided (accept, retry, reject, release).",
            (*_LABELS, "outcome"),
            registry=r,
        )
        self.handler_errors = Counter(
            "loafer_handler_errors",
            "Exceptions raised by handlers, by exception type.",
            (*_LABELS, "exception"),
            registry=r,
        )
        self.translation_errors = Counter(
            "loafer_translation_errors",
            "Messages the translator could not read (TranslationError).",
            _LABELS,
            registry=r,
        )
        self.duration = Histogram(
            "loafer_handler_duration_seconds",
            "Seconds processing one delivery took (translator, handler, error handler).",
            _LABELS,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "loafer_messages_in_flight",
            "Deliveries fetched and not yet settled.",
            _LABELS,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.fetch_errors = Counter(
            "loafer_fetch_errors",
            "Failed fetches (connection lost, broker errors; each retried with backoff).",
            _LABELS,
            registry=r,
        )
        self.settle_failures = Counter(
            "loafer_settle_failures",
            "Settlements given up after their retries (the broker redelivers those).",
            _LABELS,
            registry=r,
        )
        self.reconnects = Counter(
            "loafer_reconnects",
            "Times the provider got its broker connection back after losing it.",
            _LABELS,
            registry=r,
        )
        self.paused = Gauge(
            "loafer_route_paused",
            "1 while a circuit breaker holds the route's fetching (state paused), else 0.",
            _LABELS,
            registry=r,
            multiprocess_mode="livemax",
        )
        self.backlog = Gauge(
            "loafer_queue_backlog",
            "Messages waiting in the queue, as the broker tells (approximate).",
            _LABELS,
            registry=r,
            multiprocess_mode="livemostrecent",
        )

    def __repr__(self) -> str:
        return f"<PrometheusMetrics port={self.port!r}>"

    # -- the middleware ---------------------------------------------------------------------

    async def middleware(
        self, delivery: Delivery, route: RouteContext, call_next: Process
    ) -> Outcome:
        """Counts each delivery's outcome and error, times its processing.

        It only adds to plain per-route tallies (a few integer additions: the metrics
        cost next to nothing per message); they are moved to the Prometheus metrics by
        :meth:`read_status` (on each scrape, every second, at the end)."""
        began = perf_counter()
        outcome = await call_next(delivery)  # raises only for an internal error: not timed
        elapsed = perf_counter() - began
        try:
            tally = self._tallies[route]
        except KeyError:
            tally = self._tallies[route] = _Tally(route)
        tally.buckets[bisect_left(DURATION_BUCKETS, elapsed)] += 1
        tally.seconds += elapsed
        tally.outcomes[outcome.kind._value_] += 1  # a str: hashed faster than an Enum
        if delivery.error is not None:
            tally.count_error(delivery.error)
        return outcome

    def _flush(self, tally: _Tally) -> None:
        """Move a route's tallies to the Prometheus metrics (and zero them)."""
        labels = (tally.route.name, provider_kind(tally.route.provider))
        if any(tally.buckets):
            child: Any = self.duration.labels(*labels)
            # prometheus-client's Histogram keeps one (non-cumulative) value per bucket
            # and the sum: adding the tallied counts there is what observe() does one by
            # one (it costs microseconds per call)
            for i, count in enumerate(tally.buckets):
                if count:
                    child._buckets[i].inc(count)
                    tally.buckets[i] = 0
            child._sum.inc(tally.seconds)
            tally.seconds = 0.0
        for kind, count in tally.outcomes.items():
            if count:
                self.settled.labels(*labels, kind).inc(count)
                tally.outcomes[kind] = 0
        for name, count in tally.errors.items():
            self.handler_errors.labels(*labels, name).inc(count)
        tally.errors.clear()
        if tally.translation_errors:
            self.translation_errors.labels(*labels).inc(tally.translation_errors)
            tally.translation_errors = 0

    # -- wiring -----------------------------------------------------------------------------

    def install(self, manager: Manager) -> PrometheusMetrics:
        """Measure ``manager``'s routes: add :attr:`middleware` as its outermost, read its
        status, and serve (if ``port``) and read backlogs for as long as it serves. Call
        before the manager serves; returns ``self``."""
        if self._manager is not None:
            raise ConfigurationError("PrometheusMetrics.install: already installed on a manager")
        self._manager = manager
        manager.middleware.insert(0, self.middleware)
        for route in manager.routes:  # every series from the start, at 0
            labels = (route.name, provider_kind(route.provider))
            for counter in (self.received, self.fetch_errors, self.settle_failures):
                counter.labels(*labels)
            if isinstance(route.provider, Reconnects):
                self.reconnects.labels(*labels)
            self.translation_errors.labels(*labels)
            self.in_flight.labels(*labels)
        manager.services.append(self)  # started and closed with the manager's serve()
        return self

    async def start(self) -> None:
        """Bind the ``/metrics`` server (if ``port``) and start reading status and
        backlogs (done by :meth:`install` when the manager serves)."""
        if self.port is not None and self._server is None:
            self._server = await _http.listen(self._respond, self.host, self.port, "metrics")
            sockets = self._server.sockets
            if sockets:
                self.port = int(sockets[0].getsockname()[1])
            logger.info("Prometheus metrics on http://%s:%d/metrics", self.host, self.port)
        if self._task is None:
            self._task = asyncio.create_task(self._refresh(), name="loafer:metrics")

    async def close(self) -> None:
        """Stop serving and reading; the last status is recorded first."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.read_status()
        server, self._server = self._server, None
        await _http.stop(server)

    # -- reading the manager ----------------------------------------------------------------

    def read_status(self) -> None:
        """Record the middleware's tallies and the manager's status now (received, in
        flight, fetch errors, settle failures). Call it on the manager's event loop (as
        the ``/metrics`` endpoint and the periodic reader do)."""
        manager = self._manager
        if manager is None:
            return
        providers = {route.name: route.provider for route in manager.routes}
        for tally in self._tallies.values():
            self._flush(tally)
        for status in manager.status():
            self._record(status, providers.get(status.name))

    def _record(self, status: RouteStatus, provider: object) -> None:
        labels = (status.name, provider_kind(provider) if provider is not None else "unknown")
        totals = [
            ("received", self.received, status.received),
            ("fetch", self.fetch_errors, status.fetch_failures),
            ("settle", self.settle_failures, status.settle_failures),
        ]
        if isinstance(provider, Reconnects):
            totals.append(("reconnects", self.reconnects, provider.reconnects))
        for name, counter, total in totals:
            last = self._seen.get((status.name, name), 0)
            grown = total - last if total >= last else total  # a new run starts at 0
            if grown:
                counter.labels(*labels).inc(grown)
            self._seen[(status.name, name)] = total
        self.in_flight.labels(*labels).set(status.in_flight)
        self.paused.labels(*labels).set(1 if status.state is RouteState.PAUSED else 0)

    async def read_backlogs(self) -> None:
        """Read each route's queue backlog now (providers implementing
        :class:`~loafer_core.provider.Backlog`), each bounded by ``BACKLOG_TIMEOUT``."""
        manager = self._manager
        if manager is None:
            return
        routes = [r for r in manager.routes if isinstance(r.provider, Backlog)]
        values = await asyncio.gather(*(_backlog_of(r) for r in routes))
        for route, value in zip(routes, values, strict=True):
            if value is not None:
                self.backlog.labels(route.name, provider_kind(route.provider)).set(value)

    async def _refresh(self) -> None:
        manager = self._manager
        assert manager is not None
        with contextlib.suppress(Exception):  # a failed start is the manager's to report
            await manager.wait_started()
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            try:
                self.read_status()
                if loop.time() >= due:
                    await self.read_backlogs()
                    due = loop.time() + self.backlog_interval
            except Exception:  # a bug here must not end the sampling
                logger.exception("reading the metrics failed")
            await asyncio.sleep(STATUS_INTERVAL)  # periodic sampling, not a synchronisation

    # -- the /metrics endpoint --------------------------------------------------------------

    def exposition(self) -> bytes:
        """The text exposition of :attr:`registry`, with the status read now."""
        self.read_status()
        return generate_latest(self.registry)

    def _respond(self, path: str) -> _http.Answer:
        if path in ("/metrics", "/"):
            return 200, CONTENT_TYPE_LATEST, self.exposition()
        return 404, "text/plain", b"see /metrics\n"


class _Tally:
    """What the middleware saw of one route since the last flush."""

    __slots__ = ("buckets", "errors", "outcomes", "route", "seconds", "translation_errors")

    def __init__(self, route: RouteContext) -> None:
        self.route = route
        self.outcomes: dict[str, int] = {kind.value: 0 for kind in OutcomeKind}
        self.errors: dict[str, int] = {}
        self.translation_errors = 0
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # the last: +Inf
        self.seconds = 0.0

    def count_error(self, error: BaseException) -> None:
        if isinstance(error, TranslationError):
            self.translation_errors += 1
        else:
            name = type(error).__name__
            self.errors[name] = self.errors.get(name, 0) + 1


async def _backlog_of(route: Route) -> int | None:
    provider: Any = route.provider
    try:
        async with asyncio.timeout(BACKLOG_TIMEOUT):
            value = await provider.backlog()
    except Exception as exc:  # never let one queue's answer stop the others
        logger.debug("route %r: backlog not read: %s", route.name, type(exc).__name__)
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def serve_metrics(manager: Manager, port: int, host: str = "0.0.0.0") -> PrometheusMetrics:
    """Measure ``manager`` and serve ``GET /metrics`` on ``host:port`` while it serves:
    ``PrometheusMetrics(port=port, host=host).install(manager)``."""
    return PrometheusMetrics(port=port, host=host).install(manager)


# -- several processes -----------------------------------------------------------------------

_LIVE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


class _LiveCollector(MultiProcessCollector):
    """prometheus-client's multiprocess collector that first forgets the live gauges
    (in flight, backlog) of processes that ended, killed ones included."""

    def collect(self) -> Any:
        path = self._path
        pids = set()
        for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
            found = _LIVE_FILE.search(os.path.basename(name))
            if found:
                pids.add(int(found.group(1)))
        for pid in pids:
            if not _alive(pid):
                mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        return super().collect()  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve_multiprocess(port: int, host: str = "0.0.0.0", path: str | None = None) -> Any:
    """Serve on ``host:port`` (in a thread) the sum of what the processes writing to
    ``path`` (default: ``$PROMETHEUS_MULTIPROC_DIR``) recorded; returns the server
    (``shutdown()`` it). Counters and the histogram are summed, in flight summed over
    live processes, the backlog the most recent reading."""
    from prometheus_client import start_http_server

    directory = path or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        raise ConfigurationError("serve_multiprocess: no path and no PROMETHEUS_MULTIPROC_DIR")
    registry = CollectorRegistry()
    _LiveCollector(registry, directory)  # type: ignore[no-untyped-call]
    try:
        server, _thread = start_http_server(port, host, registry)
    except OSError as exc:
        raise ConfigurationError(
            f"metrics endpoint: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "choose another metrics port"
        ) from None
    logger.info("Prometheus metrics of every worker on http://%s:%d/metrics", host, port)
    return server
