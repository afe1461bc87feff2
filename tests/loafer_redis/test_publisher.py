"""RedisPublisher: XADD with headers as fields, MAXLEN trimming, pipelined batches."""

from __future__ import annotations

import pytest

from loafer_core.errors import ConfigurationError
from loafer_redis import RedisPublisher
from tests.loafer_redis.conftest import RedisAdmin

pytestmark = pytest.mark.redis


async def test_publish_puts_the_body_and_headers_as_fields(
    redis_url: str, admin: RedisAdmin
) -> None:
    stream = await admin.stream()
    async with RedisPublisher(stream, url=redis_url) as publisher:
        entry_id = await publisher.publish({"a": 1}, headers={"trace": "t-1", "n": 2})
        await publisher.publish("text")
        await publisher.publish(b"\xff raw")
    entries = await admin.client.xrange(stream)
    assert entries[0][0].decode() == entry_id
    assert entries[0][1] == {b"body": b'{"a": 1}', b"trace": b"t-1", b"n": b"2"}
    assert entries[1][1] == {b"body": b"text"}
    assert entries[2][1] == {b"body": b"\xff raw"}


async def test_publish_many_is_pipelined_and_counts(redis_url: str, admin: RedisAdmin) -> None:
    stream = await admin.stream()
    publisher = RedisPublisher(stream, url=redis_url, pipeline=100)
    try:
        added = await publisher.publish_many(
            (b'{"i": %d}' % i for i in range(1050)), headers={"h": "v"}
        )
    finally:
        await publisher.close()
    assert added == 1050
    assert await admin.client.xlen(stream) == 1050
    [(_, fields)] = await admin.client.xrange(stream, count=1)
    assert fields == {b"body": b'{"i": 0}', b"h": b"v"}


async def test_maxlen_trims_the_stream(redis_url: str, admin: RedisAdmin) -> None:
    stream = await admin.stream()
    async with RedisPublisher(stream, url=redis_url, maxlen=10, approximate=False) as publisher:
        await publisher.publish_many([b"x"] * 50)
    assert await admin.client.xlen(stream) == 10


async def test_a_one_megabyte_body(redis_url: str, admin: RedisAdmin) -> None:
    stream = await admin.stream()
    body = b"y" * 1_000_000
    async with RedisPublisher(stream, url=redis_url) as publisher:
        await publisher.publish(body)
    [(_, fields)] = await admin.client.xrange(stream)
    assert fields[b"body"] == body


async def test_bad_input_is_a_configuration_error() -> None:
    publisher = RedisPublisher("s")
    with pytest.raises(ConfigurationError, match="body field"):
        publisher.command(b"x", {"body": "other"})
    with pytest.raises(ConfigurationError, match="header 'h'"):
        publisher.command(b"x", {"h": [1, 2]})
    with pytest.raises(ConfigurationError, match="JSON"):
        publisher.command(object())
    with pytest.raises(ConfigurationError):
        RedisPublisher("s", maxlen=0)
    with pytest.raises(ConfigurationError):
        RedisPublisher("s", url="amqp://x")
