"""The idempotency middleware: duplicates skipped, a key marked only once the handler
succeeded and its forwarded publishes were confirmed, concurrent same-key deliveries,
TTLs; the in-memory store and the Redis store (against a real Redis)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from loafer_core import ConfigurationError, Manager, Outcome, ProviderError, Route
from loafer_core.context import RouteContext
from loafer_core.forward import Publish
from loafer_core.idempotency import Claim, Idempotency, MemoryStore, body_hash
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.middleware import Process
from loafer_core.outcome import OutcomeKind
from loafer_core.provider import Delivery
from loafer_core.testing import run_until_idle

K = "idempotency-key"


def outcomes(broker: MemoryBroker, queue: str = "q") -> list[OutcomeKind]:
    return [s.outcome.kind for s in broker.settlements(queue)]


class Gate:
    """A publisher whose confirms wait for ``release`` (and fail ``failures`` times)."""

    def __init__(self, failures: int = 0) -> None:
        self.release = asyncio.Event()
        self.release.set()
        self.started = asyncio.Event()
        self.failures = failures
        self.sent: list[Any] = []

    async def publish(
        self, body: Any, *, headers: Mapping[str, Any] | None = None, **options: Any
    ) -> None:
        self.started.set()
        await self.release.wait()
        if self.failures:
            self.failures -= 1
            raise ProviderError("nacked")
        self.sent.append(body)


# -- the middleware, with the memory store --------------------------------------------------


@pytest.mark.memory
async def test_a_duplicate_is_skipped_without_running_the_handler(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    calls: list[Any] = []
    for body in ("a", "a again", "b"):
        broker.publish("q", body, headers={K: body[0]})
    broker.publish("q", "no key")
    idem = Idempotency()

    async def handler(content: Any, metadata: Any) -> bool:
        calls.append(content)
        return True

    await run_until_idle(Route(provider, handler, middleware=[idem]))
    assert calls == ["a", "b", "no key"]
    assert outcomes(broker) == [OutcomeKind.ACCEPT] * 4
    assert (idem.skipped, idem.handled) == (1, 2)


@pytest.mark.memory
async def test_a_failed_attempt_releases_the_key(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    calls: list[int | None] = []
    broker.publish("q", "a", headers={K: "1"})

    async def handler(content: Any, metadata: Any) -> bool:
        calls.append(metadata.get("attempt"))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return True

    idem = Idempotency()
    await run_until_idle(Route(provider, handler, middleware=[idem], retry=None))
    assert outcomes(broker) == [OutcomeKind.RETRY, OutcomeKind.ACCEPT]
    assert len(calls) == 2 and idem.handled == 1
    broker.publish("q", "a", headers={K: "1"})  # now a duplicate
    await run_until_idle(Route(MemoryProvider(broker, "q", wait=0.2), handler, middleware=[idem]))
    assert len(calls) == 2 and idem.skipped == 1


@pytest.mark.memory
async def test_the_key_is_marked_only_once_the_forwarded_publish_is_confirmed(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    target = Gate(failures=1)
    store = MemoryStore()
    broker.publish("q", "a", headers={K: "1"})
    idem = Idempotency(store, namespace="ns")

    async def handler(content: Any, metadata: Any) -> Publish:
        return Publish(content)

    route = Route(provider, handler, publish_to=target, middleware=[idem], retry=None)
    target.release.clear()
    async with Manager([route]):
        await asyncio.wait_for(target.started.wait(), 5)
        # handled, its publish not confirmed: the key is claimed, not done
        assert await store.claim("ns:1", "probe", 1) is Claim.BUSY
        target.release.set()
        await broker.wait_idle("q", timeout=5)
    # the first publish was nacked: RETRY, the key released, the retry forwarded it
    assert outcomes(broker) == [OutcomeKind.RETRY, OutcomeKind.ACCEPT]
    assert target.sent == ["a"]
    assert await store.claim("ns:1", "probe", 1) is Claim.DONE


@pytest.mark.memory
async def test_concurrent_deliveries_with_one_key_run_the_handler_once(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    started = asyncio.Event()
    finish = asyncio.Event()
    calls: list[str] = []
    broker.publish("q", "first", headers={K: "same"})
    broker.publish("q", "second", headers={K: "same"})

    async def handler(content: Any, metadata: Any) -> bool:
        calls.append(content)
        started.set()
        await finish.wait()
        return True

    idem = Idempotency(lock_ttl=0.2)  # the busy one comes back after lock_ttl
    first_outcome = asyncio.Event()

    async def watch(delivery: Delivery, route: RouteContext, call_next: Process) -> Outcome:
        outcome = await call_next(delivery)
        first_outcome.set()
        return outcome

    route = Route(provider, handler, middleware=[watch, idem], retry=None, max_concurrency=2)
    async with Manager([route]):
        await asyncio.wait_for(started.wait(), 5)
        await asyncio.wait_for(first_outcome.wait(), 5)  # the second: its key is busy
        assert idem.busy >= 1 and calls == ["first"]
        finish.set()
        await broker.wait_idle("q", timeout=5)
    assert calls == ["first"]
    assert outcomes(broker).count(OutcomeKind.ACCEPT) == 2
    assert idem.skipped == 1


@pytest.mark.memory
async def test_body_hash_keys_identical_bodies(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    calls: list[Any] = []
    for body in (b"x", b"x", b"y"):
        broker.publish("q", body)

    async def handler(content: Any, metadata: Any) -> bool:
        calls.append(content)
        return True

    await run_until_idle(Route(provider, handler, middleware=[Idempotency(key=body_hash)]))
    assert calls == [b"x", b"y"]


@pytest.mark.memory
async def test_memory_store_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("loafer_core.idempotency.time.monotonic", lambda: now[0])
    store = MemoryStore()
    assert await store.claim("k", "t1", 30) is Claim.NEW
    assert await store.claim("k", "t2", 30) is Claim.BUSY
    now[0] += 31  # the claim's lock expired (a crashed process): claimable again
    assert await store.claim("k", "t2", 30) is Claim.NEW
    await store.release("k", "t1")  # not t1's claim any more: kept
    assert await store.claim("k", "t3", 30) is Claim.BUSY
    await store.complete("k", "t2", 60)
    assert await store.claim("k", "t3", 30) is Claim.DONE
    now[0] += 61
    assert await store.claim("k", "t3", 30) is Claim.NEW


@pytest.mark.memory
async def test_memory_store_purges_and_bounds_its_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr("loafer_core.idempotency.time.monotonic", lambda: now[0])
    store = MemoryStore(max_keys=1500)
    for i in range(1500):
        await store.complete(f"old{i}", "t", 10)
    now[0] = 20
    for i in range(3000):
        await store.claim(f"new{i}", "t", 100)
    assert len(store) <= 3000  # the expired ones went, and it stays bounded
    assert await store.claim("new2999", "x", 1) is Claim.BUSY


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"store": MemoryStore}, "expected a store"),
        ({"store": object()}, "expected a store"),
        ({"key": ""}, "empty header name"),
        ({"key": 3}, "header name or a function"),
        ({"ttl": 0}, "ttl"),
        ({"lock_ttl": float("inf")}, "lock_ttl"),
        ({"on_duplicate": True}, "Outcome"),
    ],
)
def test_arguments_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Idempotency(**kwargs)


def test_header_lookup_is_case_insensitive_and_decodes_bytes() -> None:
    idem = Idempotency(key="Idempotency-Key")
    assert idem.key(Delivery(raw=b"", metadata={"headers": {"idempotency-key": b"k"}})) == "k"
    assert idem.key(Delivery(raw=b"", metadata={"headers": {"Idempotency-Key": 7}})) == "7"
    assert idem.key(Delivery(raw=b"", metadata={})) is None


# -- the Redis store, against a real Redis --------------------------------------------------


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[Any]:
    from loafer_core.ext.redis_store import RedisStore

    store = RedisStore(redis_url, prefix=f"loafer-test-{uuid.uuid4().hex[:10]}:")
    await store.start()
    yield store
    client = store._redis()
    keys = [key async for key in client.scan_iter(match=f"{store.prefix}*")]
    if keys:
        await client.delete(*keys)
    await store.close()


@pytest.mark.redis
async def test_redis_claim_complete_release(redis_store: Any) -> None:
    client = redis_store._redis()
    name = redis_store.prefix + "k"
    assert await redis_store.claim("k", "t1", 5) is Claim.NEW
    assert 0 < await client.pttl(name) <= 5000
    assert await redis_store.claim("k", "t2", 5) is Claim.BUSY
    await redis_store.release("k", "t2")  # not its claim: kept
    assert await redis_store.claim("k", "t2", 5) is Claim.BUSY
    await redis_store.release("k", "t1")
    assert await redis_store.claim("k", "t2", 5) is Claim.NEW
    await redis_store.complete("k", "t2", 60)
    assert 55_000 < await client.pttl(name) <= 60_000
    assert await redis_store.claim("k", "t3", 5) is Claim.DONE
    await redis_store.release("k", "t3")  # done is never released
    assert await redis_store.claim("k", "t3", 5) is Claim.DONE


@pytest.mark.redis
async def test_redis_a_lapsed_claim_can_be_taken_again(redis_store: Any) -> None:
    assert await redis_store.claim("k", "crashed", 0.2) is Claim.NEW
    assert await redis_store.claim("k", "next", 5) is Claim.BUSY
    await asyncio.sleep(0.3)  # the lock's TTL passing is what is tested
    assert await redis_store.claim("k", "next", 5) is Claim.NEW


@pytest.mark.redis
async def test_redis_one_claim_wins_among_concurrent_stores(
    redis_store: Any, redis_url: str
) -> None:
    from loafer_core.ext.redis_store import RedisStore

    others = [RedisStore(redis_url, prefix=redis_store.prefix) for _ in range(4)]
    try:
        claims = await asyncio.gather(
            *(store.claim("same", f"t{i}", 5) for i, store in enumerate(others * 5))
        )
    finally:
        for store in others:
            await store.close()
    assert claims.count(Claim.NEW) == 1 and claims.count(Claim.BUSY) == 19


@pytest.mark.redis
async def test_redis_shared_between_routes_of_two_managers(
    redis_store: Any, broker: MemoryBroker
) -> None:
    """Two consumers (two managers, as two processes would be) share the Redis store: each
    key is handled once between them."""
    calls: list[Any] = []
    broker.declare("r")
    for i in range(1, 51):
        broker.publish("q", i, headers={K: str(i)})
        broker.publish("r", i, headers={K: str(i)})

    async def handler(content: Any, metadata: Any) -> bool:
        calls.append(content)
        await asyncio.sleep(0)
        return True

    def route(queue: str) -> Route:
        idem = Idempotency(redis_store, namespace="orders", lock_ttl=0.5)  # busy: back in 0.5s
        return Route(MemoryProvider(broker, queue, wait=0.2), handler, middleware=[idem])

    await asyncio.gather(run_until_idle(route("q")), run_until_idle(route("r")))
    assert sorted(calls) == list(range(1, 51))


@pytest.mark.redis
async def test_redis_unreachable_retries_the_message_and_hides_the_password(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    from loafer_core.ext.redis_store import RedisStore

    store = RedisStore("redis://:s3cret@127.0.0.1:1/0", timeout=1)
    with pytest.raises(ProviderError) as caught:
        await store.claim("k", "t", 1)
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)
    assert "s3cret" not in repr(store)
    calls: list[Any] = []
    broker.publish("q", "a", headers={K: "1"})

    async def handler(content: Any, metadata: Any) -> bool:
        calls.append(content)
        return True

    idem = Idempotency(store)
    route = Route(provider, handler, middleware=[idem], max_attempts=2, retry=None)
    await run_until_idle(route)
    assert calls == []  # never handled unguarded: retried, then past max_attempts
    assert outcomes(broker) == [OutcomeKind.RETRY, OutcomeKind.REJECT]
    assert "could not claim" in caplog.text and "s3cret" not in caplog.text
    await store.close()


@pytest.mark.redis
async def test_redis_a_store_shared_by_two_managers_stays_open_until_both_closed(
    redis_url: str,
) -> None:
    """Found by CI: two managers sharing a store, the first to stop closed it under the
    other's calls; redis-py reconnected behind the close and left the connection open."""
    from loafer_core.ext.redis_store import RedisStore

    store = RedisStore(redis_url, prefix=f"loafer-test-{uuid.uuid4().hex[:10]}:")
    await store.start()
    await store.start()  # a second manager
    client = store._redis()
    await store.close()  # the first manager stops
    assert store._redis() is client  # still open for the other
    assert await store.claim("k", "t", 1) is Claim.NEW
    await store.release("k", "t")
    await store.close()  # the last one
    assert not _connected(client)


