"""A kill switch: a route stops fetching while its handlers keep failing.

:class:`CircuitBreaker` is a middleware that also gates the route's fetching. It counts,
per route, the deliveries that failed (by default: the handler raised, or the outcome is
a RETRY) over the last ``window`` seconds. When at least ``min_calls`` were processed
in the window and the failed share reaches ``threshold``, the breaker **opens**:

- the route stops fetching (its state is ``paused`` in :meth:`Manager.status`, in the
  health endpoints' bodies and in the ``loafer_route_paused`` metric);
- deliveries already fetched and not yet begun are RELEASED (back to the broker at once,
  counting no attempt): not failed, not dead-lettered; handlers already running finish.

After ``cool_down`` seconds it is **half-open**: the route fetches again and lets
``probes`` deliveries through, one after another (the rest it fetches are released and
it pauses fetching while a probe runs). A probe that fails opens it again for another
``cool_down``; ``probes`` successes in a row close it and the route runs as before. Each
change is logged once (WARNING on opening, INFO on probing and closing).

::

    from loafer_core.breaker import CircuitBreaker

    breaker = CircuitBreaker(threshold=0.5, window=30, min_calls=20, cool_down=60)
    manager = Manager(routes, middleware=[breaker])  # each route has its own state

Give the breaker outside the middlewares whose outcome it should judge (first in the
list), and say what a failure is with ``failure=`` when the default does not fit (a
handler that REJECTs poison messages is not failing: those are not counted by default).
A paused route is still *ready* (``/readyz``): it holds back on purpose, and restarting
the process would not help.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from loafer_core.errors import ConfigurationError
from loafer_core.outcome import RELEASE, Outcome, OutcomeKind
from loafer_core.provider import Delivery

if TYPE_CHECKING:
    from loafer_core.context import RouteContext

__all__ = ["BreakerState", "CircuitBreaker", "handler_failed"]

logger = logging.getLogger("loafer_core.breaker")

#: How long fetching pauses at a time while a probe runs (the probe's end wakes nothing).
PROBE_POLL = 0.05


class BreakerState(StrEnum):
    """A route's breaker: ``closed`` (running), ``open`` (paused), ``half_open`` (probing)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def handler_failed(delivery: Delivery, outcome: Outcome) -> bool:
    """The default failure test: the handler (or translator) raised, or it is a RETRY."""
    return delivery.error is not None or outcome.kind is OutcomeKind.RETRY


@dataclass
class _Route:
    """One route's breaker: per-second buckets of (processed, failed) over the window."""

    buckets: deque[list[int]] = field(default_factory=deque)  # [second, processed, failed]
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0
    probing: int = 0
    probe_successes: int = 0

    def record(self, now: float, failed: bool, window: float) -> tuple[int, int]:
        second = int(now)
        buckets = self.buckets
        if buckets and buckets[-1][0] == second:
            bucket = buckets[-1]
        else:
            bucket = [second, 0, 0]
            buckets.append(bucket)
        bucket[1] += 1
        bucket[2] += failed
        oldest = second - math.ceil(window)
        while buckets and buckets[0][0] < oldest:
            buckets.popleft()
        return sum(b[1] for b in buckets), sum(b[2] for b in buckets)


