"""loafer_core.ext.sentry: Loafer 2.x's Sentry error handler, against sentry-sdk's own
client with a transport that keeps the events it is given."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from loafer_core import ACCEPT, REJECT, RETRY, ConfigurationError, JSONTranslator, Route
from loafer_core.ext.sentry import MESSAGE_LIMIT, bounded, sentry_handler
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.outcome import OutcomeKind
from loafer_core.testing import run_until_idle

# without the extra (nox -s tests_core): skipped; test_plugins proves the extra is named
sentry_sdk = pytest.importorskip("sentry_sdk", reason="the extra sentry is not installed")
from sentry_sdk.envelope import Envelope  # noqa: E402
from sentry_sdk.transport import Transport  # noqa: E402


class Collected(Transport):
    """A sentry-sdk transport keeping each event instead of sending it."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        event = envelope.get_event()
        if event is not None:
            self.events.append(event)


@pytest.fixture
def sentry() -> Iterator[Collected]:
    transport = Collected()
    sentry_sdk.init(transport=transport, default_integrations=False)
    try:
        yield transport
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)


def exception_of(event: dict[str, Any]) -> tuple[str, str]:
    last = event["exception"]["values"][-1]
    return last["type"], last["value"]


def failing_once() -> Any:
    attempts: list[Any] = []

    async def handler(content: Any, metadata: Any) -> bool:
        attempts.append(content)
        if len(attempts) == 1:
            raise ValueError(f"bad order {content!r}")
        return True

    return handler


async def test_captures_the_error_with_the_message_and_retries_by_default(
    sentry: Collected, broker: MemoryBroker, provider: MemoryProvider
) -> None:
    broker.publish("q", b'{"id": 1}')
    route = Route(provider, failing_once(), error_handler=sentry_handler(), retry=None)

    report = await run_until_idle(route, timeout=10)

    assert [s.outcome for s in broker.settlements("q")] == [RETRY(), ACCEPT]
    assert [s.body for s in report.retried] == [b'{"id": 1}']
    [event] = sentry.events
    assert exception_of(event) == ("ValueError", "bad order b'{\"id\": 1}'")
    assert event["extra"]["message"] == '{"id": 1}'


async def test_loafer_2_shape_sdk_module_and_delete_message_accepts(
    sentry: Collected, broker: MemoryBroker, provider: MemoryProvider
) -> None:
    broker.publish("q", b"order-7")

    async def handler(content: Any, metadata: Any) -> bool:
        raise KeyError("customer")

    route = Route(provider, handler, error_handler=sentry_handler(sentry_sdk, True))

    report = await run_until_idle(route, timeout=10)

    assert [(s.outcome, s.body) for s in report.settlements] == [(ACCEPT, b"order-7")]
    [event] = sentry.events
    assert exception_of(event) == ("KeyError", "'customer'")
    assert event["extra"]["message"] == "order-7"


async def test_a_sync_route_handler(
    sentry: Collected, broker: MemoryBroker, provider: MemoryProvider
) -> None:
    broker.publish("q", "plain text")

    def handler(content: Any, metadata: Any) -> bool:
        raise RuntimeError("sync failure")

    route = Route(provider, handler, error_handler=sentry_handler(delete_message=True))

    report = await run_until_idle(route, timeout=10)

    assert [s.outcome for s in report.settlements] == [ACCEPT]
    [event] = sentry.events
    assert exception_of(event) == ("RuntimeError", "sync failure")
    assert event["extra"]["message"] == "plain text"


async def test_outcome_overrides_delete_message(
    sentry: Collected, broker: MemoryBroker, provider: MemoryProvider
) -> None:
    broker.publish("q", {"id": 3, "payload": b"\xff\x00"})

    async def handler(content: Any, metadata: Any) -> bool:
        raise ValueError("poison")

    error_handler = sentry_handler(sentry_sdk, True, outcome=REJECT("reported to Sentry"))
    report = await run_until_idle(Route(provider, handler, error_handler=error_handler))

    assert [s.outcome for s in report.settlements] == [REJECT("reported to Sentry")]
    [event] = sentry.events
    assert event["extra"]["message"] == {"id": 3, "payload": "\ufffd\x00"}


async def test_a_large_message_is_cut(
    sentry: Collected, broker: MemoryBroker, provider: MemoryProvider
) -> None:
    broker.publish("q", b"x" * 10_000)

    async def handler(content: Any, metadata: Any) -> bool:
        raise ValueError("too big")

    report = await run_until_idle(
        Route(provider, handler, error_handler=sentry_handler(delete_message=True))
    )

    assert len(report.accepted) == 1
    [event] = sentry.events
    assert event["extra"]["message"] == "x" * MESSAGE_LIMIT + "... (5904 more bytes)"