@pytest.mark.redis
async def test_redis_close_waits_for_the_calls_under_way(redis_url: str) -> None:
    from loafer_core.ext.redis_store import RedisStore

    store = RedisStore(redis_url, prefix=f"loafer-test-{uuid.uuid4().hex[:10]}:")
    client = store._redis()
    claims = [asyncio.create_task(store.claim(f"k{i}", "t", 1)) for i in range(5)]
    await asyncio.sleep(0)  # the claims are under way: sent, not answered
    await asyncio.wait_for(store.close(), 10)
    assert [await claim for claim in claims] == [Claim.NEW] * 5
    assert not _connected(client)  # nothing reopened behind the close
    keys = [store.prefix + f"k{i}" for i in range(5)]
    cleanup = store._redis()
    await cleanup.delete(*keys)
    await store.close()


def _connected(client: Any) -> bool:
    pool = client.connection_pool
    connections = [*pool._available_connections, *pool._in_use_connections]
    return any(connection.is_connected for connection in connections)


def test_redis_store_rejects_a_non_redis_url() -> None:
    from loafer_core.ext.redis_store import RedisStore

    with pytest.raises(ConfigurationError, match="redis://"):
        RedisStore("http://:pw@127.0.0.1:6379")


# -- review: bounds, keys that cannot be taken, a store failing mid-way, cancellation -------


