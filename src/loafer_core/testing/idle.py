"""Run routes on the embedded broker until their queues are idle, then inspect outcomes.

Example::

    broker = MemoryBroker()
    broker.publish("orders", b'{"id": 1}')
    report = await run_until_idle(Route(MemoryProvider(broker, "orders"), handle_order))
    assert len(report.accepted) == 1
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from loafer_core.manager import Manager
from loafer_core.memory import MemoryProvider, Settlement
from loafer_core.outcome import OutcomeKind
from loafer_core.route import Route

__all__ = ["Report", "run_until_idle"]


@dataclass
class Report:
    """What happened to each message during :func:`run_until_idle`, in order."""

    settlements: list[Settlement] = field(default_factory=list)

    def _of(self, kind: OutcomeKind) -> list[Settlement]:
        return [s for s in self.settlements if s.outcome.kind is kind]

    @property
    def accepted(self) -> list[Settlement]:
        """Settled with ACCEPT."""
        return self._of(OutcomeKind.ACCEPT)

    @property
    def retried(self) -> list[Settlement]:
        """Settled with RETRY (one entry per attempt)."""
        return self._of(OutcomeKind.RETRY)

    @property
    def rejected(self) -> list[Settlement]:
        """Settled with REJECT."""
        return self._of(OutcomeKind.REJECT)

    @property
    def released(self) -> list[Settlement]:
        """Settled with RELEASE."""
        return self._of(OutcomeKind.RELEASE)


async def run_until_idle(routes: Route | Iterable[Route], *, timeout: float = 10.0) -> Report:
    """Run ``routes`` (on :class:`MemoryProvider`) until every queue is idle; return a report.

    A queue is idle when nothing is ready, waiting for a delayed retry or in flight.
    Raises ``TimeoutError`` if that does not happen within ``timeout`` seconds (a handler
    that always retries, with no ``max_attempts``, never lets its queue go idle).
    """
    route_list = [routes] if isinstance(routes, Route) else list(routes)
    providers: list[MemoryProvider] = []
    for route in route_list:
        if not isinstance(route.provider, MemoryProvider):
            raise TypeError("run_until_idle needs routes on MemoryProvider")
        providers.append(route.provider)
    for p in providers:
        p.broker.keep_history()  # the report is read from it
    starts = {
        (id(p.broker), p.queue): p.broker.settled_total(p.queue)
        for p in providers
        if p.broker.has_queue(p.queue)
    }
    manager = Manager(route_list, shutdown_timeout=timeout)
    async with asyncio.timeout(timeout):
        async with manager:
            await manager.wait_started()
            # a handler may publish to another route's queue: wait until all are idle at once
            while not all(p.broker.is_idle(p.queue) for p in providers):
                for p in providers:
                    await p.broker.wait_idle(p.queue)
    report = Report()
    seen: set[tuple[int, str]] = set()
    for p in providers:
        key = (id(p.broker), p.queue)
        if key in seen:
            continue
        seen.add(key)
        new = p.broker.settled_total(p.queue) - starts.get(key, 0)
        report.settlements.extend(p.broker.settlements(p.queue)[-new:] if new else [])
    return report
