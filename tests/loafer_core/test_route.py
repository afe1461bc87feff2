from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
from typing import Any

import pytest

from loafer_core import (
    ACCEPT,
    REJECT,
    RELEASE,
    RETRY,
    ConfigurationError,
    DeleteMessage,
    JSONTranslator,
    Outcome,
    RejectMessage,
    RetryMessage,
    RetryPolicy,
    Route,
)
from loafer_core.memory import MemoryProvider
from loafer_core.provider import Capabilities, Delivery
from loafer_core.translator import PassThroughTranslator


def delivery(raw: Any = b'{"a": 1}', attempt: int | None = 1) -> Delivery:
    return Delivery(raw=raw, body=raw, message_id="m-1", metadata={"headers": {}}, attempt=attempt)


async def ok(content: Any, metadata: Any) -> bool:
    return True


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_concurrency": "10"}, "max_concurrency"),
        ({"max_concurrency": True}, "max_concurrency"),
        ({"handler_timeout": 0}, "handler_timeout"),
        ({"handler_timeout": float("nan")}, "handler_timeout"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 1.5}, "max_attempts"),
        ({"translator": object()}, "translator"),
        ({"error_handler": 42}, "error_handler"),
        ({"retry": 5}, "retry"),
        ({"name": 3}, "name"),
    ],
)
def test_nonsense_is_refused_naming_the_argument(
    provider: MemoryProvider, kwargs: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        Route(provider, ok, **kwargs)


def test_missing_handler_and_wrong_provider(provider: MemoryProvider) -> None:
    with pytest.raises(ConfigurationError, match="handler"):
        Route(provider)
    with pytest.raises(ConfigurationError, match="handler"):
        Route(provider, "not callable")
    with pytest.raises(ConfigurationError, match="provider"):
        Route(object(), ok)  # type: ignore[arg-type]


def test_classes_and_wrong_signatures_are_refused_at_construction(
    provider: MemoryProvider,
) -> None:
    class Handler:
        def handle(self, content: Any, metadata: Any) -> bool:
            return True

    class OneArgHandler:
        def handle(self, content: Any) -> bool:
            return True

    def one_arg(content: Any) -> bool:
        return True

    def no_args() -> bool:
        return True

    def three(exc_type: Any, exc: Any, message: Any) -> bool:
        return True

    with pytest.raises(ConfigurationError, match=r"translator=.*class JSONTranslator"):
        Route(provider, ok, translator=JSONTranslator)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"handler=.*class Handler"):
        Route(provider, Handler)
    with pytest.raises(ConfigurationError, match=r"provider=.*class MemoryProvider"):
        Route(MemoryProvider, ok)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"handler=.*one_arg must accept \(content, meta"):
        Route(provider, one_arg)
    with pytest.raises(ConfigurationError, match=r"handler=.*OneArgHandler.handle must accept"):
        Route(provider, OneArgHandler())
    with pytest.raises(ConfigurationError, match=r"error_handler=.*no_args must accept"):
        Route(provider, ok, error_handler=no_args)
    # what can take the arguments is accepted: defaults, *args, partials, builtins
    Route(provider, Handler(), error_handler=three)
    Route(provider, lambda *args: True, error_handler=lambda *a, **k: None)
    Route(provider, lambda content, metadata, extra=None: True)
    Route(provider, print)


async def test_shapes_that_work_are_accepted(provider: MemoryProvider) -> None:
    def adapter(fn: Any) -> Any:  # a decorator adapting a one-argument function
        @functools.wraps(fn)
        async def wrapper(content: Any, metadata: Any) -> Any:
            return await fn(content)

        return wrapper

    @adapter
    async def only_content(content: Any) -> bool:
        return True

    class StaticTranslator:
        @staticmethod
        def translate(raw: Any) -> dict[str, Any]:
            return {"content": raw, "metadata": {}}

    class ClassHandler:
        @classmethod
        async def handle(cls, content: Any, metadata: Any) -> bool:
            return True

    route = Route(provider, only_content)  # the wrapper is what gets called
    assert await route.process(delivery()) == ACCEPT
    route = Route(provider, ClassHandler, translator=StaticTranslator)
    assert await route.process(delivery()) == ACCEPT