async def test_a_translator_error_is_captured(
    sentry: Collected, broker: MemoryBroker, provider: MemoryProvider
) -> None:
    broker.publish("q", b"not json")

    async def handler(content: Any, metadata: Any) -> bool:
        raise AssertionError("never called")

    route = Route(
        provider,
        handler,
        translator=JSONTranslator(),
        error_handler=sentry_handler(delete_message=True),
    )

    report = await run_until_idle(route, timeout=10)

    assert [s.outcome for s in report.settlements] == [ACCEPT]
    [event] = sentry.events
    assert event["exception"]["values"][-1]["type"] != "AssertionError"
    assert event["extra"]["message"] == "not json"


async def test_when_capturing_fails_the_message_is_retried(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    class Unreachable:
        def capture_exception(self, error: Any = None, /, **scope_kwargs: Any) -> Any:
            raise OSError("sentry is down")

    broker.publish("q", b"m")

    async def handler(content: Any, metadata: Any) -> bool:
        raise ValueError("handler failed")

    route = Route(
        provider,
        handler,
        error_handler=sentry_handler(Unreachable(), True),
        max_attempts=2,  # a RETRY on the last attempt is a REJECT
        retry=None,
    )

    await run_until_idle(route, timeout=10)

    assert [s.outcome.kind for s in broker.settlements("q")] == [
        OutcomeKind.RETRY,
        OutcomeKind.REJECT,
    ]
    assert "the error handler failed" in caplog.text
    assert "sentry is down" in caplog.text


def test_called_directly_in_either_shape(sentry: Collected) -> None:
    handler = sentry_handler(sentry_sdk, outcome=ACCEPT, message_limit=4)
    try:
        raise ValueError("test")
    except ValueError as exc:
        assert handler(sys.exc_info(), "ping-message") == ACCEPT  # Loafer 2.x's call
        assert handler(type(exc), exc, b"ping-message") == ACCEPT
    assert [exception_of(e) for e in sentry.events] == [("ValueError", "test")] * 2
    assert [e["extra"]["message"] for e in sentry.events] == [
        "ping... (8 more characters)",
        "ping... (8 more bytes)",
    ]


def test_a_scope_captures_too(sentry: Collected) -> None:
    handler = sentry_handler(sentry_sdk.get_isolation_scope(), True)
    exc = ValueError("scoped")
    assert handler(ValueError, exc, "m") == ACCEPT
    assert [(exception_of(e), e["extra"]["message"]) for e in sentry.events] == [
        (("ValueError", "scoped"), "m")
    ]


def test_default_outcome_is_retry_without_delay() -> None:
    assert sentry_handler(sentry_sdk).outcome == RETRY()
    assert sentry_handler(sentry_sdk, delete_message=True).outcome.kind is OutcomeKind.ACCEPT


def test_bounded_walks_mappings_and_lists() -> None:
    value = {("a", 1): [b"abcdef", "abcdef", 7, None, 1.5, True], "deep": [[[[[["x"]]]]]]}
    assert bounded(value, 3) == {
        "('a... (5 more characters)": [
            "abc... (3 more bytes)",
            "abc... (3 more characters)",
            7,
            None,
            1.5,
            True,
        ],
        "dee... (1 more characters)": [[[["[['... (4 more characters)"]]]],
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sdk_or_hub": object()}, r"expected the sentry_sdk module .* raven Client"),
        ({"delete_message": "yes"}, r"delete_message=...\): expected True or False"),
        ({"outcome": True}, r"outcome=...\): expected an Outcome"),
        ({"message_limit": 0}, r"message_limit=...\): expected an int >= 1"),
    ],
)
def test_wrong_arguments_are_refused(kwargs: dict[str, Any], match: str) -> None:
    kwargs.setdefault("sdk_or_hub", sentry_sdk)
    with pytest.raises(ConfigurationError, match=match):
        sentry_handler(**kwargs)


