"""Delayed publish on Redis: the sorted set beside the stream and its movers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from loafer_core.outcome import Outcome
from loafer_core.testing import eventually
from loafer_redis import RedisProvider, RedisPublisher
from loafer_redis._scheduled import Mover, key_of, pack
from tests.loafer_redis.conftest import RedisAdmin

pytestmark = pytest.mark.redis


async def test_a_delayed_message_waits_beside_the_stream_then_is_added_once(
    admin: RedisAdmin, redis_url: str
) -> None:
    stream = await admin.stream(group=None)
    body = b"bin\x00ary:12:body"
    async with RedisPublisher(stream, url=redis_url) as publisher:
        started = time.monotonic()
        ref = await publisher.publish(body, headers={"k": "v:1", "n": 7}, delay=0.6)
        assert ref.startswith("scheduled:")
        assert await admin.client.xlen(stream) == 0
        assert await admin.client.zcard(key_of(stream)) == 1

        async def added() -> bool:
            return bool(await admin.client.xlen(stream))

        await eventually(added, timeout=10, what="the scheduled entry added")
    assert time.monotonic() - started >= 0.6
    entries: Any = await admin.client.xrange(stream)
    [(_, fields)] = entries
    assert fields == {b"body": body, b"k": b"v:1", b"n": b"7"}
    assert await admin.client.zcard(key_of(stream)) == 0


async def test_a_provider_moves_what_a_closed_publisher_scheduled(
    admin: RedisAdmin, redis_url: str
) -> None:
    stream = await admin.stream()
    async with RedisPublisher(stream, url=redis_url) as publisher:
        await publisher.publish_many([b"a", b"b", b"c"], delay=0.5)
    assert await admin.client.zcard(key_of(stream)) == 3
    consumer = RedisProvider(stream, url=redis_url, block=0.2)
    await consumer.start(10)
    try:
        got: list = []
        async with asyncio.timeout(10):
            while len(got) < 3:
                got += await consumer.fetch(10)
        assert [d.body for d in got] == [b"a", b"b", b"c"]  # publish order kept
        for delivery in got:
            await consumer.settle(delivery, Outcome.ACCEPT)
    finally:
        await consumer.close()
    assert await admin.client.xlen(stream) == 3


async def test_movers_racing_add_each_member_once(admin: RedisAdmin, redis_url: str) -> None:
    stream = await admin.stream(group=None)
    members = [pack(["*", "body", f"m{i}"]) for i in range(500)]
    await admin.client.zadd(key_of(stream), dict.fromkeys(members, 0))
    movers = [Mover(admin.client, what="t", url=redis_url, keep_polling=False) for _ in range(3)]
    for mover in movers:
        mover.watch(stream)

    async def all_moved() -> bool:
        return await admin.client.zcard(key_of(stream)) == 0

    await eventually(all_moved, timeout=10, what="every member moved")
    for mover in movers:
        await mover.stop()
    entries: Any = await admin.client.xrange(stream)
    assert sorted(f[b"body"] for _, f in entries) == sorted(f"m{i}".encode() for i in range(500))


async def test_trimming_applies_to_delayed_entries(admin: RedisAdmin, redis_url: str) -> None:
    stream = await admin.stream(group=None)
    async with RedisPublisher(stream, url=redis_url, maxlen=2, approximate=False) as publisher:
        await publisher.publish_many([b"1", b"2", b"3"], delay=0.2)

        async def moved() -> bool:
            return await admin.client.zcard(key_of(stream)) == 0

        await eventually(moved, timeout=10, what="the scheduled entries added")
    entries: Any = await admin.client.xrange(stream)
    assert [f[b"body"] for _, f in entries] == [b"2", b"3"]