async def test_a_loafer_2_error_handler_taking_exc_info_and_message_works(
    provider: MemoryProvider,
) -> None:
    seen: list[Any] = []

    def loafer_style(exc_info: Any, message: Any) -> bool:  # as Loafer 2.x's code called it
        seen.append((exc_info, message))
        return True

    async def handler(content: Any, metadata: Any) -> bool:
        raise KeyError("boom")

    route = Route(provider, handler, error_handler=loafer_style)
    assert await route.process(delivery(b"raw")) == ACCEPT
    [(exc_info, message)] = seen
    assert exc_info[0] is KeyError and isinstance(exc_info[1], KeyError)
    assert exc_info[2] is exc_info[1].__traceback__ and message == b"raw"


def test_translator_and_message_translator_are_one_thing(provider: MemoryProvider) -> None:
    t = JSONTranslator()
    assert Route(provider, ok, message_translator=t).translator is t
    assert Route(provider, ok, translator=None).translator is None
    assert isinstance(Route(provider, ok).translator, PassThroughTranslator)
    with pytest.raises(ConfigurationError, match="not both"):
        Route(provider, ok, translator=t, message_translator=t)


def test_capability_checks(provider: MemoryProvider) -> None:
    none = Capabilities()
    with pytest.raises(ConfigurationError, match="max_attempts"):
        Route(provider, ok, max_attempts=3).check_capabilities(none)
    with pytest.raises(ConfigurationError, match="delayed retries"):
        Route(provider, ok, retry=RetryPolicy(initial=1)).check_capabilities(none)
    limited = Capabilities(delayed_retry=True, max_retry_delay=10)
    with pytest.raises(ConfigurationError, match="longest retry delay"):
        Route(provider, ok, retry=RetryPolicy(maximum=60)).check_capabilities(limited)
    Route(provider, ok, max_attempts=3).check_capabilities(provider.capabilities)


# -- outcome mapping ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (True, ACCEPT),
        (None, ACCEPT),
        (False, RETRY()),
        (REJECT("r"), REJECT("r")),
        (RELEASE, RELEASE),
        (RETRY(2), RETRY(2)),
    ],
)
async def test_handler_result_mapping(provider: MemoryProvider, result: Any, expected: Any) -> None:
    async def handler(content: Any, metadata: Any) -> Any:
        return result

    assert await Route(provider, handler).process(delivery()) == expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (DeleteMessage(), ACCEPT),
        (RejectMessage("nope"), REJECT("nope")),
        (RetryMessage(delay=4), RETRY(4)),
        (RetryMessage(), RETRY()),
    ],
)
async def test_signals(provider: MemoryProvider, exc: Exception, expected: Any) -> None:
    async def handler(content: Any, metadata: Any) -> Any:
        raise exc

    assert await Route(provider, handler).process(delivery()) == expected


