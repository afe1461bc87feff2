"""``loafer check``: verify every route's provider (connect, check the queue, read its
settings, disconnect: :class:`~loafer_core.provider.Verifiable`; a provider without
``verify`` is started and closed), run the capability checks, consume nothing."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from loafer_core.errors import ConfigurationError
from loafer_core.provider import LeaseExtender, Support, Verifiable
from loafer_core.route import Route

__all__ = ["RouteCheck", "check_route", "check_routes", "results_table"]


@dataclass(frozen=True)
class RouteCheck:
    """The outcome of checking one route: ``problems`` is empty when it is fine."""

    name: str
    provider: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when the route has no problem."""
        return not self.problems


def _describe(route: Route) -> str:
    provider = route.provider
    describe = getattr(provider, "describe", None)
    if callable(describe):
        try:
            return str(describe())
        except Exception:
            pass
    return type(provider).__name__


def lease_problem(route: Route) -> str | None:
    """A handler timeout longer than the provider's lease (visibility timeout) while
    nothing extends the lease: the message would be redelivered while its handler runs."""
    provider = route.provider
    caps = provider.capabilities
    extends = caps.lease_extension is not Support.NONE and isinstance(provider, LeaseExtender)
    duration = getattr(provider, "lease_duration", None)
    if extends or not isinstance(duration, int | float) or not math.isfinite(duration):
        return None
    if duration <= 0:
        return None
    timeout = route.handler_timeout
    if timeout is not None and timeout > duration:
        return (
            f"handler_timeout {timeout:g}s is longer than the lease (visibility timeout) "
            f"{duration:g}s, with no lease extension: the message is redelivered while its "
            "handler still runs"
        )
    return None


async def check_route(route: Route, timeout: float) -> RouteCheck:
    """Verify the route's provider under ``timeout`` (without ``verify``: start it under
    ``timeout``, then close it under ``timeout``), then check capabilities and leases."""
    provider = route.provider
    problems: list[str] = []
    if isinstance(provider, Verifiable):
        if await _bounded(provider.verify(), timeout, problems, "verify"):
            problems.extend(_needs(route))
    else:
        if await _bounded(provider.start(route.max_concurrency), timeout, problems, "start"):
            problems.extend(_needs(route))  # while started: what it read is known
        await _bounded(provider.close(), timeout, problems, "close")
    problems.extend(await _check_publishers(route, timeout))
    problems.extend(await _check_middleware(route, timeout))
    return RouteCheck(route.name, _describe(route), tuple(problems))


async def _check_publishers(route: Route, timeout: float) -> list[str]:
    """Open and close each of the route's ``publish_to`` publishers (``verify()`` where a
    publisher has it), each under ``timeout``: refused credentials, a missing exchange or
    an unreachable broker is a problem named after the target (an outbox relay's
    destinations, say)."""
    targets = route.publish_to
    if targets is None:
        return []
    problems: list[str] = []
    for name, publisher in targets.publishers.items():
        found: list[str] = []
        verify = getattr(publisher, "verify", None)
        start, close = getattr(publisher, "start", None), getattr(publisher, "close", None)
        if callable(verify):
            await _bounded(verify(), timeout, found, "verify")
        elif callable(start) and callable(close):
            await _bounded(start(), timeout, found, "start")
            await _bounded(close(), timeout, found, "close")
        problems += [
            f"publish_to {name!r}: {p.replace('the provider', 'the publisher')}" for p in found
        ]
    return problems


async def _check_middleware(route: Route, timeout: float) -> list[str]:
    """Each of the route's middlewares that has ``verify()`` (an inbox checking its table),
    verified under ``timeout``, then closed."""
    problems: list[str] = []
    for middleware in route.middleware:
        verify, close = getattr(middleware, "verify", None), getattr(middleware, "close", None)
        if not callable(verify):
            continue
        found: list[str] = []
        await _bounded(verify(), timeout, found, "verify")
        if callable(close):
            await _bounded(close(), timeout, found, "close")
        name = type(middleware).__name__
        problems += [f"middleware {name}: {p.replace('the provider', 'it')}" for p in found]
    return problems


def _needs(route: Route) -> list[str]:
    """The route's needs the provider's capabilities (and lease) do not meet."""
    problems: list[str] = []
    try:
        route.check_capabilities(route.provider.capabilities)
    except ConfigurationError as exc:
        problems.append(str(exc))
    lease = lease_problem(route)
    if lease is not None:
        problems.append(lease)
    return problems


async def _bounded(
    step: Coroutine[Any, Any, None], timeout: float, problems: list[str], what: str
) -> bool:
    """Run ``step`` under ``timeout``; on failure add its problem and return False."""
    try:
        async with asyncio.timeout(timeout):
            await step
    except TimeoutError:
        problems.append(f"the provider did not {what} within {timeout:g}s")
    except ConfigurationError as exc:
        problems.append(str(exc))
    except Exception as exc:
        problems.append(f"the provider failed to {what}: {type(exc).__name__}: {exc}")
    else:
        return True
    return False


async def check_routes(routes: list[Route], timeout: float) -> list[RouteCheck]:
    """Check every route (concurrently); one result per route, in order."""
    return list(await asyncio.gather(*(check_route(r, timeout) for r in routes)))


def results_table(results: list[RouteCheck]) -> Table:
    """One row per route: name, provider, OK or its problems."""
    table = Table(title="loafer check", show_lines=True)
    table.add_column("route")
    table.add_column("provider")
    table.add_column("result")
    for result in results:
        status = "OK" if result.ok else "FAIL: " + "; ".join(result.problems)
        table.add_row(result.name, result.provider, status)
    return table
