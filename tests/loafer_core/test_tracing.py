"""OpenTelemetry tracing (loafer_core.ext.otel) on the memory broker, with the SDK's
in-memory exporter: consumer spans, producer spans, the context carried between them,
outcomes and exceptions on the span; what it costs when unused."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from loafer_core import REJECT, JSONTranslator, Manager, Route
from loafer_core.ext.otel import Tracing, publish_span, tracing
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.provider import Delivery

pytestmark = pytest.mark.memory


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider


def by_name(spans: Any) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


async def run(manager: Manager, broker: MemoryBroker, *queues: str) -> None:
    async with manager:
        await manager.wait_started()
        for queue in queues:
            await broker.wait_idle(queue, timeout=10)


async def test_a_consumer_span_per_delivery_with_the_messaging_attributes(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    broker = MemoryBroker()
    broker.publish("orders", b'{"id": 1}', message_id="m-1")
    broker.publish("orders", b'{"id": 2}', message_id="m-2")
    route = Route(
        MemoryProvider(broker, "orders", wait=0.1),
        lambda content, metadata: True,
        translator=JSONTranslator(),
        name="orders-route",
    )
    await run(Manager([route], middleware=[tracing(tracer_provider=provider)]), broker, "orders")

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["process orders", "process orders"]
    for span, mid in zip(spans, ("m-1", "m-2"), strict=True):
        assert span.kind is SpanKind.CONSUMER
        assert span.parent is None  # no context in the message: a trace of its own
        assert dict(span.attributes or {}) == {
            "messaging.system": "memory",
            "messaging.destination.name": "orders",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.message.id": mid,
            "loafer.route": "orders-route",
            "loafer.attempt": 1,
            "loafer.outcome": "accept",
        }
        assert span.status.status_code is StatusCode.UNSET
    assert spans[0].context.trace_id != spans[1].context.trace_id


async def test_the_handlers_exception_and_the_outcome_are_recorded_on_the_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    broker = MemoryBroker()
    broker.publish("q", b'{"fail": true}')
    broker.publish("q", b'{"reject": true}')
    calls: list[Any] = []

    async def handler(content: Any, metadata: Any) -> Any:
        calls.append(content)
        if content.get("reject"):
            return REJECT("not for us")
        if len(calls) == 1:
            raise ValueError("boom")
        return True

    route = Route(MemoryProvider(broker, "q", wait=0.1), handler, translator=JSONTranslator())
    await run(Manager([route], middleware=[tracing(tracer_provider=provider)]), broker, "q")

    spans = exporter.get_finished_spans()
    outcomes = [s.attributes["loafer.outcome"] for s in spans]  # type: ignore[index]
    assert sorted(outcomes) == ["accept", "reject", "retry"]
    [failed] = [s for s in spans if s.attributes["loafer.outcome"] == "retry"]  # type: ignore[index]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ValueError: boom"
    assert failed.attributes["error.type"] == "ValueError"  # type: ignore[index]
    [event] = failed.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"  # type: ignore[index]
    assert event.attributes["exception.message"] == "boom"  # type: ignore[index]
    [rejected] = [s for s in spans if s.attributes["loafer.outcome"] == "reject"]  # type: ignore[index]
    assert rejected.attributes["loafer.outcome.reason"] == "not for us"  # type: ignore[index]
    assert rejected.status.status_code is StatusCode.UNSET  # an outcome, not an error
    [retried] = [s for s in spans if s.attributes["loafer.outcome"] == "accept"]  # type: ignore[index]
    assert retried.attributes["loafer.attempt"] == 2  # type: ignore[index]


async def test_a_publish_in_a_handler_is_the_consumer_spans_child_and_carries_the_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    broker = MemoryBroker(history=10)
    broker.declare("second")
    onward = MemoryProvider(broker, "second")
    tr = tracing(tracer_provider=provider)

    async def first(content: Any, metadata: Any) -> bool:
        await onward.publish(b'{"step": 2}', headers={"kept": "yes"}, message_id="m-2")
        return True

    received: list[Any] = []

    async def second(content: Any, metadata: Any) -> bool:
        received.append(metadata["headers"])
        return True

    with tr.scope():  # a publish from outside any handler, with this tracer
        await MemoryProvider(broker, "first").publish(b'{"step": 1}', message_id="m-1")
    routes = [
        Route(MemoryProvider(broker, "first", wait=0.1), first, translator=JSONTranslator()),
        Route(MemoryProvider(broker, "second", wait=0.1), second, translator=JSONTranslator()),
    ]
    await run(Manager(routes, middleware=[tr]), broker, "first", "second")

    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"publish first", "process first", "publish second", "process second"}
    chain = [
        spans[n] for n in ("publish first", "process first", "publish second", "process second")
    ]
    assert len({s.context.trace_id for s in chain}) == 1
    assert chain[0].parent is None
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None and child.parent.span_id == parent.context.span_id
    assert [s.kind for s in chain] == [
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
    ]
    assert dict(chain[2].attributes or {}) == {
        "messaging.system": "memory",
        "messaging.destination.name": "second",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.message.id": "m-2",
    }
    # the W3C context travelled in the headers, next to the publisher's own
    [headers] = received
    assert headers["kept"] == "yes"
    _version, trace_id, span_id, _flags = headers["traceparent"].split("-")
    assert int(trace_id, 16) == chain[2].context.trace_id
    assert int(span_id, 16) == chain[2].context.span_id
    # the producer span lasted the publish (the memory broker has it when publish
    # returns): it ended before the consumer span of its message began
    assert chain[2].end_time is not None and chain[3].start_time is not None
    assert chain[2].end_time <= chain[3].start_time


async def test_a_failed_publish_records_its_exception_on_the_producer_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tr = Tracing(tracer_provider=provider)
    with tr.scope(), pytest.raises(RuntimeError), publish_span("memory", "q", None):
        raise RuntimeError("broker said no")
    [span] = exporter.get_finished_spans()
    assert span.kind is SpanKind.PRODUCER and span.name == "publish q"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "RuntimeError"  # type: ignore[index]
    assert [e.name for e in span.events] == ["exception"]


async def test_bytes_headers_are_read_and_other_headers_alone_start_a_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tr = Tracing(tracer_provider=provider)
    route = Route(MemoryProvider(MemoryBroker(), "q"), lambda c, m: True)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    parent = tr.parent_of(
        Delivery(raw=b"{}", metadata={"headers": {"traceparent": traceparent.encode()}}), route
    )
    context = trace.get_current_span(parent).get_span_context()
    assert context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert context.span_id == 0xB7AD6B7169203331 and context.is_remote
    for headers in ({"other": "x"}, {}, {"traceparent": "garbage"}):
        parent = tr.parent_of(Delivery(raw=b"{}", metadata={"headers": headers}), route)
        assert not trace.get_current_span(parent).get_span_context().is_valid


def test_publishers_trace_with_the_global_tracer_provider_once_it_is_set() -> None:
    code = textwrap.dedent(
        """
        import asyncio
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from loafer_core.memory import MemoryBroker, MemoryProvider

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)  # the one line of a traced application

        broker = MemoryBroker()
        asyncio.run(MemoryProvider(broker, "q").publish(b"{}"))
        [span] = exporter.get_finished_spans()
        [message] = broker._queues["q"].ready
        print(span.name, span.kind.name, message.headers["traceparent"].split("-")[2]
              == format(span.context.span_id, "016x"))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "publish q PRODUCER True"


