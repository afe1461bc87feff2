"""Translators: every body that cannot be decoded is a TranslationError."""

from __future__ import annotations

import pytest

from loafer_core import JSONTranslator, Route
from loafer_core.errors import RejectMessage, TranslationError
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.outcome import OutcomeKind
from loafer_core.testing import run_until_idle
from loafer_core.translator import decode_json

pytestmark = pytest.mark.memory

DEEP = b"[" * 100_000 + b"]" * 100_000  # past the parser's recursion limit


def test_deeply_nested_json_is_a_translation_error() -> None:
    with pytest.raises(TranslationError, match="nested too deeply"):
        JSONTranslator().translate(DEEP)
    with pytest.raises(TranslationError, match="the thing is JSON nested"):
        decode_json(DEEP.decode(), "the thing")


@pytest.mark.parametrize(
    ("body", "match"),
    [(b"\xff", "not valid UTF-8"), (b"{", "not valid JSON"), (42, "expected bytes or str")],
)
def test_undecodable_bodies_are_translation_errors(body: object, match: str) -> None:
    with pytest.raises(TranslationError, match=match):
        JSONTranslator().translate(body)


async def test_an_error_handler_rejecting_translation_errors_rejects_deep_json() -> None:
    """Before: RecursionError slipped past ``issubclass(exc_type, TranslationError)``, so
    such a message was retried for ever."""
    broker = MemoryBroker()
    broker.publish("q", DEEP)
    seen: list[type[BaseException]] = []

    async def handler(content: object, metadata: object) -> bool:
        raise AssertionError("never called")

    def on_error(exc_type: type[BaseException], exc: BaseException, raw: object) -> object:
        seen.append(exc_type)
        if issubclass(exc_type, TranslationError):
            raise RejectMessage(str(exc))
        return False

    route = Route(
        MemoryProvider(broker, "q"), handler, translator=JSONTranslator(), error_handler=on_error
    )
    report = await run_until_idle(route, timeout=10)
    assert seen == [TranslationError]
    assert [s.outcome.kind for s in report.settlements] == [OutcomeKind.REJECT]
