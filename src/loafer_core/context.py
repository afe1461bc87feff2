"""What a middleware, a forwarding step or an extension may use of the route it serves.

:class:`RouteContext` is the route as the steps around the handler see it: its name and
provider, its limits, and the two ways to answer a failed delivery the route's way
(counted, logged at its bounded rate, retried by its policy). :class:`~loafer_core.route.Route`
implements it; code below the route (``middleware``, ``forward``, ``idempotency``,
``ext.otel``) types against this protocol, so none of it imports the route.
"""

from __future__ import annotations

from typing import Any, Protocol

from loafer_core.outcome import Outcome
from loafer_core.provider import Delivery, Provider

__all__ = ["RouteContext"]


class RouteContext(Protocol):
    """The route a delivery belongs to, as middlewares and steps see it."""

    #: the route's name, for logs and metrics
    name: str
    #: where its deliveries come from
    provider: Provider
    #: raw message -> content and metadata (``None``: the raw message is the content)
    translator: Any
    #: seconds a handler may run (``None``: no limit)
    handler_timeout: float | None

    def failed(self, exc: BaseException, delivery: Delivery, message: str, *args: Any) -> Outcome:
        """An error of ``delivery`` met outside the handler: counted, logged
        (``message % args``, with ``exc``'s traceback) at the route's bounded rate, and
        answered with :meth:`retry_outcome`."""
        ...

    def retry_outcome(self, delivery: Delivery, delay: float | None = None) -> Outcome:
        """The RETRY of ``delivery`` as the route gives a failed one (its retry policy's
        delay, or a REJECT once ``max_attempts`` is reached); with ``delay``, a RETRY after
        that many seconds, never a REJECT."""
        ...