class CircuitBreaker:
    """The kill switch middleware (see the module docstring); a
    :class:`~loafer_core.middleware.FetchGate`.

    - ``threshold``: the failed share (0 < threshold <= 1) that opens it;
    - ``window``: seconds of history the share is computed over;
    - ``min_calls``: deliveries the window must hold before it may open;
    - ``cool_down``: seconds open before probing;
    - ``probes``: successes in a row, while half-open, that close it;
    - ``failure``: ``(delivery, outcome) -> bool``, what counts as failed
      (:func:`handler_failed` by default);
    - ``on_change``: called with ``(route name, new state)`` on each change.
    """

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        window: float = 30.0,
        min_calls: int = 20,
        cool_down: float = 30.0,
        probes: int = 1,
        failure: Callable[[Delivery, Outcome], bool] = handler_failed,
        on_change: Callable[[str, BreakerState], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(threshold, int | float) or not 0 < threshold <= 1:
            raise ConfigurationError(
                f"CircuitBreaker(threshold=...): expected a share > 0 and <= 1, got {threshold!r}"
            )
        for label, value in (("window", window), ("cool_down", cool_down)):
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigurationError(
                    f"CircuitBreaker({label}=...): expected seconds > 0, got {value!r}"
                )
        for label, count in (("min_calls", min_calls), ("probes", probes)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ConfigurationError(
                    f"CircuitBreaker({label}=...): expected a whole number >= 1, got {count!r}"
                )
        if not callable(failure):
            raise ConfigurationError("CircuitBreaker(failure=...): expected a callable")
        self.threshold = float(threshold)
        self.window = float(window)
        self.min_calls = min_calls
        self.cool_down = float(cool_down)
        self.probes = probes
        self.failure = failure
        self.on_change = on_change
        self._clock = clock
        self._routes: dict[str, _Route] = {}

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(threshold={self.threshold:g}, window={self.window:g}, "
            f"min_calls={self.min_calls}, cool_down={self.cool_down:g}, probes={self.probes})"
        )

    def state(self, route: str) -> BreakerState:
        """The breaker's state for the route named ``route`` (``closed`` if unknown)."""
        st = self._routes.get(route)
        if st is None:
            return BreakerState.CLOSED
        self._tick(route, st, self._clock())
        return st.state

    def fetch_pause(self, route: str) -> float | None:
        """Seconds to hold the route's fetching: the rest of the cool-down while open, a
        short poll while a probe runs; ``None`` when closed (or a probe may be fetched)."""
        st = self._routes.get(route)
        if st is None or st.state is BreakerState.CLOSED:
            return None
        now = self._clock()
        self._tick(route, st, now)
        if st.state is BreakerState.OPEN:
            return max(PROBE_POLL, st.opened_at + self.cool_down - now)
        if st.state is BreakerState.HALF_OPEN and st.probing >= 1:
            return PROBE_POLL
        return None

    async def __call__(
        self,
        delivery: Delivery,
        route: RouteContext,
        call_next: Callable[[Delivery], Awaitable[Outcome]],
    ) -> Outcome:
        name = route.name
        st = self._routes.get(name)
        if st is None:
            st = self._routes[name] = _Route()
        if st.state is not BreakerState.CLOSED:
            self._tick(name, st, self._clock())
            if st.state is BreakerState.OPEN or st.probing >= 1:
                return RELEASE  # fetched before it opened (or beside the probe): give back
            return await self._probe(name, st, delivery, call_next)
        outcome = await call_next(delivery)
        failed = bool(self.failure(delivery, outcome))
        now = self._clock()
        processed, failures = st.record(now, failed, self.window)
        if (
            st.state is BreakerState.CLOSED
            and failed
            and processed >= self.min_calls
            and failures >= self.threshold * processed
        ):
            self._open(name, st, now, f"{failures} of the last {processed} deliveries failed")
        return outcome

    async def _probe(
        self,
        name: str,
        st: _Route,
        delivery: Delivery,
        call_next: Callable[[Delivery], Awaitable[Outcome]],
    ) -> Outcome:
        st.probing += 1
        try:
            outcome = await call_next(delivery)
        finally:
            st.probing -= 1
        if st.state is not BreakerState.HALF_OPEN:
            return outcome
        if self.failure(delivery, outcome):
            self._open(name, st, self._clock(), "a probe failed")
            return outcome
        st.probe_successes += 1
        if st.probe_successes >= self.probes:
            st.state = BreakerState.CLOSED
            st.buckets.clear()
            logger.info("route %r: circuit breaker closed: %d probes succeeded", name, self.probes)
            self._changed(name, st.state)
        return outcome

    def _tick(self, name: str, st: _Route, now: float) -> None:
        if st.state is BreakerState.OPEN and now >= st.opened_at + self.cool_down:
            st.state = BreakerState.HALF_OPEN
            st.probe_successes = 0
            logger.info("route %r: circuit breaker half-open: probing", name)
            self._changed(name, st.state)

    def _open(self, name: str, st: _Route, now: float, why: str) -> None:
        st.state = BreakerState.OPEN
        st.opened_at = now
        st.buckets.clear()
        logger.warning(
            "route %r: circuit breaker open (%s): fetching paused for %gs; messages already "
            "fetched are released",
            name,
            why,
            self.cool_down,
        )
        self._changed(name, st.state)

    def _changed(self, name: str, state: BreakerState) -> None:
        if self.on_change is not None:
            self.on_change(name, state)
