"""InThreads: the threads a sync handler runs on (their number, results, cancellation)."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from loafer_core._handler import GROW_AFTER, InThreads

pytestmark = pytest.mark.timeout(30)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


async def test_calls_that_never_wait_for_a_thread_keep_to_the_core_threads() -> None:
    call = InThreads(lambda x: x * 2, max_workers=8, core=1)
    try:
        for i in range(50):  # one at a time: the one thread is always free
            assert await call(i) == i * 2
        await asyncio.sleep(3 * GROW_AFTER)  # a look at waiting calls has come and gone
        assert call.threads == 1
    finally:
        call.close()


async def test_concurrent_calls_start_only_the_core_threads_at_once() -> None:
    call = InThreads(lambda x: x * 2, max_workers=8, core=2, grow_after=60)
    try:
        results = await asyncio.wait_for(asyncio.gather(*(call(i) for i in range(40))), 10)
        assert results == [i * 2 for i in range(40)]
        assert call.threads == 2  # not one per call: no call waited grow_after seconds
    finally:
        call.close()


async def test_calls_that_wait_for_a_thread_get_more_threads_up_to_max_workers() -> None:
    together = threading.Barrier(4, timeout=10)
    call = InThreads(together.wait, max_workers=4, core=1)
    try:
        # all four return only if four threads block at the barrier at the same time
        await asyncio.wait_for(asyncio.gather(*(call() for _ in range(4))), 15)
        assert call.threads == 4
        await asyncio.wait_for(asyncio.gather(*(call() for _ in range(4))), 15)
        assert call.threads == 4  # never more than max_workers
    finally:
        together.abort()
        call.close()


async def test_every_result_and_exception_reaches_its_own_caller() -> None:
    def fn(i: int) -> int:
        if i % 7 == 0:
            raise ValueError(i)
        return i

    call = InThreads(fn, max_workers=6)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(call(i) for i in range(1, 500)), return_exceptions=True), 15
        )
    finally:
        call.close()
    for i, result in zip(range(1, 500), results, strict=True):
        if i % 7 == 0:
            assert isinstance(result, ValueError) and result.args == (i,)
        else:
            assert result == i


async def test_stop_iteration_from_the_function_arrives_as_runtime_error() -> None:
    def fn() -> None:
        raise StopIteration

    call = InThreads(fn)
    try:
        with pytest.raises(RuntimeError, match="StopIteration"):
            await asyncio.wait_for(call(), 5)
    finally:
        call.close()


async def test_a_call_cancelled_before_a_thread_takes_it_never_runs() -> None:
    release = threading.Event()
    ran: list[str] = []

    def fn(name: str) -> None:
        ran.append(name)
        if name == "first":
            release.wait(10)

    call = InThreads(fn, max_workers=1, core=1)
    try:
        first = asyncio.ensure_future(call("first"))
        second = asyncio.ensure_future(call("second"))
        await asyncio.sleep(0)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        release.set()
        await asyncio.wait_for(first, 10)
        assert await asyncio.wait_for(call("third"), 10) is None  # runs after "second"
        assert ran == ["first", "third"]
    finally:
        release.set()
        call.close()


async def test_the_callers_contextvars_are_seen_on_the_thread() -> None:
    call = InThreads(lambda: (request_id.get(), threading.current_thread().daemon))
    try:
        request_id.set("r-1")
        assert await asyncio.wait_for(call(), 5) == ("r-1", True)
    finally:
        call.close()


def test_one_instance_serves_successive_event_loops() -> None:
    call = InThreads(lambda x: x + 1)
    try:
        assert asyncio.run(call(1)) == 2
        assert asyncio.run(call(2)) == 3  # a new loop: new threads, results to the new loop
    finally:
        call.close()


async def test_a_call_after_close_starts_new_threads() -> None:
    call = InThreads(lambda: threading.current_thread().name)
    await asyncio.wait_for(call(), 5)
    call.close()
    assert call.threads == 0
    try:
        assert (await asyncio.wait_for(call(), 5)).startswith("loafer-handler-")
    finally:
        call.close()


def test_two_event_loops_at_once_each_keep_their_own_threads() -> None:
    seen: set[int] = set()

    def fn(i: int) -> int:
        seen.add(threading.get_ident())
        return i

    call = InThreads(fn, max_workers=8, core=2, grow_after=60)
    errors: list[BaseException] = []

    def one_loop() -> None:
        async def rounds() -> None:
            for _ in range(100):
                results = await asyncio.wait_for(asyncio.gather(*(call(i) for i in range(8))), 10)
                assert results == list(range(8))

        try:
            asyncio.run(rounds())
        except BaseException as exc:  # reported below
            errors.append(exc)

    loops = [threading.Thread(target=one_loop) for _ in range(2)]
    try:
        for t in loops:
            t.start()
        for t in loops:
            t.join(30)
    finally:
        call.close()
    assert not errors
    # two threads per loop, for good: neither loop closes the other's threads
    assert len(seen) <= 4
