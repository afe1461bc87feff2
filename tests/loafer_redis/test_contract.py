"""The loafer-core conformance kit, run against RedisProvider on a real Redis."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import pytest
import redis.asyncio

from loafer_core.provider import Capabilities, Provider
from loafer_core.testing import ProviderContract
from loafer_redis import RedisProvider
from tests.loafer_redis.conftest import keys_of

pytestmark = pytest.mark.redis

#: A short lease, so the kit's lease-extension test (a handler 2.5x the lease) is quick.
LEASE = 2.0


def _provider(stream: str, url: str) -> RedisProvider:
    return RedisProvider(stream, url=url, lease=LEASE, block=1.0)


class TestRedisContract(ProviderContract):
    """Every capability RedisProvider claims (by default) is exercised."""

    capabilities: ClassVar[Capabilities] = _provider("s", "redis://localhost/0").capabilities
    queue_prefix: ClassVar[str] = "loafer-contract-redis"
    large_body_size: ClassVar[int] = 1_000_000

    @pytest.fixture(autouse=True)
    def _broker(self, redis_url: str) -> None:
        self.url = redis_url

    def _client(self) -> redis.asyncio.Redis:
        return redis.asyncio.Redis.from_url(self.url)

    async def make_provider(self, queue: str) -> Provider:
        return _provider(queue, self.url)

    async def create_queue(self, queue: str) -> None:
        async with self._client() as client:
            await client.xgroup_create(queue, "loafer", id="0", mkstream=True)

    async def delete_queue(self, queue: str) -> None:
        async with self._client() as client:
            await client.delete(*keys_of(queue))

    async def put(self, queue: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        async with self._client() as client:
            await client.xadd(queue, {"body": body, **(headers or {})})

    async def put_many(self, queue: str, bodies: Sequence[bytes]) -> None:
        async with self._client() as client:
            pipe = client.pipeline(transaction=False)
            for body in bodies:
                pipe.xadd(queue, {"body": body})
            await pipe.execute()

    async def dead_letters(self, queue: str) -> list[bytes] | None:
        async with self._client() as client:
            entries = await client.xrange(f"{queue}:dead")
        return [fields[b"body"] for _, fields in entries]
