"""Several handlers on one route: by discriminator (header or field), by predicate, first
match wins, each typed, unmatched messages rejected (or as configured)."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from loafer_core import (
    ACCEPT,
    ConfigurationError,
    Handlers,
    JSONTranslator,
    Route,
    field,
    header,
    on,
)
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.outcome import OutcomeKind
from loafer_core.testing import run_until_idle

pytestmark = pytest.mark.memory


class Created(pydantic.BaseModel):
    id: int


class Cancelled(pydantic.BaseModel):
    id: int
    reason: str


async def test_messages_go_to_the_handler_of_their_type_header_and_are_typed() -> None:
    broker = MemoryBroker()
    got: list[tuple[str, Any]] = []
    handlers = Handlers(discriminator=header("type"))

    @handlers.on("order.created")
    async def created(order: Created, metadata: Any) -> None:
        got.append(("created", order))

    route = Route(MemoryProvider(broker, "q"), handlers, translator=JSONTranslator())

    @route.on("order.cancelled")  # registered on the route too
    def cancelled(order: Cancelled, metadata: Any) -> None:  # a sync one
        got.append(("cancelled", order))

    broker.publish("q", b'{"id": 1}', headers={"type": "order.created"})
    broker.publish("q", b'{"id": 2, "reason": "late"}', headers={"type": "order.cancelled"})
    broker.publish("q", b'{"id": 3}', headers={"type": "order.cancelled"})  # invalid for it
    broker.publish("q", b'{"id": 4}', headers={"type": "order.shipped"})  # no handler
    report = await run_until_idle(route, timeout=10)
    assert sorted(got, key=lambda g: g[1].id) == [
        ("created", Created(id=1)),
        ("cancelled", Cancelled(id=2, reason="late")),
    ]
    reasons = sorted(s.outcome.reason or "" for s in report.rejected)
    assert reasons == [
        "content is not a valid Cancelled: reason: Field required",
        "no handler takes this message (discriminator 'order.shipped')",
    ]


async def test_a_body_field_and_predicates_first_match_wins_in_the_order_given() -> None:
    broker = MemoryBroker()
    got: list[str] = []

    def record(name: str) -> Any:
        async def handler(content: Any, metadata: Any) -> None:
            got.append(f"{name}:{content['n']}")

        return handler

    handlers = Handlers(
        [
            on(when=lambda c, m: c["n"] > 10, handler=record("big")),
            on("a", record("a")),
            on(when=lambda c, m: True, handler=record("rest")),
        ],
        discriminator=field("kind"),
        unmatched=ACCEPT,
    )
    route = Route(MemoryProvider(broker, "q"), handlers, translator=JSONTranslator())
    for body in (b'{"kind": "a", "n": 1}', b'{"kind": "a", "n": 20}', b'{"kind": "b", "n": 2}'):
        broker.publish("q", body)
    report = await run_until_idle(route, timeout=10)
    assert sorted(got) == ["a:1", "big:20", "rest:2"]
    assert all(s.outcome.kind is OutcomeKind.ACCEPT for s in report.settlements)


def test_bad_set_ups_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="needs a discriminator"):
        Handlers([on("x", lambda c, m: True)])
    with pytest.raises(ConfigurationError, match="exactly one of them"):
        on("x", lambda c, m: True, when=lambda c, m: True)
    with pytest.raises(ConfigurationError, match="two handlers for key 'x'"):
        Handlers([on("x", print), on("x", print)], discriminator=header("type"))
    with pytest.raises(ConfigurationError, match="must accept"):
        Handlers([on("x", lambda only: True)], discriminator=header("type"))
    route = Route(MemoryProvider(MemoryBroker(), "q"), lambda c, m: True)
    with pytest.raises(ConfigurationError, match="needs a route built with"):
        route.on("x")


def test_the_old_module_name_still_imports_with_a_deprecation_warning() -> None:
    import importlib
    import sys

    import loafer_core.handlers

    sys.modules.pop("loafer_core.dispatch", None)
    with pytest.warns(DeprecationWarning, match="loafer_core.dispatch is now loafer_core.handlers"):
        old = importlib.import_module("loafer_core.dispatch")
    assert old.Handlers is loafer_core.handlers.Handlers
