"""The consumer's hot path: commands packed as redis-py packs them, pipelined replies
read in turn, and acknowledgements left to the reader's next read or sent on their own."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest
import redis.asyncio.connection
import redis.exceptions

from loafer_core.errors import ProviderError
from loafer_core.outcome import ACCEPT
from loafer_core.testing import eventually
from loafer_redis import RedisProvider
from loafer_redis._resp import pack, parse, read_replies
from loafer_redis._settlement import Acks
from tests.loafer_redis.conftest import RedisAdmin


def redis_py_pack(*args: object) -> bytes:
    connection = redis.asyncio.connection.Connection()
    return b"".join(connection.pack_command(*args))


def test_pack_matches_redis_py() -> None:
    commands = [
        ("XACK", "orders", "billing", b"1-0", b"1700000000000-15"),
        (
            "XREADGROUP",
            "GROUP",
            "g",
            "c-host-1-abcd",
            "COUNT",
            100,
            "BLOCK",
            2000,
            "STREAMS",
            "s",
            ">",
        ),
        ("XACK", "strömé", "grüppe", b"\r\n$binary\x00"),
        ("PING",),
    ]
    for command in commands:
        assert pack(command) == redis_py_pack(*command)


def test_pack_round_trips_through_the_parser() -> None:
    packed = pack(("XACK", "s", "g", *(b"%d-0" % i for i in range(1000))))
    value, end = parse(packed)
    assert end == len(packed)
    assert value[:3] == [b"XACK", b"s", b"g"] and value[3:] == [b"%d-0" % i for i in range(1000)]


async def test_replies_back_to_back_are_read_in_turn_whatever_the_chunks() -> None:
    data = b":3\r\n" + b"-NOGROUP gone\r\n" + b"*1\r\n$5\r\nhello\r\n" + b"+OK\r\n"
    rng = random.Random(3)
    for _ in range(50):
        reader = asyncio.StreamReader()
        pos = 0
        while pos < len(data):
            step = rng.randrange(1, 12)
            reader.feed_data(data[pos : pos + step])
            pos += step
        reader.feed_eof()
        buf = bytearray()
        assert await read_replies(reader, 1, buf) == [3]
        error, listed = await read_replies(reader, 2, buf)
        assert isinstance(error, redis.exceptions.ResponseError) and str(error) == "NOGROUP gone"
        assert listed == [b"hello"]
        assert await read_replies(reader, 1, buf) == [b"OK"]
        assert not buf


class Sent:
    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []

    async def __call__(self, ids: Sequence[bytes]) -> None:
        self.batches.append(list(ids))


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_acks_of_two_turns_go_in_one_send() -> None:
    sent = Sent()
    acks = Acks(sent)
    acks.add(b"1-0")
    await asyncio.sleep(0)
    acks.add(b"2-0")
    await turns(3)
    assert sent.batches == [[b"1-0", b"2-0"]]


async def test_held_acks_are_left_to_the_other_sender_until_resumed() -> None:
    sent = Sent()
    riding = True
    acks = Acks(sent, held=lambda: riding)
    acks.add(b"1-0")
    acks.add(b"2-0")
    await turns(3)
    assert sent.batches == [] and len(acks) == 2  # left for the reader's next read
    assert acks.take() == [b"1-0", b"2-0"] and len(acks) == 0
    acks.add(b"3-0")
    await turns(3)
    assert sent.batches == []
    riding = False
    acks.resume()  # the reader went without them
    await turns(3)
    assert sent.batches == [[b"3-0"]]


async def test_flush_sends_held_acks_and_a_failed_ride_queues_them_again() -> None:
    sent = Sent()
    acks = Acks(sent, held=lambda: True)
    acks.add(b"1-0")
    await turns(3)
    assert sent.batches == []
    async with asyncio.timeout(5):
        await acks.flush()  # close() and recovery must not wait for a read
    assert sent.batches == [[b"1-0"]]
    acks.add_many([b"2-0", b"3-0"])  # a read carrying them failed
    async with asyncio.timeout(5):
        await acks.flush()
    assert sent.batches[-1] == [b"2-0", b"3-0"]


async def test_take_hands_out_at_most_the_limit() -> None:
    acks = Acks(Sent(), limit=2, held=lambda: True)
    for i in range(5):
        acks.add(b"%d-0" % i)
    assert acks.take() == [b"0-0", b"1-0"]
    assert acks.take() == [b"2-0", b"3-0"]
    assert acks.take() == [b"4-0"]
    acks.cancel()


class Watched(RedisProvider):
    """Counts the entries whose XACK was answered, and the XACKs sent on their own."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.acked = 0
        self.own_sends: list[int] = []

    def _acked(self, count: int) -> None:
        self.acked += count

    async def _send_acks(self, ids: Sequence[bytes]) -> None:
        self.own_sends.append(len(ids))
        await super()._send_acks(ids)


async def fetch_all(p: RedisProvider, n: int) -> list:
    got: list = []
    async with asyncio.timeout(10):
        while len(got) < n:
            got.extend(await p.fetch(n - len(got)))
    return got


@pytest.mark.redis
async def test_acks_ride_with_the_next_read_and_apply_while_it_blocks(
    redis_url: str, admin: RedisAdmin
) -> None:
    stream = await admin.stream()
    for i in range(4):
        await admin.put(stream, b'{"i": %d}' % i)
    p = Watched(stream, url=redis_url, block=30.0, lease=60)
    await p.start(4)
    try:
        deliveries = await fetch_all(p, 4)
        for d in deliveries:
            await p.settle(d, ACCEPT)
        # the read they went with blocks (the stream is empty): acknowledged all the same
        await eventually(lambda: p.acked == 4, timeout=10, what="the XACK answered")
        assert await admin.pending(stream) == []
        assert p.own_sends == [], "the XACK went on its own, not with the read"
        assert p._reader is not None and p._reader.reading, "the read is not blocked"
    finally:
        await p.close()


@pytest.mark.redis
async def test_acks_of_a_read_that_failed_are_sent_again(redis_url: str, admin: RedisAdmin) -> None:
    stream = await admin.stream()
    for i in range(3):
        await admin.put(stream, b'{"i": %d}' % i)
    p = Watched(stream, url=redis_url, block=30.0, lease=60)
    await p.start(3)
    try:
        deliveries = await fetch_all(p, 3)
        reader = p._reader
        assert reader is not None
        real_call = reader.call
        carried: list[bytes] = []

        async def lost(packed: bytes, timeout: float, **kwargs: object) -> object:
            if kwargs.get("replies") == 2 and not carried:  # the read carrying the XACK
                carried.append(packed)
                await reader.disconnect()
                raise redis.exceptions.ConnectionError("connection lost (test)")
            return await real_call(packed, timeout, **kwargs)  # type: ignore[arg-type]

        reader.call = lost  # type: ignore[method-assign]
        for d in deliveries:
            await p.settle(d, ACCEPT)
        with pytest.raises(ProviderError):
            async with asyncio.timeout(10):
                await p.fetch(3)
        assert carried and b"XACK" in carried[0]
        await eventually(lambda: p.acked == 3, timeout=10, what="the XACK sent again")
        assert p.own_sends == [3]
        assert await admin.pending(stream) == []
    finally:
        await p.close()
