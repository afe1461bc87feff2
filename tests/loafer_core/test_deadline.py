"""loafer_core._deadline: the handler under handler_timeout, as a unit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from loafer_core._deadline import Deadline
from loafer_core._handler import adapt_handler
from loafer_core._message_errors import MessageErrors
from loafer_core.provider import Delivery

DELIVERY = Delivery(raw=b"x", body=b"x", message_id="m", attempt=1)


async def test_an_overrun_is_false_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def slow(content: Any, metadata: Any) -> bool:
        await asyncio.sleep(5)
        return True

    call, _, _ = adapt_handler(slow)
    deadline = Deadline(call, 0.05, MessageErrors("r"), 1)
    async with asyncio.timeout(5):
        assert await deadline(b"x", {}, DELIVERY) is False
    assert "handler timed out after 0.05s on message m" in caplog.text


async def test_the_handlers_own_timeout_error_is_raised() -> None:
    async def own(content: Any, metadata: Any) -> bool:
        raise TimeoutError("the handler's")

    call, _, _ = adapt_handler(own)
    with pytest.raises(TimeoutError, match="the handler's"):
        await Deadline(call, 5, MessageErrors("r"), 1)(b"x", {}, DELIVERY)


async def test_a_sync_handler_in_time_returns_its_result() -> None:
    def quick(content: Any, metadata: Any) -> str:
        return f"done {content!r}"

    call, _, _ = adapt_handler(quick)
    async with asyncio.timeout(10):
        assert await Deadline(call, 5, MessageErrors("r"), 1)(b"x", {}, DELIVERY) == "done b'x'"
