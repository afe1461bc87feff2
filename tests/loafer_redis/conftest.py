"""Fixtures for the Redis provider tests: a real Redis (or Valkey), unique streams."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping

import pytest
import redis.asyncio


def unique(prefix: str = "loafer-test") -> str:
    """A stream name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def keys_of(stream: str, groups: tuple[str, ...] = ("loafer",)) -> list[str]:
    """The stream and the keys a provider of it (in these groups) may make."""
    return [
        stream,
        f"{stream}:dead",
        f"{stream}:scheduled",  # delayed publishes
        f"{stream}:delayed",  # earlier versions' delayed copies
        *(f"{stream}:{group}:delayed" for group in groups),
    ]


class RedisAdmin:
    """Test-side Redis client: makes streams and groups, fills and inspects them, and
    deletes everything it made (or was told about) at teardown."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.asyncio.Redis.from_url(url)
        self.keys: set[str] = set()
        self.streams: set[str] = set()

    async def stream(self, *, group: str | None = "loafer", name: str | None = None) -> str:
        """A new stream (with ``group`` from the start, unless None)."""
        name = name or unique()
        self.track(name)
        if group is not None:
            await self.client.xgroup_create(name, group, id="0", mkstream=True)
        return name

    def track(self, *streams: str) -> None:
        for stream in streams:
            self.streams.add(stream)
            self.keys.update(keys_of(stream))

    async def put(
        self, stream: str, body: bytes, headers: Mapping[str, str | bytes] | None = None
    ) -> bytes:
        fields: dict[str | bytes, str | bytes] = {"body": body, **(headers or {})}
        entry_id: bytes = await self.client.xadd(stream, fields)  # type: ignore[arg-type]
        return entry_id

    async def put_many(self, stream: str, bodies: list[bytes]) -> None:
        for start in range(0, len(bodies), 1000):
            pipe = self.client.pipeline(transaction=False)
            for body in bodies[start : start + 1000]:
                pipe.xadd(stream, {"body": body})
            await pipe.execute()

    async def pending(self, stream: str, group: str = "loafer") -> list[dict[str, object]]:
        """Every pending entry of the group: id, consumer, idle time, delivery count."""
        page = await self.client.xpending_range(stream, group, "-", "+", 100_000)
        return list(page)

    async def dead(self, stream: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return list(await self.client.xrange(f"{stream}:dead"))

    async def cleanup(self) -> None:
        try:
            for stream in self.streams:  # every group's delayed set, whatever its name
                async for key in self.client.scan_iter(match=f"{stream}:*"):
                    self.keys.add(key.decode())
            if self.keys:
                await self.client.delete(*self.keys)
        finally:
            await self.client.aclose()


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[RedisAdmin]:
    """An admin client; every stream it makes or tracks is deleted after the test."""
    helper = RedisAdmin(redis_url)
    try:
        yield helper
    finally:
        await helper.cleanup()