def test_nothing_imports_opentelemetry_until_tracing_is_used() -> None:
    code = textwrap.dedent(
        """
        import asyncio, sys
        import loafer_core
        from loafer_core import Manager, Route
        from loafer_core.memory import MemoryBroker, MemoryProvider
        import loafer_core.ext.otel
        broker = MemoryBroker()
        asyncio.run(MemoryProvider(broker, "q").publish(b"x", headers={"a": "b"}))
        Manager([Route(MemoryProvider(broker, "q"), lambda c, m: True)]).run(forever=False)
        assert broker.is_idle("q")
        print("LOADED", sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "LOADED []" in out


async def test_without_opentelemetry_a_publish_passes_its_headers_as_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "opentelemetry.trace")
    headers = {"a": "b"}
    with publish_span("memory", "q", headers) as sent:
        assert sent is headers
    broker = MemoryBroker()
    await MemoryProvider(broker, "q").publish(b"x", headers=headers)
    [message] = broker._queues["q"].ready
    assert message.headers == {"a": "b"}


async def test_handlers_in_threads_publish_in_the_consumer_spans_context(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    broker = MemoryBroker()
    broker.publish("q", b'{"a": 1}')
    other = MemoryBroker()

    def sync_publish(content: Any, metadata: Any) -> bool:
        with publish_span("memory", "next", None) as headers:
            other.publish("next", b"{}", headers=headers)
        return True

    route = Route(MemoryProvider(broker, "q", wait=0.1), sync_publish, translator=JSONTranslator())
    await run(Manager([route], middleware=[tracing(tracer_provider=provider)]), broker, "q")
    spans = by_name(exporter.get_finished_spans())
    assert spans["publish next"].parent is not None
    assert spans["publish next"].parent.span_id == spans["process q"].context.span_id


def test_the_system_and_destination_of_providers_of_other_packages() -> None:
    """From the public :class:`Describable` when the provider has it (not from its
    ``describe()`` text nor private parts); else the module and a queue/address."""
    from loafer_core.ext.otel import _described, _destination, _system
    from loafer_core.provider import Description

    class Stream:
        def description(self) -> Description:
            return Description(kind="acme", system="acme_streams", destination="jobs")

        def describe(self) -> str:
            return "something else entirely"

    class Elsewhere:
        address = "topic://jobs"

    class Broken:
        queue = "q"

        def description(self) -> Description:
            raise RuntimeError("no")

    Stream.__module__ = "acme_plugin.provider"
    Elsewhere.__module__ = "acme_bus.provider"
    stream = Stream()
    described = _described(stream)
    assert (_system(stream, described), _destination(stream, described)) == (
        "acme_streams",
        "jobs",
    )
    assert (_system(Elsewhere()), _destination(Elsewhere())) == ("acme_bus", "topic://jobs")
    broken = Broken()
    assert _described(broken) is None and _destination(broken, None) == "q"
    assert _system(MemoryProvider(MemoryBroker(), "q")) == "memory"


def test_with_the_api_and_no_sdk_a_publish_passes_on_the_context_it_is_given_only() -> None:
    code = textwrap.dedent(
        """
        import asyncio
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
        from loafer_core.memory import MemoryBroker, MemoryProvider

        broker = MemoryBroker()
        provider = MemoryProvider(broker, "q")
        asyncio.run(provider.publish(b"untraced"))
        remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
        with trace.use_span(NonRecordingSpan(remote)):
            asyncio.run(provider.publish(b"in a trace"))
        for message in broker._queues["q"].ready:
            print(message.body.decode(), message.headers.get("traceparent"))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.splitlines() == [
        "untraced None",
        f"in a trace 00-{0xABC:032x}-{0xDEF:016x}-01",
    ]


# -- review: extraction that fails, spans always ended, bounded span sizes ------------------


class BrokenPropagator:
    """A propagator whose extraction raises (a bug, or a header it chokes on)."""

    fields = frozenset({"traceparent"})

    def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
        raise ValueError("cannot parse this traceparent")

    def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
        return None


def settled(broker: MemoryBroker, queue: str = "q") -> list[str]:
    return [s.outcome.kind.value for s in broker.settlements(queue)]


async def test_a_context_that_cannot_be_extracted_starts_a_trace_and_the_message_is_handled(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    broker = MemoryBroker(history=10)
    broker.publish("q", b"a", headers={"traceparent": "00-zz"})
    route = Route(MemoryProvider(broker, "q", wait=0.1), lambda c, m: True)
    middleware = [tracing(tracer_provider=provider, propagator=BrokenPropagator())]
    await run(Manager([route], middleware=middleware), broker, "q")
    assert settled(broker) == ["accept"]  # before: an internal error, retried for ever
    [span] = exporter.get_finished_spans()
    assert span.parent is None


def test_headers_that_are_not_a_mapping_start_a_trace(provider: TracerProvider) -> None:
    tr = Tracing(tracer_provider=provider)
    route = Route(MemoryProvider(MemoryBroker(), "q"), lambda c, m: True)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for headers in ([("traceparent", traceparent)], "traceparent", 3):
        parent = tr.parent_of(Delivery(raw=b"{}", metadata={"headers": headers}), route)
        assert not trace.get_current_span(parent).get_span_context().is_valid


async def test_the_span_is_ended_when_a_middleware_inside_returns_no_outcome(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    broker = MemoryBroker()
    broker.publish("q", b"a")

    async def forgets_to_return(delivery: Any, route: Any, call_next: Any) -> Any:
        await call_next(delivery)  # no return: a bug of this middleware

    route = Route(
        MemoryProvider(broker, "q", wait=0.1),
        lambda c, m: True,
        middleware=[forgets_to_return],
        max_attempts=1,
    )
    manager = Manager([route], middleware=[tracing(tracer_provider=provider)])
    async with manager:
        await manager.wait_started()
        await broker.wait_idle("q", timeout=10)
    [span] = exporter.get_finished_spans()  # before: never ended, so never exported
    assert span.status.status_code is StatusCode.ERROR


async def test_a_huge_exception_message_is_cut_on_the_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    broker = MemoryBroker()
    broker.publish("q", b"a")

    async def handler(content: Any, metadata: Any) -> bool:
        raise ValueError("body was: " + "x" * 1_000_000)  # a message quoting the body

    route = Route(MemoryProvider(broker, "q", wait=0.1), handler, max_attempts=1)
    await run(Manager([route], middleware=[tracing(tracer_provider=provider)]), broker, "q")
    [span] = exporter.get_finished_spans()
    [event] = span.events
    attributes = dict(event.attributes or {})
    assert str(attributes["exception.message"]).startswith("body was: xxx")
    assert attributes["exception.type"] == "ValueError"
    assert "handler" in str(attributes["exception.stacktrace"])  # the frames are kept
    size = sum(len(str(value)) for value in attributes.values())
    assert size < 20_000, size
    assert len(span.status.description or "") <= 256


async def test_a_producer_spans_huge_exception_message_is_cut(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tr = Tracing(tracer_provider=provider)
    with tr.scope(), pytest.raises(RuntimeError), publish_span("memory", "q", None):
        raise RuntimeError("refused: " + "y" * 1_000_000)
    [span] = exporter.get_finished_spans()
    [event] = span.events
    size = sum(len(str(value)) for value in dict(event.attributes or {}).values())
    assert size < 20_000, size


async def test_a_handler_cut_by_a_forced_shutdown_ends_its_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    broker = MemoryBroker()
    broker.publish("q", b"a")
    started = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        started.set()
        await asyncio.Event().wait()
        return True

    route = Route(MemoryProvider(broker, "q", wait=0.1), handler)
    manager = Manager([route], middleware=[tracing(tracer_provider=provider)], shutdown_timeout=0.1)
    async with asyncio.timeout(10):
        async with manager:
            await asyncio.wait_for(started.wait(), 5)
    [span] = exporter.get_finished_spans()
    assert span.attributes["error.type"] == "CancelledError"  # type: ignore[index]
    assert trace.get_current_span() is trace.INVALID_SPAN  # no context left behind
