"""``loafer_redis._resp.pack``: the provider's hot commands packed as redis-py packs them."""

from __future__ import annotations

import redis.asyncio.connection

from loafer_redis._resp import pack, parse


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
