"""The RESP2 reader of the blocking reads: same answers as redis-py's parser."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis.asyncio
import redis.exceptions

from loafer_redis._resp import Incomplete, parse, read_reply
from tests.loafer_redis.conftest import RedisAdmin

pytestmark = pytest.mark.redis


def test_parse_every_kind() -> None:
    data = b"*6\r\n$5\r\nhe\r\nl\r\n$-1\r\n:42\r\n+OK\r\n*-1\r\n*2\r\n$0\r\n\r\n*0\r\n"
    value, end = parse(data)
    assert end == len(data)
    assert value == [b"he\r\nl", None, 42, b"OK", None, [b"", []]]
    error, _ = parse(b"-NOGROUP No such key\r\n")
    assert isinstance(error, redis.exceptions.ResponseError)
    assert str(error).startswith("NOGROUP")


def test_a_cut_reply_is_incomplete_at_every_byte() -> None:
    data = b"*2\r\n$3\r\nabc\r\n*1\r\n$10\r\n0123456789\r\n"
    for cut in range(len(data)):
        with pytest.raises(Incomplete) as caught:
            parse(data[:cut])
        assert caught.value.need > cut


async def feed(chunks: list[bytes]) -> object:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    return await read_reply(reader)


async def test_read_reply_in_random_chunks() -> None:
    body = bytes(random.randrange(256) for _ in range(300_000))
    data = b"*1\r\n*2\r\n$6\r\nstream\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$4\r\nbody\r\n"
    data += b"$%d\r\n" % len(body) + body + b"\r\n"
    rng = random.Random(7)
    for _ in range(20):
        chunks, pos = [], 0
        while pos < len(data):
            step = rng.randrange(1, 70_000)
            chunks.append(data[pos : pos + step])
            pos += step
        assert await feed(chunks) == [[b"stream", [[b"1-0", [b"body", body]]]]]


async def test_a_closed_connection_and_an_error_raise() -> None:
    with pytest.raises(redis.exceptions.ConnectionError):
        await feed([b"*2\r\n$3\r\nab"])
    with pytest.raises(redis.exceptions.ResponseError, match="NOGROUP"):
        await feed([b"-NOGROUP gone\r\n"])


async def test_the_same_as_redis_py_on_real_replies(redis_url: str, admin: RedisAdmin) -> None:
    stream = await admin.stream()
    big = b"\r\n" + bytes(range(256)) * 4000 + b"\r\n"
    await admin.put(stream, big, {"h": "v", "empty": ""})
    for i in range(200):
        await admin.put(stream, b'{"i": %d}' % i)
    await admin.client.xgroup_create(stream, "other", id="$")
    pool = redis.asyncio.ConnectionPool.from_url(redis_url, protocol=2)
    ours = pool.connection_class(**pool.connection_kwargs)
    theirs = pool.connection_class(**pool.connection_kwargs)
    await ours.connect()
    await theirs.connect()
    try:
        for command in (
            ("XRANGE", stream, "-", "+"),
            ("XREADGROUP", "GROUP", "loafer", "c", "COUNT", 150, "STREAMS", stream, "0"),
            ("XPENDING", stream, "loafer"),
            # nothing new (the history read above took nothing new): a nil reply
            ("XREADGROUP", "GROUP", "other", "c", "BLOCK", 10, "STREAMS", stream, ">"),
        ):
            await ours.send_command(*command)
            mine = await read_reply(ours._reader)  # type: ignore[arg-type]
            await theirs.send_command(*command)
            expected = await theirs.read_response()
            assert mine == expected, command
    finally:
        await ours.disconnect()
        await theirs.disconnect()
