"""loafer-core's publisher conformance kit, run against RedisPublisher on a real Redis
(each destination a stream; what arrived is read with XRANGE past the last entry read)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
import redis.asyncio

from loafer_core.testing import Arrived, PublisherContract
from loafer_redis import RedisPublisher

pytestmark = pytest.mark.redis


class TestRedisPublisherContract(PublisherContract):
    destination_prefix: ClassVar[str] = "loafer-pub-contract-redis"

    @pytest.fixture(autouse=True)
    def _server(self, redis_url: str) -> None:
        self.url = redis_url
        self.last_id: dict[str, bytes] = {}

    def _client(self) -> redis.asyncio.Redis:
        return redis.asyncio.Redis.from_url(self.url)

    async def make_publisher(self, destination: str) -> Any:
        return RedisPublisher(destination, url=self.url)

    async def delete_destination(self, destination: str) -> None:
        async with self._client() as client:
            await client.delete(destination, f"{destination}-string", f"{destination}:scheduled")

    async def take(self, destination: str) -> Sequence[Arrived]:
        start = self.last_id.get(destination)
        async with self._client() as client:
            entries = await client.xrange(destination, b"(" + start if start else "-", "+")
        out: list[Arrived] = []
        for entry_id, fields in entries:
            self.last_id[destination] = entry_id
            body = fields.pop(b"body", b"")
            out.append(Arrived(body, {k.decode(): v.decode() for k, v in fields.items()}))
        return out

    async def make_refusing_publisher(self, destination: str) -> Any:
        # a key holding a string, not a stream: Redis refuses the XADD (WRONGTYPE)
        async with self._client() as client:
            await client.set(f"{destination}-string", "not a stream")
        return RedisPublisher(f"{destination}-string", url=self.url)

    def test_a_refused_publish_raises_publish_refused(self) -> None:
        """An XADD to a key holding another type (WRONGTYPE) is PublishRefused."""
        PublisherContract.test_a_refused_publish_raises_publish_refused(self)

    async def make_publisher_with_secret(self, destination: str) -> tuple[Any, str]:
        secret = "s3cret-redis-password"
        host = self.url.split("://", 1)[-1].rsplit("@", 1)[-1]
        return RedisPublisher(destination, url=f"redis://loafer:{secret}@{host}"), secret
