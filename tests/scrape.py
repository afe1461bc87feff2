"""Scraping a real Prometheus endpoint in tests: GET /metrics over HTTP, parsed."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape_now(port: int, host: str = "127.0.0.1") -> Samples:
    """Every sample of ``http://host:port/metrics``, by (name, labels)."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    """:func:`scrape_now` off the event loop (the endpoint may be served by it)."""
    return await asyncio.wait_for(asyncio.to_thread(scrape_now, port, host), 15)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample ``name`` with exactly ``labels``, or None."""
    return samples.get((name, frozenset(labels.items())))


class Settled:
    """A route middleware (inside the metrics one) that sets :attr:`done` once ``total``
    deliveries have been processed."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.seen = 0
        self.done = asyncio.Event()

    async def __call__(self, delivery: Any, route: Any, call_next: Any) -> Any:
        outcome = await call_next(delivery)
        self.seen += 1
        if self.seen >= self.total:
            self.done.set()
        return outcome


#: Bodies of the mixed scenario: 3 accepted, 1 failing every attempt, 1 rejected by
#: the handler, 1 that is not JSON. With ``max_attempts=2``: 8 deliveries, settled
#: accept 3, retry 2, reject 3; ValueError 2, translation errors 2.
MIXED = [b'{"kind": "ok"}'] * 3 + [b'{"kind": "boom"}', b'{"kind": "reject"}', b"not json"]
MIXED_DELIVERIES = 8


async def mixed_handler(content: Any, metadata: Any) -> bool:
    """The handler of :data:`MIXED`."""
    from loafer_core import RejectMessage

    if content["kind"] == "boom":
        raise ValueError("boom")
    if content["kind"] == "reject":
        raise RejectMessage("poison")
    return True


def check_mixed(samples: Samples, route: str, provider: str) -> None:
    """The values :data:`MIXED` leaves."""
    labels = {"route": route, "provider": provider}
    settled = "loafer_messages_settled_total"
    assert value(samples, "loafer_messages_received_total", **labels) == MIXED_DELIVERIES
    assert value(samples, settled, **labels, outcome="accept") == 3
    assert value(samples, settled, **labels, outcome="retry") == 2
    assert value(samples, settled, **labels, outcome="reject") == 3
    assert value(samples, "loafer_handler_errors_total", **labels, exception="ValueError") == 2
    assert value(samples, "loafer_translation_errors_total", **labels) == 2
    count = "loafer_handler_duration_seconds_count"
    assert value(samples, count, **labels) == MIXED_DELIVERIES
    assert value(samples, "loafer_fetch_errors_total", **labels) == 0
    assert value(samples, "loafer_settle_failures_total", **labels) == 0