async def test_a_retry_delay_the_provider_cannot_honour_is_dropped_or_shortened_and_said(
    provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(content: Any, metadata: Any) -> Any:
        raise RetryMessage(delay=30)

    route = Route(provider, handler)
    route.check_capabilities(Capabilities())  # no delayed retries at all
    with caplog.at_level(logging.WARNING, logger="loafer_core.route"):
        assert await route.process(delivery()) == RETRY()
        assert await route.process(delivery()) == RETRY()
    assert caplog.text.count("has no delayed retries") == 1  # said once, not per message

    route = Route(provider, handler)
    route.check_capabilities(Capabilities(delayed_retry=True, max_retry_delay=10))
    with caplog.at_level(logging.WARNING, logger="loafer_core.route"):
        assert await route.process(delivery()) == RETRY(10)
    assert "shortened to 10" in caplog.text

    route = Route(provider, handler)
    route.check_capabilities(provider.capabilities)  # the memory broker: any delay
    assert await route.process(delivery()) == RETRY(30)


@pytest.mark.parametrize(
    ("verdict", "expected"),
    [(True, ACCEPT), (False, RETRY()), (None, RETRY()), (REJECT("e"), REJECT("e"))],
)
async def test_error_handler_decides(provider: MemoryProvider, verdict: Any, expected: Any) -> None:
    seen: list[Any] = []

    async def handler(content: Any, metadata: Any) -> Any:
        raise KeyError("boom")

    async def error_handler(exc_type: Any, exc: Any, message: Any) -> Any:
        seen.append((exc_type, str(exc), message))
        return verdict

    route = Route(provider, handler, error_handler=error_handler)
    assert await route.process(delivery(b"raw")) == expected
    assert seen == [(KeyError, "'boom'", b"raw")]


async def test_sync_error_handler_and_failing_error_handler(
    provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(content: Any, metadata: Any) -> Any:
        raise RuntimeError("handler broke")

    def sync_eh(exc_type: Any, exc: Any, message: Any) -> bool:
        return True

    assert await Route(provider, handler, error_handler=sync_eh).process(delivery()) == ACCEPT

    def broken_eh(exc_type: Any, exc: Any, message: Any) -> bool:
        raise RuntimeError("error handler broke")

    with caplog.at_level(logging.ERROR):
        out = await Route(provider, handler, error_handler=broken_eh, name="r1").process(delivery())
    assert out == RETRY()
    assert "the error handler failed on message m-1" in caplog.text


async def test_default_error_handler_logs_route_and_message(
    provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(content: Any, metadata: Any) -> Any:
        raise ValueError("kaput")

    with caplog.at_level(logging.ERROR):
        out = await Route(provider, handler, name="orders").process(delivery())
    assert out == RETRY()
    assert "route 'orders'" in caplog.text and "m-1" in caplog.text
    assert "ValueError: kaput" in caplog.text  # the traceback


async def test_translator_errors_reach_error_handler(provider: MemoryProvider) -> None:
    errors: list[type[BaseException]] = []

    def eh(exc_type: Any, exc: Any, message: Any) -> bool:
        errors.append(exc_type)
        return True

    called: list[Any] = []

    async def handler(content: Any, metadata: Any) -> bool:
        called.append(content)
        return True

    route = Route(provider, handler, translator=JSONTranslator(), error_handler=eh)
    # falsy content is an error, as in Loafer 2.x (`if not content: raise ValueError`)
    falsy = (b"null", b'""', b"[]", b"{}", b"0", b"0.0", b"false")
    for raw in (b"\xff\xfe", b"{bad", *falsy):
        assert await route.process(delivery(raw)) == ACCEPT
    assert len(errors) == 2 + len(falsy) and all(issubclass(e, ValueError) for e in errors)
    assert called == []
    assert await route.process(delivery(b"1")) == ACCEPT
    assert called == [1]


async def test_content_without_a_truth_value_is_content(provider: MemoryProvider) -> None:
    class Matrix:  # like a numpy array: bool() refuses
        def __bool__(self) -> bool:
            raise ValueError("the truth value of an array is ambiguous")

    matrix = Matrix()

    class MatrixTranslator:
        def translate(self, raw: Any) -> dict[str, Any]:
            return {"content": matrix, "metadata": {}}

    called: list[Any] = []

    async def handler(content: Any, metadata: Any) -> bool:
        called.append(content)
        return True

    route = Route(provider, handler, translator=MatrixTranslator())
    assert await route.process(delivery()) == ACCEPT
    assert called == [matrix]


async def test_translator_never_mutates_raw_and_metadata_merges(provider: MemoryProvider) -> None:
    raw = {"Body": '{"x": 1}', "MessageId": "abc"}
    snapshot = dict(raw)
    seen: list[Any] = []

    class DictTranslator:
        def translate(self, message: dict[str, Any]) -> dict[str, Any]:
            return {"content": message["Body"], "metadata": {"from_translator": True}}

    async def handler(content: Any, metadata: Any) -> bool:
        seen.append((content, dict(metadata)))
        return True

    d = Delivery(raw=raw, metadata={"headers": {"h": "v"}}, message_id="abc")
    await Route(provider, handler, translator=DictTranslator()).process(d)
    assert raw == snapshot
    assert seen == [('{"x": 1}', {"headers": {"h": "v"}, "from_translator": True})]


# -- handler shapes ----------------------------------------------------------------------

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


async def test_sync_handler_runs_in_thread_with_contextvars(provider: MemoryProvider) -> None:
    seen: list[Any] = []

    def handler(content: Any, metadata: Any) -> bool:
        seen.append((threading.current_thread() is threading.main_thread(), request_id.get()))
        return False

    route = Route(provider, handler)
    request_id.set("req-42")
    assert await route.process(delivery()) == RETRY()
    assert seen == [(False, "req-42")]


async def test_class_handler_with_stop(provider: MemoryProvider) -> None:
    class Handler:
        stopped = 0

        async def handle(self, content: Any, metadata: Any) -> bool:
            return content == b'{"a": 1}'

        def stop(self) -> None:
            self.stopped += 1

    h = Handler()
    route = Route(provider, h)
    assert await route.process(delivery()) == ACCEPT
    route.stop()
    route.stop()
    assert h.stopped == 1


async def test_async_callable_object_is_awaited(provider: MemoryProvider) -> None:
    ran: list[Any] = []

    class Callable_:
        async def __call__(self, content: Any, metadata: Any) -> bool:
            ran.append(content)
            return False

    assert await Route(provider, Callable_()).process(delivery()) == RETRY()
    assert ran == [b'{"a": 1}']


async def test_awaitable_result_is_awaited(provider: MemoryProvider) -> None:
    async def later() -> bool:
        return False

    def handler(content: Any, metadata: Any) -> Any:
        return later()

    assert await Route(provider, handler).process(delivery()) == RETRY()


async def test_handler_timeout_retries_and_logs(
    provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    cancelled = asyncio.Event()

    async def slow(content: Any, metadata: Any) -> bool:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    with caplog.at_level(logging.ERROR):
        out = await Route(provider, slow, handler_timeout=0.05).process(delivery())
    assert out == RETRY()
    assert cancelled.is_set()
    assert "timed out" in caplog.text


async def test_handlers_own_timeout_error_goes_to_the_error_handler(
    provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[type[BaseException]] = []

    async def calls_a_slow_service(content: Any, metadata: Any) -> bool:
        raise TimeoutError("upstream timed out")

    def on_error(exc_type: type[BaseException], exc: BaseException, message: Any) -> Outcome:
        seen.append(exc_type)
        return REJECT("upstream down")

    route = Route(provider, calls_a_slow_service, handler_timeout=5, error_handler=on_error)
    with caplog.at_level(logging.ERROR):
        out = await route.process(delivery())
    assert out == REJECT("upstream down")
    assert seen == [TimeoutError]
    assert "handler timed out" not in caplog.text


async def test_max_attempts(provider: MemoryProvider, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int | None] = []

    async def failing(content: Any, metadata: Any) -> bool:
        calls.append(metadata.get("n"))
        return False

    route = Route(provider, failing, max_attempts=3, translator=None)
    assert await route.process(delivery(attempt=2)) == RETRY()
    assert (await route.process(delivery(attempt=3))).kind is REJECT("x").kind
    with caplog.at_level(logging.WARNING):
        out = await route.process(delivery(attempt=4))
    assert out.kind is REJECT("x").kind
    assert len(calls) == 2  # the 4th attempt never reached the handler
    assert "exceeds max_attempts=3" in caplog.text


async def test_retry_policy_gives_delays(provider: MemoryProvider) -> None:
    async def failing(content: Any, metadata: Any) -> bool:
        return False

    route = Route(provider, failing, retry=RetryPolicy(initial=1, factor=2, maximum=3))
    assert await route.process(delivery(attempt=1)) == RETRY(1.0)
    assert await route.process(delivery(attempt=2)) == RETRY(2.0)
    assert await route.process(delivery(attempt=5)) == RETRY(3.0)


async def test_a_bad_retry_delay_is_an_error_for_the_error_handler(
    provider: MemoryProvider,
) -> None:
    seen: list[type[BaseException]] = []

    async def handler(content: Any, metadata: Any) -> bool:
        raise RetryMessage(delay=-1)  # a mistake: reaches the error handler as a ValueError

    def on_error(exc_type: type[BaseException], exc: BaseException, message: Any) -> bool:
        seen.append(exc_type)
        return False

    route = Route(provider, handler, error_handler=on_error, max_attempts=3)
    assert await route.process(delivery(attempt=3)) == REJECT("max_attempts (3) reached")
    assert seen == [ValueError]


async def test_a_signal_that_cannot_say_its_outcome_goes_to_the_error_handler(
    provider: MemoryProvider,
) -> None:
    class Broken(RetryMessage):
        def outcome(self) -> Outcome:
            raise RuntimeError("no outcome")

    async def handler(content: Any, metadata: Any) -> bool:
        raise Broken()

    seen: list[type[BaseException]] = []

    def on_error(exc_type: type[BaseException], exc: BaseException, message: Any) -> Outcome:
        seen.append(exc_type)
        return REJECT("broken signal")

    assert await Route(provider, handler, error_handler=on_error).process(delivery()) == REJECT(
        "broken signal"
    )
    assert seen == [RuntimeError]


def test_retry_message_checks_its_delay() -> None:
    with pytest.raises(ValueError, match="delay"):
        RetryMessage(delay=float("nan"))
    assert RetryMessage(delay=2).outcome() == RETRY(2)


async def test_a_falsy_result_other_than_false_retries_and_says_so_once(
    provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    results = iter(["", 0, [], False])

    async def handler(content: Any, metadata: Any) -> Any:
        return next(results)

    route = Route(provider, handler, retry=None)
    with caplog.at_level(logging.WARNING, logger="loafer_core.route"):
        outcomes = [await route.process(delivery()) for _ in range(4)]
    assert outcomes == [RETRY()] * 4
    said = [r.getMessage() for r in caplog.records if "falsy" in r.getMessage()]
    assert len(said) == 1
    assert "returned ''" in said[0] and "RETRIED" in said[0]


async def test_log_lines_about_a_message_carry_its_fields(
    provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(content: Any, metadata: Any) -> bool:
        raise ValueError("nope")

    route = Route(provider, handler, name="orders", max_attempts=2)
    with caplog.at_level(logging.WARNING, logger="loafer_core.route"):
        await route.process(delivery(attempt=1))
        await route.process(delivery(attempt=2))
    fields = [
        (r.route, r.message_id, r.attempt, r.outcome)  # type: ignore[attr-defined]
        for r in caplog.records
    ]
    # the first error (the second, the same, is held back by the rate limit), then the
    # rejection of the last attempt
    assert fields == [("orders", "m-1", 1, "RETRY"), ("orders", "m-1", 2, "REJECT")]


# -- bounded logs of failing messages ----------------------------------------------------


async def test_last_attempt_rejections_are_logged_at_a_bounded_rate(
    provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """A poison stream past max_attempts must not write one line per message."""

    async def fails(content: Any, metadata: Any) -> bool:
        return False

    route = Route(provider, fails, max_attempts=2, translator=PassThroughTranslator())
    caplog.set_level(logging.WARNING, logger="loafer_core")
    for _ in range(50):
        outcome = await route.process(delivery(attempt=2))
        assert outcome.kind is REJECT("x").kind
    lines = [r for r in caplog.records if "failed its last attempt" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


async def test_an_exception_that_cannot_be_printed_is_still_an_error_of_the_message(
    provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    async def raises(content: Any, metadata: Any) -> bool:
        raise Unprintable()

    route = Route(provider, raises, translator=PassThroughTranslator(), retry=None)
    caplog.set_level(logging.ERROR, logger="loafer_core")
    assert await route.process(delivery()) == RETRY()
    assert route.message_errors == 1
    assert route.last_message_error is not None
    assert route.last_message_error.startswith("Unprintable")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"translator": "loafer_core:TextTranslator"},
            r"Route\(translator=\.\.\.\): got the string 'loafer_core:TextTranslator'; pass a "
            r"translator object .* `from loafer_core import TextTranslator` and pass "
            r"TextTranslator\(\)",
        ),
        ({"message_translator": "json"}, r"Route\(message_translator=\.\.\.\): got the string"),
        ({"translator": b"loafer_core:JSONTranslator"}, r"translator=.*got the string"),
        (
            {"error_handler": "app.errors:on_error"},
            r"error_handler=.*`from app.errors import on_error` and pass on_error\)",
        ),
        ({"middleware": "loafer_core.ext.otel:Tracing"}, r"middleware=\.\.\.\): got the string"),
        ({"middleware": ["app:Timer"]}, r"item 0: got the string 'app:Timer'.* Timer\(\.\.\.\)"),
        ({"retry": "loafer_core.policy.DEFAULT_RETRY"}, r"pass DEFAULT_RETRY\)"),
        ({"publish_to": "loafer_sqs:SQSPublisher"}, r"publish_to=.*got the string"),
        ({"publish_to": {"audit": "q"}}, r"publish_to=.*'audit': got the string 'q'"),
    ],
)
def test_a_string_where_an_object_belongs_is_refused_with_what_to_pass(
    provider: MemoryProvider, kwargs: dict[str, Any], match: str
) -> None:
    """A ``str`` has a ``translate`` method: without this check, a translator given by its
    config-file name was accepted and then every message failed."""
    with pytest.raises(ConfigurationError, match=match):
        Route(provider, ok, **kwargs)


def test_a_string_handler_provider_or_discriminator_is_refused(provider: MemoryProvider) -> None:
    from loafer_core import Handlers, Manager

    with pytest.raises(ConfigurationError, match=r"handler=.*got the string 'app:handle'"):
        Route(provider, "app:handle")
    with pytest.raises(ConfigurationError, match=r"provider=.*`from loafer_sqs import "):
        Route("loafer_sqs:SQSProvider", ok)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"discriminator=.*pass header\('type'\)"):
        Handlers(discriminator="type")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"Manager\(middleware=\.\.\.\): got the string"):
        Manager([Route(provider, ok)], middleware="app:Timer")  # type: ignore[arg-type]


def test_the_steps_below_the_route_do_not_import_it() -> None:
    """middleware, forward, dispatch (Handlers), idempotency and the route's own units
    import no ``loafer_core.route`` (not even for typing): they see a route through
    ``loafer_core.context.RouteContext``, so no import cycle runs through the route."""
    import ast
    from pathlib import Path

    import loafer_core

    where = Path(loafer_core.__file__).parent
    below = ["middleware", "forward", "handlers", "context", "idempotency", "_handler"]
    below += ["_attempts", "_error_step", "_deadline", "_message_errors", "_checks"]
    importers = []
    for name in below:
        tree = ast.parse((where / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "loafer_core.route":
                importers.append(name)
    assert importers == []


def test_pipeline_is_process_without_forwarding_and_wraps_it_with() -> None:
    from loafer_core.memory import MemoryBroker, MemoryProvider

    class Target:
        async def publish(self, body: Any, *, headers: Any = None) -> None:
            return None

    provider = MemoryProvider(MemoryBroker(), "q")
    plain = Route(provider, lambda content, metadata: True)
    assert plain.pipeline() == plain.process
    forwarding = Route(provider, lambda content, metadata: True, publish_to=Target())
    step = forwarding.pipeline()
    assert step != forwarding.process
    assert getattr(step, "args", None) == (forwarding, forwarding.process)
