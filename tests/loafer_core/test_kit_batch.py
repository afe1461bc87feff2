"""loafer_core.kit.Batcher: lingers, full batches, retries, give-ups, abort."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from loafer_core.kit import Batcher, Batching, Failure

pytestmark = pytest.mark.sqs


class FakeCall:
    def __init__(self, fail: dict[str, list[Failure]] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail or {}
        self.raise_times = 0

    async def __call__(self, entries: Sequence[str]) -> dict[int, Failure]:
        self.batches.append(list(entries))
        if self.raise_times:
            self.raise_times -= 1
            raise ConnectionError("down")
        failures: dict[int, Failure] = {}
        for i, entry in enumerate(entries):
            queued = self.fail.get(entry)
            if queued:
                failures[i] = queued.pop(0)
        return failures


async def test_full_batches_go_at_once_and_never_exceed_ten() -> None:
    call = FakeCall()
    batcher = Batcher("test", call, describe=str, batching=Batching(linger=10.0))
    for i in range(25):
        batcher.add(str(i))
    await asyncio.sleep(0)
    assert [len(b) for b in call.batches] == [10, 10]
    await batcher.flush()
    assert [len(b) for b in call.batches] == [10, 10, 5]


async def test_linger_gathers_entries() -> None:
    call = FakeCall()
    batcher = Batcher("test", call, describe=str, batching=Batching(linger=0.05))
    for i in range(3):
        batcher.add(str(i))
    future = batcher.submit("3")
    await asyncio.wait_for(future, 2)
    assert call.batches == [["0", "1", "2", "3"]]


async def test_retryable_entry_failure_is_retried() -> None:
    call = FakeCall({"b": [Failure("InternalError", True)]})
    batcher = Batcher("test", call, describe=str, batching=Batching(linger=0.0, backoff=0.001))
    futures = [batcher.submit(x) for x in "abc"]
    await asyncio.wait_for(asyncio.gather(*futures), 2)
    assert call.batches == [["a", "b", "c"], ["b"]]


async def test_permanent_failure_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    call = FakeCall({"b": [Failure("ReceiptHandleIsInvalid", False)]})
    batcher = Batcher(
        "delete", call, describe=lambda e: f"entry {e}", batching=Batching(linger=0.0)
    )
    with caplog.at_level(logging.ERROR, logger="loafer_core.kit"):
        batcher.add("a")
        batcher.add("b")
        await batcher.flush()
    assert call.batches == [["a", "b"]]
    assert "entry b" in caplog.text
    assert "ReceiptHandleIsInvalid" in caplog.text


async def test_call_errors_retried_then_given_up(caplog: pytest.LogCaptureFixture) -> None:
    call = FakeCall()
    call.raise_times = 100
    batcher = Batcher(
        "test", call, describe=str, batching=Batching(linger=0.0, attempts=3, backoff=0.001)
    )
    future = batcher.submit("x")
    with (
        caplog.at_level(logging.ERROR, logger="loafer_core.kit"),
        pytest.raises(RuntimeError, match="ConnectionError"),
    ):
        await asyncio.wait_for(future, 2)
    assert len(call.batches) == 3


async def test_call_error_recovers() -> None:
    call = FakeCall()
    call.raise_times = 1
    batcher = Batcher("test", call, describe=str, batching=Batching(linger=0.0, backoff=0.001))
    await asyncio.wait_for(batcher.submit("x"), 2)
    assert call.batches == [["x"], ["x"]]


async def test_weight_limit_splits_batches() -> None:
    call = FakeCall()
    batcher = Batcher(
        "test", call, describe=str, weigh=len, batching=Batching(linger=10.0, max_weight=10)
    )
    for entry in ["aaaa", "bbbb", "cccc", "dddddddddddddddd", "e"]:
        batcher.add(entry)
    await batcher.flush()
    assert call.batches == [["aaaa", "bbbb"], ["cccc"], ["dddddddddddddddd"], ["e"]]


async def test_a_plugin_batcher_logs_on_its_logger_with_its_masking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SQS's batcher: its own logger, credentials in a client error masked."""
    from loafer_sqs._batch import MAX_BATCH
    from loafer_sqs._batch import Batcher as SQSBatcher

    async def send(entries: Sequence[str]) -> dict[int, Failure]:
        raise RuntimeError("https://AKIAEXAMPLE:secretkey@sqs.local/ refused")

    with pytest.raises(ValueError, match="between 1 and 10"):
        SQSBatcher("x", send, describe=str, max_batch=MAX_BATCH + 1)
    batcher: SQSBatcher[str] = SQSBatcher(
        "calls", send, describe=lambda e: f"entry {e}", attempts=1, linger=0.001
    )
    with (
        caplog.at_level(logging.ERROR, logger="loafer_sqs"),
        pytest.raises(Exception, match="calls failed"),
    ):
        await asyncio.wait_for(batcher.submit("a"), 5)
    assert "entry a" in caplog.text
    assert "secretkey" not in caplog.text


async def test_a_refused_entry_is_not_retried_and_fails_with_the_refused_type() -> None:
    class Refused(Exception):
        pass

    calls: list[Sequence[str]] = []

    async def send(entries: Sequence[str]) -> dict[int, Failure]:
        calls.append(entries)
        return {
            i: Failure("TooLarge: no", retry=False, refused=True)
            for i, e in enumerate(entries)
            if e == "big"
        }

    batcher: Batcher[str] = Batcher(
        "publish",
        send,
        describe=str,
        batching=Batching(linger=0.001),
        refused_type=Refused,
        error_type=RuntimeError,
    )
    big, small = batcher.submit("big"), batcher.submit("small")
    with pytest.raises(Refused, match="TooLarge"):
        await asyncio.wait_for(big, 5)
    await asyncio.wait_for(small, 5)
    assert len(calls) == 1


async def test_classify_says_a_refused_call_is_not_worth_retrying() -> None:
    class Refused(Exception):
        pass

    calls = 0

    async def send(entries: Sequence[str]) -> dict[int, Failure]:
        nonlocal calls
        calls += 1
        raise ValueError("InvalidParameter: Message too long")

    def classify(exc: Exception) -> Failure | None:
        if "InvalidParameter" in str(exc):
            return Failure(str(exc), retry=False, refused=True)
        return None

    batcher: Batcher[str] = Batcher(
        "publish",
        send,
        describe=str,
        batching=Batching(linger=0.001),
        classify=classify,
        refused_type=Refused,
    )
    with pytest.raises(Refused, match="Message too long"):
        await asyncio.wait_for(batcher.submit("x"), 5)
    assert calls == 1
