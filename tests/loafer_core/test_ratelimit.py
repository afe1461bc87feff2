"""Rate limits: the reserving token bucket (a fake clock), the middleware on a route,
and the Redis bucket shared by several processes' buckets against a real Redis."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import pytest

from loafer_core import RELEASE, ConfigurationError, Manager, Route
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.ratelimit import Bucket, RateLimit, TokenBucket

pytestmark = pytest.mark.memory


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_one_token_per_interval_in_arrival_order() -> None:
    clock = Clock()
    bucket = TokenBucket(10, burst=3, clock=clock)  # one token per 0.1 s
    waits = [bucket.take() for _ in range(6)]
    assert waits == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3])
    clock.now += 0.35  # three tokens became due meanwhile, no more: the bucket is empty
    assert bucket.take() == pytest.approx(0.05)


def test_a_quiet_spell_refills_no_more_than_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(5, per=1, burst=2, clock=clock)
    assert [bucket.take() for _ in range(2)] == [0, 0]
    clock.now += 3600
    assert [bucket.take() for _ in range(3)] == pytest.approx([0, 0, 0.2])


def test_a_caller_that_would_wait_too_long_takes_nothing() -> None:
    clock = Clock()
    bucket = TokenBucket(1, burst=1, clock=clock)
    assert bucket.take(max_wait=0.5) == 0
    assert bucket.take(max_wait=0.5) is None  # due in 1 s: refused, not reserved
    assert bucket.take(max_wait=0.5) is None
    clock.now += 0.6
    assert bucket.take(max_wait=0.5) == pytest.approx(0.4)  # the refusals pushed nothing back


def test_the_default_burst_is_one_seconds_worth() -> None:
    assert TokenBucket(20).burst == 20
    assert TokenBucket(600, per=60).burst == 10
    assert TokenBucket(0.5).burst == 1


@pytest.mark.parametrize(
    ("args", "kwargs", "says"),
    [
        ((0,), {}, "rate=...): expected a number > 0, got 0"),
        ((float("inf"),), {}, "rate=..."),
        ((True,), {}, "rate=..."),
        ((5, -1), {}, "per=...): expected a number > 0, got -1"),
        ((5,), {"burst": 0}, "burst=...): expected a whole number >= 1, got 0"),
        ((5,), {"burst": 1.5}, "burst=..."),
    ],
)
def test_wrong_settings_say_what_to_fix(args: Any, kwargs: Any, says: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(f"TokenBucket({says}")):
        TokenBucket(*args, **kwargs)


def test_the_middleware_takes_a_rate_or_a_bucket() -> None:
    with pytest.raises(ConfigurationError, match="give a rate"):
        RateLimit()
    with pytest.raises(ConfigurationError, match="not both"):
        RateLimit(5, bucket=TokenBucket(5))
    with pytest.raises(ConfigurationError, match=r"bucket=...\): expected an object with async"):
        RateLimit(bucket="redis://x")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_wait"):
        RateLimit(5, max_wait=0)
    assert isinstance(TokenBucket(1), Bucket)


async def test_a_route_handles_no_faster_than_the_rate() -> None:
    broker = MemoryBroker()
    broker.publish_many("q", list(range(1, 31)))
    started: list[float] = []

    async def handler(content: Any, metadata: Any) -> bool:
        started.append(time.monotonic())
        return True

    route = Route(
        MemoryProvider(broker, "q"),
        handler,
        max_concurrency=10,
        middleware=[RateLimit(50, burst=1)],
    )
    async with Manager([route]):
        await broker.wait_idle("q", timeout=10)
    assert len(started) == 30
    rate = (len(started) - 1) / (started[-1] - started[0])
    assert 45 <= rate <= 50 * 1.02, rate  # 50 per second: never faster, hardly slower
    # never ahead of the schedule: the k-th start no earlier than k - 1 intervals after
    # the first (a late start may be followed by a quick one: tokens keep their times)
    ahead = [k for k, t in enumerate(started) if t - started[0] < (k - 1) * 0.02 - 0.002]
    assert not ahead, ahead


async def test_a_delivery_that_would_wait_past_max_wait_is_released_uncounted() -> None:
    broker = MemoryBroker(history=100)
    broker.publish_many("q", ["a", "b", "c"])
    handled: list[Any] = []
    waits: list[float] = []

    async def handler(content: Any, metadata: Any) -> bool:
        handled.append(content)
        return True

    # one token per 0.4 s, at most 0.25 s of waiting: of three fetched at once, one runs,
    # the others go back to the queue and come back later
    limit = RateLimit(2.5, burst=1, max_wait=0.25, on_wait=waits.append)
    route = Route(MemoryProvider(broker, "q"), handler, max_concurrency=3, middleware=[limit])
    async with Manager([route]):
        await broker.wait_idle("q", timeout=10)
    assert sorted(handled) == ["a", "b", "c"]
    outcomes = [s.outcome for s in broker.settlements("q")]
    assert RELEASE in outcomes
    assert all(w <= 0.25 for w in waits)


# -- the Redis bucket ------------------------------------------------------------------------


@pytest.fixture
async def redis_bucket_key(redis_url: str) -> Any:
    import redis.asyncio

    key = f"test-{uuid.uuid4().hex[:12]}"
    yield key
    client = redis.asyncio.Redis.from_url(redis_url)
    await client.delete(f"loafer:rate:{key}")
    await client.aclose()


@pytest.mark.redis
async def test_buckets_of_one_key_share_one_rate(redis_url: str, redis_bucket_key: str) -> None:
    from loafer_core.ext.redis_rate import RedisTokenBucket

    buckets = [
        RedisTokenBucket(redis_url, key=redis_bucket_key, rate=40, burst=1) for _ in range(3)
    ]
    for bucket in buckets:
        await bucket.start()
    took: list[float] = []

    async def take(bucket: RedisTokenBucket) -> None:
        for _ in range(20):
            wait = await bucket.reserve()
            assert wait is not None
            await asyncio.sleep(wait)
            took.append(time.monotonic())

    try:
        async with asyncio.timeout(10):
            await asyncio.gather(*(take(b) for b in buckets))
    finally:
        for bucket in buckets:
            await bucket.close()
    took.sort()
    rate = (len(took) - 1) / (took[-1] - took[0])
    assert 40 * 0.9 <= rate <= 40 * 1.1, rate


@pytest.mark.redis
async def test_the_redis_bucket_refuses_past_max_wait_and_hides_the_password(
    redis_url: str, redis_bucket_key: str
) -> None:
    from loafer_core.ext.redis_rate import RedisTokenBucket

    bucket = RedisTokenBucket(redis_url, key=redis_bucket_key, rate=1, burst=1)
    await bucket.start()
    try:
        assert await bucket.reserve(0.5) == 0
        assert await bucket.reserve(0.5) is None
        wait = await bucket.reserve(5)
        assert wait is not None and 0.5 < wait <= 1.0
    finally:
        await bucket.close()
    secret = RedisTokenBucket("redis://:hunter2@127.0.0.1:1/0", key="k", rate=1)
    assert "hunter2" not in repr(secret)
    assert "rate=1/1s" in repr(secret)
