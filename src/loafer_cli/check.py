"""``loafer check``: start every route's provider (connect, check the queue, read its
settings), run the capability checks, consume nothing, close."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from rich.table import Table

from loafer_core.errors import ConfigurationError
from loafer_core.provider import LeaseExtender, Support
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
    """Start the route's provider under ``timeout``, check capabilities and leases, close."""
    provider = route.provider
    problems: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            await provider.start(route.max_concurrency)
    except TimeoutError:
        problems.append(f"the provider did not start within {timeout:g}s")
    except ConfigurationError as exc:
        problems.append(str(exc))
    except Exception as exc:
        problems.append(f"the provider failed to start: {type(exc).__name__}: {exc}")
    else:
        try:
            route.check_capabilities(provider.capabilities)
        except ConfigurationError as exc:
            problems.append(str(exc))
        lease = lease_problem(route)
        if lease is not None:
            problems.append(lease)
    finally:
        try:
            async with asyncio.timeout(timeout):
                await provider.close()
        except Exception as exc:
            problems.append(f"closing the provider failed: {type(exc).__name__}: {exc}")
    return RouteCheck(route.name, _describe(route), tuple(problems))


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