def test_with_the_logging_integration_one_event_per_error() -> None:
    """The route logs each handler failure at ERROR with its exception: with Sentry's
    logging integration turning ERROR records into events (sentry-sdk 2.x's default;
    3.x makes no events from logs unless asked), the error still reaches Sentry once.

    The integration is asked for explicitly, so the test means the same on sentry-sdk 2.x
    and 3.x, and it checks the events sent, not the SDK's defaults."""
    # a fresh interpreter: the default integrations (threading, stdlib, ...) patch
    # libraries for good, which this test process must not keep
    code = textwrap.dedent(
        """
        import asyncio
        import logging
        import sentry_sdk
        from sentry_sdk.integrations.logging import LoggingIntegration
        from sentry_sdk.transport import Transport
        from loafer_core import Route
        from loafer_core.ext.sentry import sentry_handler
        from loafer_core.memory import HISTORY, MemoryBroker, MemoryProvider
        from loafer_core.testing import run_until_idle

        events = []
        class Collected(Transport):
            def capture_envelope(self, envelope):
                if envelope.get_event() is not None:
                    events.append(envelope.get_event())
        sentry_sdk.init(
            transport=Collected(),
            auto_enabling_integrations=False,
            integrations=[LoggingIntegration(event_level=logging.ERROR)],
        )
        # the integration does make events of ERROR records: one, here
        logging.getLogger("probe").error("probe")
        print("probe events", len(events))
        events.clear()
        broker = MemoryBroker(history=HISTORY)
        broker.publish_many("q", [b"a", b"b"])
        def handler(content, metadata):
            raise ValueError(content)
        route = Route(
            MemoryProvider(broker, "q"), handler, error_handler=sentry_handler(sentry_sdk, True)
        )
        report = asyncio.run(run_until_idle(route, timeout=10))
        print("accepted", len(report.accepted))
        print("events", sorted(e["extra"]["message"] for e in events))
        print("exceptions", sorted(e["exception"]["values"][-1]["value"] for e in events))
        """
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "probe events 1\n" in out, out
    assert "accepted 2\nevents ['a', 'b']\nexceptions [\"b'a'\", \"b'b'\"]" in out, out


async def test_olist_loafer_7_awaits_it_inside_an_async_error_handler(
    sentry: Collected, broker: MemoryBroker, provider: MemoryProvider
) -> None:
    """olist-loafer 7.0's ``sentry_handler`` returned an async function: ``await sentry(...);
    return True`` deletes the message after one report (not a retry, and a report, per
    attempt)."""
    broker.publish_many("q", [b"a", b"b"])
    sentry_call = sentry_handler(sentry_sdk)  # delete_message=False: it says RETRY

    async def handler(content: Any, metadata: Any) -> bool:
        raise ValueError(content)

    async def error_handler(exc_type: Any, exc: BaseException, message: Any) -> bool:
        await sentry_call(exc_type, exc, message)
        return True

    route = Route(provider, handler, error_handler=error_handler, max_attempts=3, retry=None)
    report = await run_until_idle(route, timeout=10)

    assert [s.outcome for s in report.settlements] == [ACCEPT, ACCEPT]
    assert sorted(e["extra"]["message"] for e in sentry.events) == ["a", "b"]


async def test_olist_loafer_7_returns_the_awaited_outcome(
    sentry: Collected, broker: MemoryBroker, provider: MemoryProvider
) -> None:
    broker.publish("q", b"m")
    deleting = sentry_handler(sentry_sdk, delete_message=True)
    retrying = sentry_handler(sentry_sdk)
    seen: list[Any] = []

    async def handler(content: Any, metadata: Any) -> bool:
        raise ValueError("once")

    async def error_handler(exc_type: Any, exc: BaseException, message: Any) -> Any:
        seen.append(await retrying(exc_type, exc, message))
        return await deleting(exc_type, exc, message)

    route = Route(provider, handler, error_handler=error_handler, max_attempts=3, retry=None)
    report = await run_until_idle(route, timeout=10)

    assert [s.outcome for s in report.settlements] == [ACCEPT]
    assert seen == [RETRY()]
    assert len(sentry.events) == 2  # one per call, each captured once


async def test_olist_loafer_6_checks_its_truth_in_a_sync_error_handler(
    sentry: Collected, broker: MemoryBroker, provider: MemoryProvider
) -> None:
    broker.publish_many("q", [b"keep", b"drop"])
    reporters = {
        b"keep": sentry_handler(sentry_sdk),
        b"drop": sentry_handler(sentry_sdk, delete_message=True),
    }
    truths: dict[bytes, bool] = {}

    def handler(content: Any, metadata: Any) -> bool:
        raise ValueError(content)

    def error_handler(exc_type: Any, exc: BaseException, message: Any) -> Any:
        result = reporters[message](exc_type, exc, message)
        truths[message] = bool(result)
        return result  # the report itself: the route settles with its outcome

    route = Route(provider, handler, error_handler=error_handler, max_attempts=1, retry=None)
    report = await run_until_idle(route, timeout=10)

    assert truths == {b"keep": False, b"drop": True}
    assert {s.body: s.outcome for s in report.settlements} == {
        b"keep": REJECT("max_attempts (1) reached"),  # its RETRY, on the last attempt
        b"drop": ACCEPT,
    }
    assert sorted(e["extra"]["message"] for e in sentry.events) == ["drop", "keep"]


async def test_the_report_is_captured_at_call_time_and_equal_to_its_outcome(
    sentry: Collected,
) -> None:
    handler = sentry_handler(sentry_sdk, outcome=REJECT("reported"))
    result = handler(ValueError, ValueError("x"), "m")
    assert len(sentry.events) == 1  # before (and without) any await
    assert result == REJECT("reported")
    assert result != ACCEPT
    assert not result and result == False  # noqa: E712 - 6.x compared it to a bool
    assert await result == REJECT("reported")
    assert await result == REJECT("reported")  # awaitable again, nothing captured again
    assert len(sentry.events) == 1
    assert repr(result) == "SentryReport(REJECT('reported'))"
    assert sentry_handler(sentry_sdk, True)(KeyError, KeyError("k"), "m") == True  # noqa: E712