async def _handled(calls: list[Any], content: Any) -> bool:
    calls.append(content)
    return True


@pytest.mark.memory
async def test_memory_store_never_holds_more_than_max_keys() -> None:
    store = MemoryStore(max_keys=100)
    for i in range(5000):
        assert await store.claim(f"k{i}", "t", 60) is Claim.NEW
        await store.complete(f"k{i}", "t", 3600)
        assert len(store) <= 100
    assert await store.claim("k4999", "t", 60) is Claim.DONE  # the newest are kept
    assert await store.claim("k0", "t", 60) is Claim.NEW  # the oldest went


def test_memory_store_max_keys_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="max_keys"):
        MemoryStore(max_keys=0)


@pytest.mark.memory
async def test_a_key_function_failing_is_an_error_of_the_message_bounded_by_max_attempts(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: an internal error, logged with its traceback on every delivery, and
    RETRIED for ever (max_attempts is checked inside the chain, never reached)."""
    calls: list[Any] = []
    for i in range(1, 21):
        broker.publish("q", i)

    def broken(delivery: Delivery) -> str:
        raise ValueError("this body has no order id")

    async def handler(content: Any, metadata: Any) -> bool:
        return await _handled(calls, content)

    route = Route(
        provider, handler, middleware=[Idempotency(key=broken)], max_attempts=2, retry=None
    )
    await run_until_idle(route, timeout=10)
    assert calls == []
    assert outcomes(broker).count(OutcomeKind.REJECT) == 20
    assert route.message_errors == 40
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert 1 <= len(errors) <= 2
    assert "idempotency key" in errors[0].getMessage()


@pytest.mark.memory
async def test_a_message_without_its_key_is_handled_and_that_is_said_once(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Any] = []
    for i in (1, 2, 3):
        broker.publish("q", i, headers={"other": "x"})

    async def handler(content: Any, metadata: Any) -> bool:
        return await _handled(calls, content)

    idem = Idempotency(key="order-id")
    await run_until_idle(Route(provider, handler, middleware=[idem]))
    assert calls == [1, 2, 3]
    said = [r for r in caplog.records if "without deduplication" in r.getMessage()]
    assert len(said) == 1 and "'order-id'" in said[0].getMessage()
    assert said[0].levelno == logging.WARNING
    assert idem.unkeyed == 3


@pytest.mark.memory
async def test_a_lock_ttl_not_above_the_handler_timeout_is_warned_about(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    for i in (1, 2, 3):
        broker.publish("q", i, headers={K: str(i)})

    async def handler(content: Any, metadata: Any) -> bool:
        return True

    class NoRenewal(MemoryStore):
        extend = None  # a store that cannot renew its claims

    idem = Idempotency(NoRenewal(), lock_ttl=5)
    await run_until_idle(Route(provider, handler, middleware=[idem], handler_timeout=10))
    renewing = Idempotency(lock_ttl=5)  # the memory store renews: no warning
    broker.publish("q", 4, headers={K: "4"})
    await run_until_idle(
        Route(MemoryProvider(broker, "q"), handler, middleware=[renewing], handler_timeout=10)
    )
    said = [r for r in caplog.records if "lock_ttl" in r.getMessage()]
    assert len(said) == 1 and "handler_timeout" in said[0].getMessage()


class FailingAfterClaim(MemoryStore):
    """Claims work; marking and releasing fail (Redis going away mid-way)."""

    async def complete(self, key: str, token: str, ttl: float) -> None:
        raise ProviderError("Redis at redis://127.0.0.1:6379/0: SET failed: ConnectionError")

    async def release(self, key: str, token: str) -> None:
        raise ProviderError("Redis at redis://127.0.0.1:6379/0: release failed: ConnectionError")


@pytest.mark.memory
async def test_a_store_failing_mid_way_logs_at_a_bounded_rate(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Any] = []
    for i in range(1, 31):
        broker.publish("q", i, headers={K: str(i)})
        broker.publish("q", -i, headers={K: f"r{i}"})

    async def handler(content: Any, metadata: Any) -> bool:
        calls.append(content)
        return content > 0  # the negative ones fail: their claim is released

    route = Route(
        provider,
        handler,
        middleware=[Idempotency(FailingAfterClaim(), lock_ttl=0.001)],
        max_attempts=1,
        retry=None,
    )
    await run_until_idle(route)
    assert outcomes(broker).count(OutcomeKind.ACCEPT) == 30  # handled: accepted anyway
    lines = [r for r in caplog.records if r.name == "loafer_core.idempotency"]
    assert 2 <= len(lines) <= 4, [r.getMessage()[:80] for r in lines]


class ClaimWithoutReply(MemoryStore):
    """The claim is made, and its reply never comes (cut by a forced shutdown)."""

    def __init__(self) -> None:
        super().__init__()
        self.claimed = asyncio.Event()

    async def claim(self, key: str, token: str, lock_ttl: float) -> Claim:
        claim = await super().claim(key, token, lock_ttl)
        self.claimed.set()
        await asyncio.Event().wait()
        return claim


@pytest.mark.memory
async def test_a_claim_cut_short_is_released(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    """Else the key stays busy for lock_ttl: every redelivery meanwhile is RETRIED (and
    counts against max_attempts) although no one handles it."""
    store = ClaimWithoutReply()
    broker.publish("q", "a", headers={K: "1"})

    async def handler(content: Any, metadata: Any) -> bool:
        return True

    route = Route(provider, handler, middleware=[Idempotency(store, namespace="ns")])
    async with asyncio.timeout(10):
        async with Manager([route], shutdown_timeout=0.1):
            await asyncio.wait_for(store.claimed.wait(), 5)
    assert broker.depth("q") == 1  # released
    assert await MemoryStore.claim(store, "ns:1", "next", 60) is Claim.NEW


@pytest.mark.memory
async def test_a_huge_key_is_stored_hashed_and_logged_short(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "loafer_core.idempotency")
    calls: list[Any] = []
    huge = "x" * 1_000_000
    broker.publish("q", "a", headers={K: huge})
    broker.publish("q", "b", headers={K: huge})
    broker.publish("q", "c", headers={K: huge[:-1] + "y"})

    async def handler(content: Any, metadata: Any) -> bool:
        return await _handled(calls, content)

    store = MemoryStore()
    await run_until_idle(Route(provider, handler, middleware=[Idempotency(store)]))
    assert calls == ["a", "c"]  # still the same key for the same value, not for another
    assert max(len(key) for key in store._keys) < 200
    assert "skipped" in caplog.text and len(caplog.text) < 5_000


@pytest.mark.redis
async def test_redis_refused_credentials_are_a_configuration_error(redis_url: str) -> None:
    """Before: a ProviderError like a network blip: every message RETRIED, then
    dead-lettered past max_attempts, for a wrong password."""
    from urllib.parse import urlsplit

    from loafer_core.ext.redis_store import RedisStore

    parts = urlsplit(redis_url)
    url = (
        f"redis://loafer-no-such-user-{uuid.uuid4().hex[:6]}:s3cret@{parts.hostname}:{parts.port}/0"
    )
    store = RedisStore(url, timeout=2)
    try:
        with pytest.raises(ConfigurationError) as caught:
            await store.start()
        assert "s3cret" not in str(caught.value) and "credentials" in str(caught.value)
        with pytest.raises(ConfigurationError):
            await store.claim("k", "t", 1)
    finally:
        await store.close()


def test_redis_store_url_with_a_bad_port_is_refused_without_its_password() -> None:
    """Before: accepted; repr() raised ValueError, and every claim failed with it."""
    from loafer_core.ext.redis_store import RedisStore

    with pytest.raises(ConfigurationError, match="port") as caught:
        RedisStore("redis://:s3cret@127.0.0.1:63a9/0")
    assert "s3cret" not in str(caught.value)


@pytest.mark.memory
async def test_a_key_left_claimed_by_a_crashed_consumer_is_handled_once_its_claim_lapses(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    """Before: the redeliveries found the key busy and were retried with the route's short
    policy delays, so max_attempts ran out while the dead consumer's claim held: the
    message was dead-lettered without ever being handled. A busy key now puts the
    delivery off by lock_ttl, and never REJECTS it."""
    from loafer_core.policy import RetryPolicy

    calls: list[Any] = []
    store = MemoryStore()
    assert await store.claim("ns:1", "killed-mid-handler", 0.5) is Claim.NEW
    broker.publish("q", "a", headers={K: "1"})

    async def handler(content: Any, metadata: Any) -> bool:
        return await _handled(calls, content)

    idem = Idempotency(store, namespace="ns", lock_ttl=0.5)
    route = Route(
        provider,
        handler,
        middleware=[idem],
        max_attempts=3,
        retry=RetryPolicy(initial=0.01, factor=1, maximum=0.01),
    )
    await run_until_idle(route, timeout=10)
    assert calls == ["a"]
    assert outcomes(broker) == [OutcomeKind.RETRY, OutcomeKind.ACCEPT]
    [busy] = [s.outcome for s in broker.settlements("q")][:1]
    assert busy.delay == 0.5


@pytest.mark.redis
async def test_a_manager_starts_while_redis_is_not_reachable_yet(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    """Like a broker not reachable at boot (containers starting together): logged, and
    the messages are RETRIED until it answers. Before: the manager refused to start."""
    from loafer_core.ext.redis_store import RedisStore

    store = RedisStore("redis://:s3cret@127.0.0.1:1/0", timeout=1)
    broker.publish("q", "a", headers={K: "1"})

    async def handler(content: Any, metadata: Any) -> bool:
        return True

    route = Route(provider, handler, middleware=[Idempotency(store)], max_attempts=1, retry=None)
    manager = Manager([route])
    manager.services.append(store)
    async with asyncio.timeout(10):
        async with manager:
            await manager.wait_started()
            await broker.wait_idle("q", timeout=5)
    assert outcomes(broker) == [OutcomeKind.REJECT]  # retried: past max_attempts
    assert "not reachable at start-up" in caplog.text and "s3cret" not in caplog.text


@pytest.mark.memory
async def test_a_key_function_giving_a_number_keys_by_its_text(
    broker: MemoryBroker, provider: MemoryProvider
) -> None:
    """Before: TypeError (len() of an int) on every delivery, never handled."""
    calls: list[Any] = []
    for body in ("a", "a again"):
        broker.publish("q", body, headers={"n": 7})

    async def handler(content: Any, metadata: Any) -> bool:
        return await _handled(calls, content)

    def order_number(delivery: Delivery) -> Any:
        return delivery.metadata["headers"]["n"]

    idem = Idempotency(key=order_number)
    await run_until_idle(Route(provider, handler, middleware=[idem], max_attempts=1))
    assert calls == ["a"] and idem.skipped == 1


@pytest.mark.redis
async def test_the_manager_opens_and_closes_the_store_of_an_idempotency_middleware(
    redis_store: Any, redis_url: str, broker: MemoryBroker, provider: MemoryProvider
) -> None:
    """Before: a store not added to manager.services by hand was never checked at
    start-up, and its connections never closed."""
    from loafer_core.ext.redis_store import RedisStore

    store = RedisStore(redis_url, prefix=redis_store.prefix)  # not started by a fixture
    broker.publish("q", "a", headers={K: "1"})

    async def handler(content: Any, metadata: Any) -> bool:
        return True

    route = Route(provider, handler, middleware=[Idempotency(store)])
    manager = Manager([route], middleware=[Idempotency(store, namespace="other")])
    async with asyncio.timeout(10):
        async with manager:
            await manager.wait_started()
            assert store._client is not None  # opened: checked at start-up
            await broker.wait_idle("q", timeout=5)
    assert outcomes(broker) == [OutcomeKind.ACCEPT]
    assert store._client is None  # closed after the drain (once)
    assert Idempotency().services == []  # the memory store needs nothing


async def _claim_held_while_handler_runs(store: Any, claim_of: Any) -> None:
    """A handler running 3x lock_ttl keeps its claim: a duplicate arriving meanwhile
    finds the key busy. Before: the claim lapsed after lock_ttl, the duplicate ran."""
    broker = MemoryBroker(history=10)
    broker.publish("q", "a", headers={K: "1"})
    started, finish = asyncio.Event(), asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        started.set()
        await finish.wait()
        return True

    # lock_ttl 0.6 s, renewed every 0.2 s: a 0.3 s claim lapsed once on a machine loaded
    # by several test runs (a renewal held up by the busy event loop)
    idem = Idempotency(store, namespace="ns", lock_ttl=0.6)
    route = Route(MemoryProvider(broker, "q", wait=0.1), handler, middleware=[idem])
    async with asyncio.timeout(15):
        async with Manager([route]):
            try:
                await asyncio.wait_for(started.wait(), 5)
                await asyncio.sleep(1.8)  # three lock_ttl: time passing is what is tested
                assert await claim_of("ns:1", "duplicate") is Claim.BUSY
            finally:
                finish.set()
            await broker.wait_idle("q", timeout=5)
    assert await claim_of("ns:1", "duplicate") is Claim.DONE
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "loafer:idempotency-renewal"]


@pytest.mark.memory
async def test_a_claim_is_renewed_while_its_handler_runs() -> None:
    store = MemoryStore()
    await _claim_held_while_handler_runs(
        store, lambda key, token: MemoryStore.claim(store, key, token, 5)
    )


@pytest.mark.redis
async def test_a_redis_claim_is_renewed_while_its_handler_runs(redis_store: Any) -> None:
    await _claim_held_while_handler_runs(
        redis_store, lambda key, token: redis_store.claim(key, token, 5)
    )


@pytest.mark.memory
async def test_a_claim_lost_while_its_handler_runs_is_said(
    broker: MemoryBroker, provider: MemoryProvider, caplog: pytest.LogCaptureFixture
) -> None:
    class Stalled(MemoryStore):
        async def extend(self, key: str, token: str, lock_ttl: float) -> bool:
            return False  # the claim lapsed meanwhile (the process stalled) and was taken

    renewed_once = asyncio.Event()
    store = Stalled()
    original = store.extend

    async def extend(key: str, token: str, lock_ttl: float) -> bool:
        try:
            return await original(key, token, lock_ttl)
        finally:
            renewed_once.set()

    store.extend = extend  # type: ignore[method-assign]
    broker.publish("q", "a", headers={K: "1"})

    async def handler(content: Any, metadata: Any) -> bool:
        await asyncio.wait_for(renewed_once.wait(), 5)
        return True

    idem = Idempotency(store, lock_ttl=0.15)
    await run_until_idle(Route(provider, handler, middleware=[idem]), timeout=10)
    assert outcomes(broker) == [OutcomeKind.ACCEPT]
    assert "the claim had lapsed" in caplog.text
