"""What each route is doing: its state and counters (:meth:`Manager.status`).

A route is, in order of its life:

- ``starting``: its provider is being started;
- ``running``: fetching and handling;
- ``backing_off``: starting or fetching failed ``failures`` times in a row; retried with
  backoff (``error`` says the last failure);
- ``paused``: a :class:`~loafer_core.middleware.FetchGate` (the circuit breaker) holds
  fetching; handlers in flight go on;
- ``stalled``: every sync handler thread is stuck in a call that overran
  ``handler_timeout``; nothing is fetched until one returns;
- ``draining``: stopping: no more fetching, in-flight handlers finishing;
- ``stopped``: drained and closed;
- ``failed``: stopped by a fatal error (``error``), e.g. a missing queue.

The counters are totals since the route started: deliveries received, settled by
outcome, and the errors of its messages (translator, handler, error handler), with the
last one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["RouteState", "RouteStatus"]


class RouteState(StrEnum):
    """The state of a route (see the module docstring)."""

    STARTING = "starting"
    RUNNING = "running"
    BACKING_OFF = "backing_off"
    STALLED = "stalled"
    PAUSED = "paused"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class RouteStatus:
    """One route's state and counters at one moment."""

    name: str
    state: RouteState
    #: consecutive start or fetch failures (backing_off), 0 otherwise
    failures: int = 0
    #: the failure that put the route in backing_off or failed
    error: str | None = None
    #: deliveries fetched and not yet settled
    in_flight: int = 0
    #: sync handler calls stuck past handler_timeout
    stuck_handlers: int = 0
    #: deliveries received since the route started
    received: int = 0
    #: settlements by outcome kind name (``ACCEPT``, ``RETRY``, ``REJECT``, ``RELEASE``)
    settled: Mapping[str, int] = field(default_factory=dict)
    #: errors of its messages (translator, handler, error handler)
    message_errors: int = 0
    #: the last of them, as ``"Type: text"``
    last_message_error: str | None = None
    #: failed fetches since the route started (each retried with backoff)
    fetch_failures: int = 0
    #: settlements given up after their retries (the broker delivers those again)
    settle_failures: int = 0

    @property
    def ready(self) -> bool:
        """Serving: running (or stalled, which is running with no free thread, or paused
        on purpose by a circuit breaker, which a restart would not help)."""
        return self.state in (RouteState.RUNNING, RouteState.STALLED, RouteState.PAUSED)

    def as_dict(self) -> dict[str, object]:
        """Plain data, for JSON."""
        return {
            "name": self.name,
            "state": self.state.value,
            "failures": self.failures,
            "error": self.error,
            "in_flight": self.in_flight,
            "stuck_handlers": self.stuck_handlers,
            "received": self.received,
            "settled": dict(self.settled),
            "message_errors": self.message_errors,
            "last_message_error": self.last_message_error,
            "fetch_failures": self.fetch_failures,
            "settle_failures": self.settle_failures,
        }
