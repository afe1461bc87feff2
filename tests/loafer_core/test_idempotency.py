"""The idempotency middleware: duplicates skipped, a key marked only once the handler
succeeded and its forwarded publishes were confirmed, concurrent same-key deliveries,
TTLs; the in-memory store and the Redis store (against a real Redis)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from loafer_core import ConfigurationError, Manager, Outcome, ProviderError, Route
from loafer_core.forward import Publish
from loafer_core.idempotency import Claim, Idempotency, MemoryStore, body_hash
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.middleware import Process
from loafer_core.outcome import OutcomeKind
from loafer_core.provider import Delivery
from loafer_core.testing import run_until_idle
from tests.brokers import port_open, resolve

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

    idem = Idempotency()
    first_outcome = asyncio.Event()

    async def watch(delivery: Delivery, route: Route, call_next: Process) -> Outcome:
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


def _local_redis() -> str | None:
    return "redis://127.0.0.1:6379/0" if port_open("127.0.0.1", 6379) else None


@pytest.fixture(scope="session")
def redis_url() -> str:
    pytest.importorskip("redis", reason="redis-py is not installed (extra 'redis')")
    return resolve(env_var="LOAFER_TEST_REDIS_URL", local=_local_redis, what="Redis server")


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
        idem = Idempotency(redis_store, namespace="orders")
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


def test_redis_store_rejects_a_non_redis_url() -> None:
    from loafer_core.ext.redis_store import RedisStore

    with pytest.raises(ConfigurationError, match="redis://"):
        RedisStore("http://:pw@127.0.0.1:6379")
