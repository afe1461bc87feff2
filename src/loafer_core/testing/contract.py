"""The provider conformance suite: subclass :class:`ProviderContract` to test a provider.

Give it a way to make your provider for a queue, to create and delete queues, to put raw
messages on the broker, and the :class:`~loafer_core.provider.Capabilities` you claim::

    class TestMyContract(ProviderContract):
        capabilities = Capabilities(delayed_retry=True, dead_letter=True)

        async def make_provider(self, queue):
            return MyProvider(queue, url=...)

        async def create_queue(self, queue): ...
        async def delete_queue(self, queue): ...
        async def put(self, queue, body, headers=None): ...
        async def dead_letters(self, queue): ...   # optional: bodies dead-lettered
        async def put_keyed(self, queue, body, key): ...  # if you claim ordering_keys

Every test runs in its own event loop (``asyncio.run``) on a fresh queue, bounded by
``timeout``. Tests of a capability you do not claim, or whose hook you leave out
(``dead_letters``, ``put_keyed``), are skipped, saying so. The tests are plain (sync)
pytest methods: no asyncio pytest plugin is needed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

import pytest

from loafer_core.manager import Manager
from loafer_core.outcome import ACCEPT, REJECT, RELEASE, RETRY, Outcome
from loafer_core.provider import Capabilities, Delivery, Provider, Support
from loafer_core.route import Route
from loafer_core.translator import JSONTranslator, Translator

__all__ = ["ProviderContract"]

Scenario = Callable[[str], Awaitable[None]]

#: The abilities the kit has tests for: a declaration must match the provider on each.
_CHECKED_CAPABILITIES = (
    "delayed_retry",
    "dead_letter",
    "attempt_count",
    "release_uncounted",
    "ordering_keys",
    "lease_extension",
)


class ProviderContract:
    """Conformance tests for a provider. Subclass it as ``Test...`` and fill in the hooks."""

    #: What the provider under test claims to support.
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: Bound on each test, in seconds.
    timeout: ClassVar[float] = 60.0
    #: How long a RETRY without delay, or a RELEASE, may take to come back.
    redelivery_timeout: ClassVar[float] = 15.0
    #: The delay used to check delayed retries, and the tolerance on it (how much early).
    retry_delay: ClassVar[float] = 1.0
    retry_delay_tolerance: ClassVar[float] = 0.25
    #: How late, past its delay, a delayed retry may still come back.
    retry_delay_late: ClassVar[float] = 5.0
    #: How long the settle-twice tests watch for a duplicate after the redelivery.
    duplicate_window: ClassVar[float] = 2.0
    #: How soon what a closed provider held and had not handed out must be available
    #: again (``None``: ``redelivery_timeout``). Set it below your lease, if you have
    #: one, so that a provider dropping what it held cannot pass by the lease's lapse
    #: bringing it back.
    given_back_within: ClassVar[float | None] = None
    #: Messages in the "none lost" test.
    bulk_messages: ClassVar[int] = 1000
    #: Size of the large bad body in the bad-input test (1 MB unless the broker caps it).
    large_body_size: ClassVar[int] = 1_000_000
    #: Whether the broker can carry an empty body.
    supports_empty_body: ClassVar[bool] = True
    #: The start of the name of each queue a test makes (a unique suffix follows):
    #: ``create_queue`` receives such a name; choose a prefix your broker accepts and that
    #: tells kit queues apart from others (for clean-up by pattern).
    queue_prefix: ClassVar[str] = "loafer-contract"
    #: The longest lease (``lease_duration``) the lease tests wait out (2.5x for the
    #: extension test): give the kit a queue with a short lease where the broker allows.
    longest_lease_to_test: ClassVar[float] = 10.0

    # -- hooks ----------------------------------------------------------------------------

    async def make_provider(self, queue: str) -> Provider:
        """Return a new, unstarted provider consuming ``queue``."""
        raise NotImplementedError

    async def create_queue(self, queue: str) -> None:
        """Create ``queue`` (with its dead-letter arrangement, if the provider needs one)."""
        raise NotImplementedError

    async def delete_queue(self, queue: str) -> None:
        """Delete ``queue`` and what :meth:`create_queue` made for it."""

    async def put(self, queue: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        """Put one raw message on ``queue``."""
        raise NotImplementedError

    async def put_many(self, queue: str, bodies: Sequence[bytes]) -> None:
        """Put many messages (override with a faster, pipelined version if you have one)."""
        for body in bodies:
            await self.put(queue, body)

    async def dead_letters(self, queue: str) -> list[bytes] | None:
        """Bodies dead-lettered from ``queue`` so far; ``None`` if not observable."""
        return None

    async def put_keyed(self, queue: str, body: bytes, key: str) -> None:
        """Put one raw message on ``queue`` with ordering key ``key`` (needed to test a
        claim of ``ordering_keys``; that test is skipped, saying so, without it)."""
        raise NotImplementedError

    def translator(self) -> Translator:
        """A translator decoding this provider's raw message as UTF-8 JSON."""
        return JSONTranslator()

    def headers_of(self, delivery: Delivery) -> Mapping[str, Any]:
        """The application headers of ``delivery``."""
        headers = delivery.metadata.get("headers", {})
        return headers if isinstance(headers, Mapping) else {}

    def body_of(self, delivery: Delivery) -> bytes:
        """The body of ``delivery`` as bytes."""
        body = delivery.body
        if isinstance(body, str):
            return body.encode("utf-8")
        return bytes(body)

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

    def _needs(self, what: str) -> None:
        if getattr(self.capabilities, what) is Support.NONE:
            pytest.skip(f"the provider does not claim {what}")

    async def _started(self, queue: str, capacity: int = 10) -> Provider:
        provider = await self.make_provider(queue)
        await provider.start(capacity)
        return provider

    async def _fetch_one(
        self, provider: Provider, timeout: float, *, capacity: int = 1
    ) -> Delivery | None:
        """Fetch until one delivery arrives or ``timeout`` passes (None then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            remaining = deadline - time.monotonic()
            try:
                async with asyncio.timeout(remaining):
                    got = list(await provider.fetch(capacity))
            except TimeoutError:
                return None
            if got:
                first, rest = got[0], got[1:]
                for extra in rest:
                    await provider.settle(extra, RELEASE)
                return first
        return None

    async def _fetch_body(self, provider: Provider, body: bytes, timeout: float) -> Delivery:
        """Fetch until the delivery with ``body`` arrives; other deliveries are accepted."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            delivery = await self._fetch_one(provider, max(0.0, remaining))
            if delivery is None:
                raise AssertionError(f"message {body[:40]!r} not delivered within {timeout}s")
            if self.body_of(delivery) == body:
                return delivery
            await provider.settle(delivery, ACCEPT)

    async def _settled_and_redelivered(
        self, queue: str, body: bytes, outcome: Outcome
    ) -> tuple[Delivery, Delivery]:
        """Put ``body``, fetch it, settle it with ``outcome``, fetch it again (then accept
        it); returns both deliveries."""
        await self.put(queue, body)
        provider = await self._started(queue)
        try:
            first = await self._fetch_body(provider, body, self.redelivery_timeout)
            await provider.settle(first, outcome)
            again = await self._fetch_body(provider, body, self.redelivery_timeout)
            await provider.settle(again, ACCEPT)
        finally:
            await provider.close()
        return first, again

    @staticmethod
    def _marker() -> bytes:
        return f'{{"marker": "{uuid.uuid4().hex}"}}'.encode()

    # -- provider-level tests -------------------------------------------------------------

    def test_the_declared_capabilities_are_the_providers_own(self) -> None:
        """The class's ``capabilities`` must be what the started provider says it supports:
        a claim the provider does not make, or an ability it has and the class does not
        declare (its tests would be skipped), fails here."""

        async def scenario(queue: str) -> None:
            provider = await self._started(queue)
            try:
                own = provider.capabilities
            finally:
                await provider.close()
            wrong = [
                f"{name}: declared {getattr(self.capabilities, name).name}, the provider "
                f"says {getattr(own, name).name}"
                for name in _CHECKED_CAPABILITIES
                if (getattr(self.capabilities, name) is Support.NONE)
                != (getattr(own, name) is Support.NONE)
            ]
            assert not wrong, "the test class's capabilities differ from the provider's: " + (
                "; ".join(wrong)
            )

        self._run(scenario)

    def test_body_and_headers_round_trip(self) -> None:
        async def scenario(queue: str) -> None:
            body = b'{"greeting": "hello", "n": 1}'
            await self.put(queue, body, {"x-loafer-test": "round-trip"})
            provider = await self._started(queue)
            try:
                delivery = await self._fetch_body(provider, body, self.redelivery_timeout)
                assert self.headers_of(delivery).get("x-loafer-test") == "round-trip"
                translated = self.translator().translate(delivery.raw)
                assert translated["content"] == {"greeting": "hello", "n": 1}
                if self.capabilities.attempt_count:
                    assert delivery.attempt == 1
                await provider.settle(delivery, ACCEPT)
            finally:
                await provider.close()

        self._run(scenario)

    def test_metadata_names_the_message(self) -> None:
        """The metadata keys every provider fills (see :mod:`loafer_core.provider`):
        ``message_id`` and ``attempt`` as on the delivery, ``headers`` a mapping, and
        ``queue``, so a handler reads them the same way on every broker."""

        async def scenario(queue: str) -> None:
            with_headers, plain = b'{"n": 1}', b'{"n": 2}'  # a provider may build each apart
            await self.put(queue, with_headers, {"x-loafer-test": "metadata"})
            await self.put(queue, plain)
            provider = await self._started(queue)
            try:
                wanted = {with_headers, plain}
                deadline = time.monotonic() + self.redelivery_timeout
                while wanted:
                    remaining = deadline - time.monotonic()
                    delivery = await self._fetch_one(provider, max(0.0, remaining))
                    assert delivery is not None, f"not delivered within the timeout: {wanted}"
                    wanted.discard(self.body_of(delivery))
                    metadata = delivery.metadata
                    missing = {"message_id", "attempt", "headers", "queue"} - set(metadata)
                    assert not missing, f"metadata lacks {sorted(missing)}: {sorted(metadata)}"
                    assert metadata["message_id"] == delivery.message_id
                    assert metadata["attempt"] == delivery.attempt
                    assert isinstance(metadata["headers"], Mapping)
                    assert metadata["queue"]
                    await provider.settle(delivery, ACCEPT)
            finally:
                await provider.close()

        self._run(scenario)

    def test_accept_removes(self) -> None:
        async def scenario(queue: str) -> None:
            body = b'{"accept": true}'
            await self.put(queue, body)
            provider = await self._started(queue)
            try:
                delivery = await self._fetch_body(provider, body, self.redelivery_timeout)
                await provider.settle(delivery, ACCEPT)
                # RELEASE a marker round and make sure the accepted one never shows up again
                marker = self._marker()
                await self.put(queue, marker)
                seen = await self._fetch_body_skipping(provider, marker, forbidden=body)
                await provider.settle(seen, ACCEPT)
            finally:
                await provider.close()

        self._run(scenario)

    async def _fetch_body_skipping(
        self, provider: Provider, wanted: bytes, *, forbidden: bytes
    ) -> Delivery:
        deadline = time.monotonic() + self.redelivery_timeout
        while True:
            delivery = await self._fetch_one(provider, max(0.0, deadline - time.monotonic()))
            if delivery is None:
                raise AssertionError(f"{wanted!r} not delivered within {self.redelivery_timeout}s")
            got = self.body_of(delivery)
            assert got != forbidden, "a settled message was delivered again"
            if got == wanted:
                return delivery
            await provider.settle(delivery, ACCEPT)

    def test_retry_redelivers(self) -> None:
        async def scenario(queue: str) -> None:
            await self._settled_and_redelivered(queue, b'{"retry": true}', RETRY())

        self._run(scenario)

    def test_retry_counts_an_attempt(self) -> None:
        self._needs("attempt_count")

        async def scenario(queue: str) -> None:
            first, again = await self._settled_and_redelivered(queue, b'{"counted": true}', RETRY())
            assert first.attempt == 1, f"a first delivery has attempt {first.attempt!r}"
            assert again.attempt == 2, f"after one RETRY, attempt is {again.attempt!r}"

        self._run(scenario)

    def test_retry_with_delay_waits(self) -> None:
        """``RETRY(delay)`` comes back no sooner than the delay (less
        ``retry_delay_tolerance``) and no later than ``retry_delay_late`` past it."""
        self._needs("delayed_retry")

        async def scenario(queue: str) -> None:
            body = b'{"delayed": true}'
            await self.put(queue, body)
            provider = await self._started(queue)
            try:
                first = await self._fetch_body(provider, body, self.redelivery_timeout)
                settled_at = time.monotonic()
                await provider.settle(first, RETRY(self.retry_delay))
                latest = self.retry_delay + self.retry_delay_late
                try:
                    again = await self._fetch_body(provider, body, latest)
                except AssertionError:
                    raise AssertionError(
                        f"RETRY({self.retry_delay}) not redelivered within {latest}s: late "
                        f"by more than retry_delay_late ({self.retry_delay_late}s)"
                    ) from None
                waited = time.monotonic() - settled_at
                assert waited >= self.retry_delay * (1 - self.retry_delay_tolerance), (
                    f"redelivered after {waited:.2f}s, asked for {self.retry_delay}s: early"
                )
                await provider.settle(again, ACCEPT)
            finally:
                await provider.close()

        self._run(scenario)

    def test_reject_never_redelivers(self) -> None:
        async def scenario(queue: str) -> None:
            body = b'{"poison": true}'
            await self.put(queue, body)
            provider = await self._started(queue)
            try:
                delivery = await self._fetch_body(provider, body, self.redelivery_timeout)
                await provider.settle(delivery, REJECT("contract test: poison"))
                marker = self._marker()
                await self.put(queue, marker)
                seen = await self._fetch_body_skipping(provider, marker, forbidden=body)
                await provider.settle(seen, ACCEPT)
            finally:
                await provider.close()

        self._run(scenario)

    def test_reject_dead_letters(self) -> None:
        self._needs("dead_letter")

        async def scenario(queue: str) -> None:
            if await self.dead_letters(queue) is None:
                pytest.skip("dead_letters() is not implemented: dead letters not observable")
            body = b'{"dead": true}'
            await self.put(queue, body)
            provider = await self._started(queue)
            try:
                delivery = await self._fetch_body(provider, body, self.redelivery_timeout)
                await provider.settle(delivery, REJECT("contract test: poison"))
            finally:
                await provider.close()
            deadline = time.monotonic() + self.redelivery_timeout
            while True:
                dead = await self.dead_letters(queue)
                if dead is not None and body in dead:
                    break
                assert time.monotonic() < deadline, f"{body!r} not dead-lettered: {dead!r}"
                await asyncio.sleep(0.1)  # polling the broker's state: nothing to await

        self._run(scenario)

    def test_release_redelivers(self) -> None:
        async def scenario(queue: str) -> None:
            await self._settled_and_redelivered(queue, b'{"release": true}', RELEASE)

        self._run(scenario)

    def test_release_does_not_count_an_attempt(self) -> None:
        self._needs("attempt_count")
        self._needs("release_uncounted")

        async def scenario(queue: str) -> None:
            first, again = await self._settled_and_redelivered(
                queue, b'{"released": true}', RELEASE
            )
            assert again.attempt == first.attempt, (
                f"RELEASE counted an attempt ({first.attempt!r} -> {again.attempt!r})"
            )

        self._run(scenario)

    def test_close_is_idempotent(self) -> None:
        async def scenario(queue: str) -> None:
            provider = await self._started(queue)
            await provider.close()
            await provider.close()

        self._run(scenario)

    def test_a_failed_start_can_be_retried_and_closed(self) -> None:
        """A start that fails (here: a queue never created) may be called again on the
        same provider, as the dispatcher does, and ``close`` after it is safe (the
        dispatcher and ``loafer check`` call it). Skipped where starting on a missing
        queue succeeds (a provider that declares its queue)."""

        async def scenario(queue: str) -> None:
            missing = f"{queue}-missing"
            provider = await self.make_provider(missing)
            try:
                errors: list[BaseException] = []
                for _ in range(2):
                    try:
                        await provider.start(1)
                    except Exception as exc:
                        errors.append(exc)
                    else:
                        break
                if not errors:
                    pytest.skip("starting on a missing queue succeeds (the provider declares it)")
                assert len(errors) == 2, "a second start succeeded where the first failed"
                first, again = errors
                assert type(again) is type(first), (
                    f"a second start failed differently: {type(first).__name__}: {first} "
                    f"then {type(again).__name__}: {again} (left half-started?)"
                )
            finally:
                try:
                    await provider.close()
                    await provider.close()
                finally:
                    await self.delete_queue(missing)

        self._run(scenario)

    def test_fetch_honours_max_messages(self) -> None:
        async def scenario(queue: str) -> None:
            await self.put_many(queue, [f'{{"i": {i}}}'.encode() for i in range(6)])
            provider = await self._started(queue, capacity=6)
            held: list[Delivery] = []
            try:
                deadline = time.monotonic() + self.redelivery_timeout
                while len(held) < 6 and time.monotonic() < deadline:
                    got = list(await provider.fetch(2))
                    assert len(got) <= 2, f"fetch(2) returned {len(got)} deliveries"
                    held.extend(got)
                assert len(held) == 6
            finally:
                for d in held:
                    await provider.settle(d, ACCEPT)
                await provider.close()

        self._run(scenario)

    async def _lease_of(self, queue: str) -> float:
        """The started provider's ``lease_duration``; skips (saying why) without a lease
        short enough to wait out."""
        probe = await self._started(queue)  # a started provider knows its lease
        try:
            lease = getattr(probe, "lease_duration", None)
        finally:
            await probe.close()
        if lease is None:
            pytest.skip("the provider's deliveries hold no lease (no lease_duration)")
        if lease > self.longest_lease_to_test:
            pytest.skip(
                f"lease of {lease}s: longer than longest_lease_to_test "
                f"({self.longest_lease_to_test}s)"
            )
        return float(lease)

    def test_a_lapsed_lease_redelivers_and_counts_an_attempt(self) -> None:
        """A delivery left unsettled past its lease (a handler slower than the lease, and
        nothing extending it) is delivered again, counting an attempt where the provider
        counts attempts. Skipped for a provider without a lease."""

        async def scenario(queue: str) -> None:
            lease = await self._lease_of(queue)
            body = b'{"lapsed": true}'
            await self.put(queue, body)
            provider = await self._started(queue)
            try:
                first = await self._fetch_body(provider, body, self.redelivery_timeout)
                # neither settled nor extended: the lease lapses
                try:
                    again = await self._fetch_body(provider, body, lease + self.redelivery_timeout)
                except AssertionError:
                    raise AssertionError(
                        f"not delivered again within {lease + self.redelivery_timeout}s of a "
                        f"{lease}s lease that lapsed"
                    ) from None
                if self.capabilities.attempt_count:
                    assert first.attempt is not None and again.attempt == first.attempt + 1, (
                        f"a lapsed lease did not count an attempt ({first.attempt!r} -> "
                        f"{again.attempt!r})"
                    )
                await provider.settle(again, ACCEPT)
            finally:
                await provider.close()

        self._run(scenario)

    def test_close_gives_back_what_was_not_handed_out(self) -> None:
        """What the provider holds and has not handed out (a prefetch buffer) is available
        again once it is closed, within ``given_back_within``: not lost."""

        async def scenario(queue: str) -> None:
            total = 5
            bodies = [f'{{"held": {i}}}'.encode() for i in range(total)]
            await self.put_many(queue, bodies)
            provider = await self._started(queue, capacity=total)
            try:
                first = await self._fetch_one(provider, self.redelivery_timeout)
                assert first is not None, f"nothing delivered within {self.redelivery_timeout}s"
                await provider.settle(first, ACCEPT)
            finally:
                await provider.close()
            wanted = set(bodies) - {self.body_of(first)}
            within = self._given_back_within()
            seen = await self._collect(queue, len(wanted), within)
            assert seen == wanted, (
                f"{len(wanted - seen)} of the {len(wanted)} messages not handed out were not "
                f"available again within {within:g}s of close"
            )

        self._run(scenario)

    def test_a_cancelled_fetch_loses_nothing(self) -> None:
        """A fetch cancelled while it waits, as messages arrive, hands nothing out, and
        what it received is not lost: after ``close`` every message is available again
        (as soon as in the test above)."""

        async def scenario(queue: str) -> None:
            total = 3
            bodies = [f'{{"cancelled": {i}}}'.encode() for i in range(total)]
            provider = await self._started(queue, capacity=total)
            try:
                fetching = asyncio.ensure_future(provider.fetch(total))
                await asyncio.sleep(0)  # it waits for messages...
                await self.put_many(queue, bodies)  # ...which arrive as it is cancelled
                fetching.cancel()
                await asyncio.gather(fetching, return_exceptions=True)
                if not fetching.cancelled() and fetching.exception() is None:
                    for handed in fetching.result():  # it returned first: handed out
                        await provider.settle(handed, RELEASE)
            finally:
                await provider.close()
            within = self._given_back_within()
            seen = await self._collect(queue, total, within)
            assert seen == set(bodies), (
                f"{total - len(seen)} of {total} messages that arrived as a fetch was "
                f"cancelled were not available again within {within:g}s of close"
            )

        self._run(scenario)

    def _given_back_within(self) -> float:
        return self.given_back_within or self.redelivery_timeout

    async def _collect(self, queue: str, count: int, timeout: float) -> set[bytes]:
        """Bodies fetched (and accepted) by a new provider until ``count`` distinct ones
        arrived or ``timeout`` passed."""
        seen: set[bytes] = set()
        provider = await self._started(queue, capacity=count)
        try:
            deadline = time.monotonic() + timeout
            while len(seen) < count:
                delivery = await self._fetch_one(
                    provider, max(0.0, deadline - time.monotonic()), capacity=count
                )
                if delivery is None:
                    break
                seen.add(self.body_of(delivery))
                await provider.settle(delivery, ACCEPT)
        finally:
            await provider.close()
        return seen

    def test_settling_twice_is_harmless(self) -> None:
        """``settle`` called again for a settled delivery (the dispatcher retries a settle
        that raised) has no further effect: an ACCEPTED message stays gone, a RETRIED one
        comes back once, a REJECTED one is dead-lettered once."""
        self._run(lambda queue: self._settle_twice(queue, cut=False))

    def test_a_settle_cut_short_and_sent_again_is_not_duplicated(self) -> None:
        """A settle cancelled while in flight (a shutdown's deadline) and then sent again,
        as the dispatcher does, acts once: no duplicate of a re-published message."""
        self._run(lambda queue: self._settle_twice(queue, cut=True))

    async def _settle_twice(self, queue: str, *, cut: bool) -> None:
        tag = "cut" if cut else "twice"
        accepted, retried, rejected = (
            f'{{"{tag}": "{what}"}}'.encode() for what in ("accept", "retry", "reject")
        )
        outcomes = {accepted: ACCEPT, retried: RETRY(), rejected: REJECT("contract: poison")}
        await self.put_many(queue, list(outcomes))
        provider = await self._started(queue, capacity=3)
        try:
            held: dict[bytes, Delivery] = {}
            deadline = time.monotonic() + self.redelivery_timeout
            while len(held) < len(outcomes):
                delivery = await self._fetch_one(
                    provider, max(0.0, deadline - time.monotonic()), capacity=3
                )
                assert delivery is not None, f"only {sorted(held)} delivered"
                held[self.body_of(delivery)] = delivery
            for body, outcome in outcomes.items():
                if cut:
                    settling = asyncio.ensure_future(provider.settle(held[body], outcome))
                    await asyncio.sleep(0)  # under way, then cut short
                    settling.cancel()
                    await asyncio.gather(settling, return_exceptions=True)
                else:
                    await provider.settle(held[body], outcome)
                await provider.settle(held[body], outcome)
            again = await self._watch(
                provider, retried, {accepted, rejected}, self.redelivery_timeout, "RETRIED"
            )
            await provider.settle(again, ACCEPT)
            duplicate = await self._watch(
                provider, None, set(outcomes), self.duplicate_window, "settled"
            )
            assert duplicate is None
        finally:
            await provider.close()
        if self.capabilities.dead_letter:
            dead = await self.dead_letters(queue)
            if dead is not None:
                assert dead.count(rejected) == 1, (
                    f"dead-lettered {dead.count(rejected)} times (once expected): "
                    "the second settle published it again"
                )

    async def _watch(
        self,
        provider: Provider,
        wanted: bytes | None,
        forbidden: set[bytes],
        timeout: float,
        what: str,
    ) -> Any:
        """Fetch until ``wanted`` arrives (returned) or ``timeout`` passes (an error if
        ``wanted`` is not None, else None); a body in ``forbidden`` fails at once."""
        deadline = time.monotonic() + timeout
        while True:
            delivery = await self._fetch_one(provider, max(0.0, deadline - time.monotonic()))
            if delivery is None:
                assert wanted is None, f"the {what} message {wanted!r} not delivered again"
                return None
            body = self.body_of(delivery)
            if body == wanted:
                return delivery
            await provider.settle(delivery, ACCEPT)
            assert body not in forbidden, f"the {what} message {body!r} was delivered again"

    # -- route-level tests ----------------------------------------------------------------

    def test_concurrency_bound_holds(self) -> None:
        async def scenario(queue: str) -> None:
            total, limit = 12, 3
            await self.put_many(queue, [f'{{"i": {i}}}'.encode() for i in range(total)])
            running = 0
            peak = 0
            done: list[int] = []
            all_done = asyncio.Event()
            full = asyncio.Event()
            gate = asyncio.Event()

            async def handler(content: Any, metadata: Any) -> bool:
                nonlocal running, peak
                running += 1
                peak = max(peak, running)
                if running == limit:
                    full.set()
                try:
                    await gate.wait()
                finally:
                    running -= 1
                done.append(content["i"])
                if len(set(done)) == total:
                    all_done.set()
                return True

            route = Route(
                await self.make_provider(queue),
                handler,
                translator=self.translator(),
                max_concurrency=limit,
            )
            async with Manager([route]) as manager:
                await manager.wait_started()
                await full.wait()
                # the gate is closed: nothing more may have been fetched than the limit
                [status] = manager.status()  # the public view, not core's internals
                assert status.in_flight <= limit
                gate.set()
                await all_done.wait()
            assert peak == limit
            assert sorted(set(done)) == list(range(total))

        self._run(scenario)

    def test_many_messages_none_lost(self) -> None:
        async def scenario(queue: str) -> None:
            total = self.bulk_messages
            await self.put_many(queue, [f'{{"i": {i}}}'.encode() for i in range(total)])
            seen: set[int] = set()
            all_seen = asyncio.Event()

            async def handler(content: Any, metadata: Any) -> bool:
                seen.add(content["i"])
                if len(seen) == total:
                    all_seen.set()
                return True

            route = Route(
                await self.make_provider(queue),
                handler,
                translator=self.translator(),
                max_concurrency=50,
            )
            async with Manager([route]):
                await all_seen.wait()
            assert seen == set(range(total))

        self._run(scenario)

    def test_graceful_drain_leaves_nothing_stuck(self) -> None:
        async def scenario(queue: str) -> None:
            total, limit = 8, 2
            await self.put_many(queue, [f'{{"i": {i}}}'.encode() for i in range(total)])
            started: list[int] = []
            finished: list[int] = []
            both = asyncio.Event()
            gate = asyncio.Event()

            async def handler(content: Any, metadata: Any) -> bool:
                started.append(content["i"])
                if len(started) == limit:
                    both.set()
                await gate.wait()
                finished.append(content["i"])
                return True

            route = Route(
                await self.make_provider(queue),
                handler,
                translator=self.translator(),
                max_concurrency=limit,
            )
            manager = Manager([route], shutdown_timeout=self.timeout)
            serving = asyncio.create_task(manager.serve())
            await both.wait()
            manager.stop()
            gate.set()
            await serving
            assert sorted(finished) == sorted(started), "in-flight handlers were not finished"
            # everything not finished must be available again at once
            rest: set[int] = set()
            provider = await self._started(queue, capacity=total)
            try:
                deadline = time.monotonic() + self.redelivery_timeout
                while len(rest) < total - len(finished):
                    delivery = await self._fetch_one(
                        provider, max(0.0, deadline - time.monotonic()), capacity=total
                    )
                    assert delivery is not None, (
                        f"only {sorted(rest)} came back; expected the {total - len(finished)} "
                        "unfinished messages"
                    )
                    rest.add(self.translator().translate(delivery.raw)["content"]["i"])
                    await provider.settle(delivery, ACCEPT)
            finally:
                await provider.close()
            assert rest | set(finished) == set(range(total))
            assert not rest & set(finished), "an accepted message came back"

        self._run(scenario)

    def test_ordering_keys_in_order_one_at_a_time(self) -> None:
        self._needs("ordering_keys")

        async def scenario(queue: str) -> None:
            n = 4
            try:
                for i in range(n):
                    for key in ("a", "b"):
                        body = f'{{"k": "{key}", "i": {i}}}'.encode()
                        await self.put_keyed(queue, body, f"{queue}-{key}")
            except NotImplementedError:
                pytest.skip("put_keyed() is not implemented: ordering keys cannot be tested")
            order: dict[str, list[int]] = {"a": [], "b": []}
            running: dict[str, int] = {"a": 0, "b": 0}
            overlapped: list[str] = []
            b_started = asyncio.Event()
            all_done = asyncio.Event()

            async def handler(content: Any, metadata: Any) -> bool:
                key, i = content["k"], content["i"]
                if running[key]:
                    overlapped.append(key)
                running[key] += 1
                try:
                    if key == "b":
                        b_started.set()
                    elif i == 0:
                        # key "a" waits for key "b": only possible if keys run concurrently
                        await b_started.wait()
                    for _ in range(3):
                        await asyncio.sleep(0)  # let another of this key in, if it could
                    order[key].append(i)
                finally:
                    running[key] -= 1
                if sum(len(v) for v in order.values()) == 2 * n:
                    all_done.set()
                return True

            # room for every message at once: a provider may hand out a whole key's
            # messages in one fetch (as SQS FIFO does), and key "a" waits for key "b"
            route = Route(
                await self.make_provider(queue),
                handler,
                translator=self.translator(),
                max_concurrency=2 * n,
            )
            async with Manager([route], shutdown_timeout=self.redelivery_timeout):
                await all_done.wait()
            assert not overlapped, f"two messages of one key ran at once: {overlapped}"
            assert order == {"a": list(range(n)), "b": list(range(n))}, order

        self._run(scenario)

    def test_lease_extension_keeps_a_long_handlers_message(self) -> None:
        self._needs("lease_extension")

        async def scenario(queue: str) -> None:
            lease = await self._lease_of(queue)
            provider = await self.make_provider(queue)
            body = b'{"long": true}'
            await self.put(queue, body)
            calls = 0
            done = asyncio.Event()

            async def handler(content: Any, metadata: Any) -> bool:
                nonlocal calls
                calls += 1
                await asyncio.sleep(2.5 * lease)  # the work itself outlasts the lease
                done.set()
                return True

            route = Route(provider, handler, translator=self.translator(), max_concurrency=2)
            async with Manager([route], shutdown_timeout=self.redelivery_timeout):
                await done.wait()
            assert calls == 1, f"delivered {calls} times while its handler ran: lease lapsed"
            check = await self._started(queue)
            try:
                again = await self._fetch_one(check, 1.5 * lease)
                assert again is None, "an accepted message came back"
            finally:
                await check.close()

        self._run(scenario)

    def test_bad_input_reaches_error_handler(self) -> None:
        async def scenario(queue: str) -> None:
            bad = [
                b"\xff\xfe not utf-8 \xc3\x28",
                b'{"unterminated": ',
                b"x" * self.large_body_size,
            ]
            if self.supports_empty_body:
                bad.append(b"")
            good = b'{"good": true}'
            for body in bad:
                await self.put(queue, body)
            await self.put(queue, good)
            errors: list[type[BaseException]] = []
            handled: list[Any] = []
            finished = asyncio.Event()

            def check() -> None:
                if len(errors) == len(bad) and handled:
                    finished.set()

            async def handler(content: Any, metadata: Any) -> bool:
                handled.append(content)
                check()
                return True

            async def error_handler(exc_type: Any, exc: Any, message: Any) -> Outcome:
                errors.append(exc_type)
                check()
                return ACCEPT

            route = Route(
                await self.make_provider(queue),
                handler,
                translator=self.translator(),
                error_handler=error_handler,
                max_concurrency=5,
            )
            async with Manager([route]):
                await finished.wait()
            assert handled == [{"good": True}]
            assert len(errors) == len(bad)
            assert all(issubclass(e, ValueError) for e in errors), errors

        self._run(scenario)
