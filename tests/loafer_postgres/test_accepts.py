"""The ACCEPT coalescer (unit tests with a fake DELETE): batches, linger, urgent entries,
retries then one log line, flush."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import pytest

from loafer_postgres._accepts import Coalescer


class FakeDelete:
    def __init__(self, failures: int = 0, pause: float = 0.0) -> None:
        self.calls: list[list[int]] = []
        self.failures = failures
        self.pause = pause

    async def __call__(self, entries: Sequence[tuple[int, object]]) -> None:
        self.calls.append([row_id for row_id, _ in entries])
        if self.pause:
            await asyncio.sleep(self.pause)
        if self.failures:
            self.failures -= 1
            raise RuntimeError("connection lost")


async def test_entries_arriving_while_a_call_runs_share_the_next() -> None:
    send = FakeDelete(pause=0.05)
    c = Coalescer(send)
    first = c.add((1, "a"))
    await asyncio.sleep(0.01)  # the first call runs
    rest = [c.add((i, "x")) for i in range(2, 6)]
    await asyncio.gather(first, *rest)
    assert send.calls == [[1], [2, 3, 4, 5]]


async def test_the_linger_gathers_and_an_urgent_entry_cuts_it_short() -> None:
    send = FakeDelete()
    c = Coalescer(send, linger=0.2, max_batch=3)
    started = time.monotonic()
    c.add((1, "a"))
    c.add((2, "b"))
    await c.flush()
    assert send.calls == [[1, 2]] and time.monotonic() - started >= 0.19
    started = time.monotonic()
    c.add((3, "c"))
    await asyncio.sleep(0.01)
    await c.add((4, "d"), urgent=True)
    assert send.calls[-1] == [3, 4] and time.monotonic() - started < 0.15
    for i in range(5, 9):  # a full batch does not linger
        c.add((i, "e"))
    await c.flush()
    assert send.calls[-2:] == [[5, 6, 7], [8]]


async def test_a_failed_call_is_retried_then_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    send = FakeDelete(failures=1)
    c = Coalescer(send, backoff=0.01)
    await c.add((1, "a"))
    assert send.calls == [[1], [1]]
    send.failures = 10
    caplog.set_level(logging.WARNING, logger="loafer_postgres")
    await asyncio.gather(c.add((2, "b")), c.add((3, "c")))
    assert send.calls[2:] == [[2, 3]] * 4  # 4 attempts of the one batch
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "could not be deleted" in errors[0].getMessage()
