"""Middleware: code wrapped around the processing of every delivery of a route.

A middleware is an async callable ``(delivery, route, call_next) -> Outcome``.
``call_next(delivery)`` runs the rest of the chain, and finally the route itself
(translator, handler, error handler), and returns the outcome the delivery will be
settled with; the middleware returns that outcome, or another one. It sees:

- the delivery: ``raw``, ``metadata``, ``attempt``, ``message_id``;
- the route: its ``name``, ``provider`` and settings;
- the outcome that ``call_next`` returned;
- the exception the translator or handler raised, if any, as ``delivery.error`` once
  ``call_next`` returned (the error handler has already turned it into the outcome).

It may time the handler (around ``call_next``), change the outcome, or not call
``call_next`` at all (a duplicate it has seen: return ``ACCEPT``). An exception raised by
a middleware itself (or a result that is not an ``Outcome``) is an error of the message:
counted in the route's ``message_errors``, logged at the route's bounded rate, and the
delivery RETRIED with the route's retry policy, REJECTED past its ``max_attempts``.
A middleware may also raise a message signal (``DeleteMessage``, ``RejectMessage``,
``RetryMessage``) to settle the delivery with its outcome, as a handler may; the route
has already turned the handler's own signals into outcomes, so a middleware's ``except
Exception`` around ``call_next`` never sees them (they are ``BaseException`` subclasses).

A middleware that changes the outcome overrides what the route decided, guarantees
included: the route RETRIES a message whose forwarded publish was not confirmed (see
:mod:`loafer_core.forward`), and a middleware turning that RETRY into ACCEPT loses it.

Middlewares are given per route (``Route(middleware=[...])``) and for every route of a
manager (``Manager(routes, middleware=[...])``); the manager's wrap the route's, and
the first of a list is the outermost. A route without middleware runs with no wrapper
at all: the chain costs nothing unless used (with middlewares: one call per middleware
and one guard per delivery).

Example, a timer::

    async def timed(delivery, route, call_next):
        began = time.perf_counter()
        outcome = await call_next(delivery)
        log.info("%s: %s in %.3fs", route.name, outcome, time.perf_counter() - began)
        return outcome
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from loafer_core._handler import really_cancelled
from loafer_core._strings import refuse_string
from loafer_core.errors import ConfigurationError, MessageSignal
from loafer_core.outcome import Outcome
from loafer_core.provider import Delivery

if TYPE_CHECKING:
    from loafer_core.context import RouteContext

__all__ = [
    "FetchGate",
    "Middleware",
    "Process",
    "chain",
    "check_middleware",
    "fetch_gates",
    "middleware_services",
]

Process = Callable[[Delivery], Awaitable[Outcome]]
"""The processing of one delivery: the route's, or the rest of a middleware chain."""


class Middleware(Protocol):
    """``async (delivery, route, call_next) -> Outcome`` (see the module docstring)."""

    def __call__(
        self, delivery: Delivery, route: RouteContext, call_next: Process
    ) -> Awaitable[Outcome]: ...


@runtime_checkable
class FetchGate(Protocol):
    """A middleware that may also hold its route's fetching (the circuit breaker).

    The dispatcher asks ``fetch_pause(route_name)`` before each fetch: ``None`` to fetch
    now, or for how many seconds to hold fetching (the route's state is ``paused``
    meanwhile; it asks again after). Called on the hot path: keep it cheap.
    """

    def fetch_pause(self, route: str) -> float | None: ...


def fetch_gates(middlewares: Iterable[object]) -> list[Callable[[str], float | None]]:
    """The ``fetch_pause`` of each middleware that is a :class:`FetchGate`."""
    return [m.fetch_pause for m in middlewares if isinstance(m, FetchGate)]


def check_middleware(owner: str, middleware: object) -> list[Middleware]:
    """The middleware list given to ``owner``, or ConfigurationError naming what is wrong."""
    if middleware is None:
        return []
    refuse_string(f"{owner}(middleware=...)", middleware, "a list of middleware objects")
    if callable(middleware):
        raise ConfigurationError(
            f"{owner}(middleware=...): expected a list of middlewares, got one "
            f"{type(middleware).__name__}; wrap it in a list"
        )
    try:
        items: list[Middleware] = list(middleware)  # type: ignore[call-overload]
    except TypeError:
        raise ConfigurationError(
            f"{owner}(middleware=...): expected a list of middlewares, got "
            f"{type(middleware).__name__}"
        ) from None
    for i, item in enumerate(items):
        refuse_string(
            f"{owner}(middleware=[...]): item {i}", item, "the middleware object", call="(...)"
        )
        if not callable(item):
            raise ConfigurationError(
                f"{owner}(middleware=...): item {i} is a {type(item).__name__}, not an async "
                "callable (delivery, route, call_next)"
            )
    return items


def middleware_services(middlewares: Iterable[object]) -> list[Any]:
    """What the middlewares need started and closed with the manager: the items of each
    one's ``services`` attribute (an :class:`~loafer_core.idempotency.Idempotency`'s
    Redis store, say), each once. The manager adds those it was not given in
    ``Manager.services`` already."""
    found: list[Any] = []
    for middleware in middlewares:
        for service in getattr(middleware, "services", None) or ():
            if not any(service is seen for seen in found):
                found.append(service)
    return found


def chain(route: RouteContext, middlewares: Sequence[Middleware], process: Process) -> Process:
    """``process`` wrapped in ``middlewares`` (the first outermost) and a guard turning a
    middleware's error into the route's RETRY; ``process`` itself when there are none."""
    if not middlewares:
        return process
    for middleware in reversed(middlewares):
        process = _bind(middleware, route, process)
    return _guard(route, process)


def _guard(route: RouteContext, process: Process) -> Process:
    async def guarded(delivery: Delivery) -> Outcome:
        try:
            outcome = await process(delivery)
        except (KeyboardInterrupt, SystemExit):
            raise  # a request to stop: the dispatcher's to handle
        except MessageSignal as signal:  # a middleware chose the outcome, as a handler may
            try:
                return signal.outcome()
            except Exception as exc:  # a signal subclass that cannot say its outcome
                return route.failed(
                    exc,
                    delivery,
                    "route %r: a middleware's signal failed on message %s; it will be retried",
                    route.name,
                    delivery.message_id,
                )
        except asyncio.CancelledError as exc:
            if really_cancelled():
                raise  # the shutdown
            # a middleware awaited something cancelled by someone else: it failed
            return route.failed(
                exc,
                delivery,
                "route %r: a middleware failed on message %s; it will be retried",
                route.name,
                delivery.message_id,
            )
        except Exception as exc:
            return route.failed(
                exc,
                delivery,
                "route %r: a middleware failed on message %s; it will be retried",
                route.name,
                delivery.message_id,
            )
        if not isinstance(outcome, Outcome):
            return route.failed(
                TypeError(f"a middleware returned {type(outcome).__name__}, not an Outcome"),
                delivery,
                "route %r: a middleware returned %s, not an Outcome, for message %s; it "
                "will be retried",
                route.name,
                type(outcome).__name__,
                delivery.message_id,
            )
        return outcome

    return guarded


def _bind(middleware: Middleware, route: RouteContext, call_next: Process) -> Process:
    # A plain function returning the middleware's awaitable, not a coroutine awaiting it:
    # one coroutine fewer per middleware and delivery.
    def step(delivery: Delivery) -> Awaitable[Outcome]:
        return middleware(delivery, route, call_next)

    return step
