"""The dead-letter conformance suite: subclass :class:`DeadLetterContract` to test a
provider's :class:`~loafer_core.deadletters.DeadLetters` store.

It takes the same hooks as :class:`~loafer_core.testing.ProviderContract`
(``make_provider``, ``create_queue``, ``delete_queue``, ``put``)::

    class TestMyDeadLetters(DeadLetterContract):
        async def make_provider(self, queue):
            return MyProvider(queue, url=..., dead_letter=True)

        async def create_queue(self, queue): ...
        async def delete_queue(self, queue): ...
        async def put(self, queue, body, headers=None): ...

Each test rejects a few messages through a real route (the handler raises
:class:`~loafer_core.errors.RejectMessage`), then works on the provider's store
(:func:`~loafer_core.deadletters.dead_letters_of`): counts and lists them, checks the
common keys, replays all or some (handled again by the route, with
:data:`~loafer_core.deadletters.REPLAY_ID`), dry-runs, purges. Plain (sync) pytest
methods, each in its own event loop on a fresh queue, bounded by ``timeout``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

import pytest

from loafer_core.deadletters import (
    DEAD_ATTEMPTS,
    DEAD_FIRST_FAILURE,
    DEAD_LAST_FAILURE,
    DEAD_ORIGIN,
    DEAD_REASON,
    REPLAY_ID,
    DeadLetter,
    DeadLetters,
    Filter,
    dead_letters_of,
)
from loafer_core.errors import RejectMessage
from loafer_core.manager import Manager
from loafer_core.provider import Provider
from loafer_core.route import Route
from loafer_core.testing._eventually import eventually
from loafer_core.translator import JSONTranslator, Translator

__all__ = ["DeadLetterContract"]

Scenario = Callable[[str], Awaitable[None]]


def _number(letter: DeadLetter) -> int:
    body = letter.body
    if isinstance(body, bytes | bytearray | memoryview | str):
        return int(json.loads(bytes(body) if not isinstance(body, str) else body)["i"])
    return int(body["i"])


class DeadLetterContract:
    """Conformance tests for a dead-letter store. Subclass it as ``Test...``."""

    #: Bound on each test, in seconds.
    timeout: ClassVar[float] = 60.0
    #: How long a dead letter (or a replayed message) may take to arrive.
    arrival_timeout: ClassVar[float] = 20.0
    #: Messages rejected per test.
    messages: ClassVar[int] = 6
    #: The start of the name of each queue a test makes.
    queue_prefix: ClassVar[str] = "loafer-dlq"
    #: Messages in the SIGKILL test, and the rate its replay runs at (messages/s).
    kill_messages: ClassVar[int] = 60
    kill_rate: ClassVar[float] = 30.0
    #: Whether the SIGKILL test can run (a store another process can reach: not the
    #: in-process memory broker).
    across_processes: ClassVar[bool] = True
    #: How long the SIGKILL test watches for a duplicate once everything arrived.
    duplicate_window: ClassVar[float] = 1.0
    #: Whether the store keeps the ``loafer-dead-*`` keys (a broker's own dead-lettering
    #: keeps no reason of ours).
    keeps_reason: ClassVar[bool] = True

    # -- hooks ----------------------------------------------------------------------------

    async def make_provider(self, queue: str) -> Provider:
        """Return a new, unstarted provider consuming ``queue``, dead-lettering REJECTs."""
        raise NotImplementedError

    async def create_queue(self, queue: str) -> None:
        """Create ``queue`` (with its dead-letter arrangement, if the provider needs one)."""
        raise NotImplementedError

    async def delete_queue(self, queue: str) -> None:
        """Delete ``queue`` and its dead letters."""

    async def put(self, queue: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        """Put one raw message on ``queue``."""
        raise NotImplementedError

    def translator(self) -> Translator:
        """A translator decoding this provider's raw message as UTF-8 JSON."""
        return JSONTranslator()

    def headers_of(self, metadata: Mapping[str, Any]) -> Mapping[str, Any]:
        """The application headers in a handler's ``metadata``."""
        headers = metadata.get("headers", {})
        return headers if isinstance(headers, Mapping) else {}

    # -- machinery ------------------------------------------------------------------------

    def _run(self, scenario: Scenario) -> None:
        async def main() -> None:
            queue = f"{self.queue_prefix}-{uuid.uuid4().hex[:12]}"
            await self.create_queue(queue)
            try:
                async with asyncio.timeout(self.timeout):
                    await scenario(queue)
            finally:
                await self.delete_queue(queue)

        asyncio.run(main())

    async def store(self, queue: str) -> DeadLetters:
        """The store of ``queue``'s dead letters (the caller closes it)."""
        return dead_letters_of(await self.make_provider(queue))

    async def reject_all(self, queue: str, store: DeadLetters, count: int | None = None) -> None:
        """Put ``count`` (default :attr:`messages`) messages ``{"i": n}`` on ``queue``,
        reject each through a route (reason ``"even n"`` or ``"odd n"``), wait until the
        store counts them."""
        total = self.messages if count is None else count
        for i in range(total):
            await self.put(queue, json.dumps({"i": i}).encode())

        async def handler(content: Any, metadata: Any) -> bool:
            parity = "odd" if content["i"] % 2 else "even"
            raise RejectMessage(f"{parity} {content['i']}")

        route = Route(await self.make_provider(queue), handler, translator=self.translator())
        async with Manager([route]):

            async def all_dead() -> bool:
                return await store.count() >= total

            await eventually(all_dead, timeout=self.arrival_timeout, what="all dead letters")
        assert await store.count() == total

    async def handle_replayed(
        self, queue: str, store: DeadLetters, flt: Filter, expected: int
    ) -> list[tuple[int, Mapping[str, Any]]]:
        """Replay ``flt`` while a route accepts; what the route handled (number, headers)
        once ``expected`` arrived."""
        handled: list[tuple[int, Mapping[str, Any]]] = []

        async def handler(content: Any, metadata: Any) -> bool:
            handled.append((content["i"], dict(self.headers_of(metadata))))
            return True

        route = Route(await self.make_provider(queue), handler, translator=self.translator())
        async with Manager([route]) as manager:
            await manager.wait_started()
            report = await store.replay(flt, rate=None)
            assert report.replayed == report.matched == expected, report
            await eventually(
                lambda: len(handled) >= expected,
                timeout=self.arrival_timeout,
                what=f"{expected} replayed messages handled",
            )
        return handled

    # -- tests ----------------------------------------------------------------------------

    def test_rejected_messages_are_counted_and_listed(self) -> None:
        async def scenario(queue: str) -> None:
            async with await self.store(queue) as store:
                await self.reject_all(queue, store)
                letters = await store.list(limit=None)
                assert sorted(_number(x) for x in letters) == list(range(self.messages))
                assert len(await store.list(limit=2)) == 2
                assert len({x.id for x in letters}) == self.messages, "ids must be unique"

        self._run(scenario)

    def test_dead_letters_carry_the_common_keys(self) -> None:
        async def scenario(queue: str) -> None:
            async with await self.store(queue) as store:
                await self.reject_all(queue, store)
                for letter in await store.list(limit=None):
                    if not self.keeps_reason:
                        continue
                    n = _number(letter)
                    assert letter.reason == f"{'odd' if n % 2 else 'even'} {n}", letter
                    assert letter.attempts is not None and letter.attempts >= 1, letter
                    assert letter.origin, letter
                    assert letter.first_failure is not None, letter
                    assert letter.last_failure is not None, letter
                    assert letter.first_failure <= letter.last_failure, letter
                    for key in (
                        DEAD_REASON,
                        DEAD_ATTEMPTS,
                        DEAD_ORIGIN,
                        DEAD_FIRST_FAILURE,
                        DEAD_LAST_FAILURE,
                    ):
                        assert key in letter.headers, (key, letter)
                    assert letter.as_json()["reason"] == letter.reason

        self._run(scenario)

    def test_replay_all_is_handled_by_the_route_and_empties_the_dlq(self) -> None:
        async def scenario(queue: str) -> None:
            async with await self.store(queue) as store:
                await self.reject_all(queue, store)
                ids = {x.id for x in await store.list(limit=None)}
                handled = await self.handle_replayed(queue, store, Filter(), self.messages)
                assert sorted(n for n, _ in handled) == list(range(self.messages))
                assert {h.get(REPLAY_ID) for _, h in handled} == ids
                assert await store.count() == 0
                assert await store.list() == []

        self._run(scenario)

    def test_replay_filtered_by_reason_and_by_id(self) -> None:
        async def scenario(queue: str) -> None:
            if not self.keeps_reason:
                return
            async with await self.store(queue) as store:
                await self.reject_all(queue, store)
                evens = (self.messages + 1) // 2
                handled = await self.handle_replayed(queue, store, Filter(reason="EVEN"), evens)
                assert sorted(n for n, _ in handled) == list(range(0, self.messages, 2))
                left = await store.list(limit=None)
                assert sorted(_number(x) for x in left) == list(range(1, self.messages, 2))
                one = left[0]
                again = await self.handle_replayed(queue, store, Filter(ids=frozenset({one.id})), 1)
                assert [n for n, _ in again] == [_number(one)]
                assert await store.count() == len(left) - 1

        self._run(scenario)

    def test_dry_run_moves_nothing(self) -> None:
        async def scenario(queue: str) -> None:
            async with await self.store(queue) as store:
                await self.reject_all(queue, store)
                report = await store.replay(dry_run=True, rate=None)
                assert report.dry_run and report.replayed == 0
                assert report.matched == self.messages == len(report.ids)
                assert await store.count() == self.messages
                old = await store.replay(Filter(older_than=3600), rate=None)
                assert old.matched == 0 and await store.count() == self.messages

        self._run(scenario)

    def test_purge(self) -> None:
        async def scenario(queue: str) -> None:
            async with await self.store(queue) as store:
                await self.reject_all(queue, store)
                if self.keeps_reason:
                    odds = self.messages // 2
                    assert await store.purge(Filter(reason="odd")) == odds
                    assert await store.count() == self.messages - odds
                before = await store.count()
                assert await store.purge() == before
                assert await store.count() == 0

        self._run(scenario)

    # -- the SIGKILL proof ----------------------------------------------------------------

    def _replay_child(self, queue: str) -> subprocess.Popen[bytes]:
        """A process that builds this test class (with this instance's string
        attributes: the broker's URL, a schema...) and replays ``queue``'s dead letters
        at :attr:`kill_rate`; the current directory importable."""
        cls = type(self)
        state = {k: v for k, v in vars(self).items() if isinstance(v, str)}
        code = (
            "import asyncio, importlib, json, sys\n"
            "from loafer_core.deadletters import dead_letters_of\n"
            f"cls = getattr(importlib.import_module({cls.__module__!r}), {cls.__qualname__!r})\n"
            "kit = cls.__new__(cls)\n"
            "vars(kit).update(json.loads(sys.argv[1]))\n"
            "async def main():\n"
            "    store = dead_letters_of(await kit.make_provider(sys.argv[2]))\n"
            "    async with store:\n"
            f"        await store.replay(rate={self.kill_rate!r})\n"
            "asyncio.run(main())\n"
        )
        return subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(state), queue],
            cwd=os.getcwd(),
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )

    @pytest.mark.slow
    def test_replay_killed_midway_loses_nothing(self) -> None:
        """SIGKILL the replay midway, run it again: every message handled, none lost, no
        duplicate beyond one per kill on an at-least-once store (same replay id)."""
        if not self.across_processes:
            pytest.skip("the store is not reachable from another process")

        async def scenario(queue: str) -> None:
            async with await self.store(queue) as store:
                await self.reject_all(queue, store, self.kill_messages)
                child = self._replay_child(queue)
                try:

                    async def midway() -> bool:
                        assert child.poll() is None, "the replay ended before it was killed"
                        return await store.count() <= self.kill_messages - 5

                    await eventually(midway, timeout=self.arrival_timeout, what="replay midway")
                finally:
                    child.send_signal(signal.SIGKILL)
                    await asyncio.to_thread(child.wait, 10)
                left = await store.count()
                assert 0 < left < self.kill_messages, left
                allowed = 0 if store.guarantee == "exactly-once" else 1
                handled = await self._handle_rest(queue, store, self.kill_messages, allowed)
                numbers = [n for n, _ in handled]
                assert sorted(set(numbers)) == list(range(self.kill_messages)), "lost some"
                extra = len(numbers) - self.kill_messages
                assert extra <= allowed, f"{extra} duplicates ({store.guarantee})"
                ids = [h.get(REPLAY_ID) for _, h in handled]
                assert len(set(ids)) == self.kill_messages, "a duplicate has its own replay id"
                assert await store.count() == 0

        self._run(scenario)

    async def _handle_rest(
        self, queue: str, store: DeadLetters, total: int, allowed: int
    ) -> list[tuple[int, Mapping[str, Any]]]:
        """Replay what is left while a route accepts; everything the route handled once
        ``total`` distinct messages arrived (and a short while for duplicates)."""
        handled: list[tuple[int, Mapping[str, Any]]] = []

        async def handler(content: Any, metadata: Any) -> bool:
            handled.append((content["i"], dict(self.headers_of(metadata))))
            return True

        route = Route(await self.make_provider(queue), handler, translator=self.translator())
        async with Manager([route]) as manager:
            await manager.wait_started()
            await store.replay(rate=None)
            await eventually(
                lambda: len({n for n, _ in handled}) >= total,
                timeout=self.arrival_timeout,
                what=f"{total} messages handled",
            )
            await asyncio.sleep(self.duplicate_window)  # a duplicate still on its way
        return handled
