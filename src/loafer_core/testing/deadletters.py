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
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

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

    async def reject_all(self, queue: str, store: DeadLetters) -> None:
        """Put :attr:`messages` messages ``{"i": n}`` on ``queue``, reject each through a
        route (reason ``"even n"`` or ``"odd n"``), wait until the store counts them."""
        for i in range(self.messages):
            await self.put(queue, json.dumps({"i": i}).encode())

        async def handler(content: Any, metadata: Any) -> bool:
            parity = "odd" if content["i"] % 2 else "even"
            raise RejectMessage(f"{parity} {content['i']}")

        route = Route(await self.make_provider(queue), handler, translator=self.translator())
        async with Manager([route]):

            async def all_dead() -> bool:
                return await store.count() >= self.messages

            await eventually(all_dead, timeout=self.arrival_timeout, what="all dead letters")
        assert await store.count() == self.messages

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
