"""The dead-letter kit on a real Redis: REJECT writes the common keys, a replay moves
each entry back in one script."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import redis.asyncio

from loafer_core.deadletters import DEAD_REASON, dead_letters_of
from loafer_core.errors import ConfigurationError
from loafer_core.provider import Provider
from loafer_core.testing import DeadLetterContract
from loafer_redis import REJECT_REASON_FIELD, RedisProvider
from tests.loafer_redis.conftest import keys_of

pytestmark = pytest.mark.redis


class TestRedisDeadLetters(DeadLetterContract):
    queue_prefix = "loafer-dlq-redis"

    @pytest.fixture(autouse=True)
    def _broker(self, redis_url: str) -> None:
        self.url = redis_url

    def _client(self) -> redis.asyncio.Redis:
        return redis.asyncio.Redis.from_url(self.url)

    async def make_provider(self, queue: str) -> Provider:
        return RedisProvider(queue, url=self.url, block=0.5)

    async def create_queue(self, queue: str) -> None:
        async with self._client() as client:
            await client.xgroup_create(queue, "loafer", id="0", mkstream=True)

    async def delete_queue(self, queue: str) -> None:
        async with self._client() as client:
            await client.delete(*keys_of(queue))

    async def put(self, queue: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        async with self._client() as client:
            fields: dict[Any, Any] = {"body": body, **(headers or {})}
            await client.xadd(queue, fields)

    def test_the_older_fields_are_still_written(self) -> None:
        async def scenario(queue: str) -> None:
            async with await self.store(queue) as store:
                await self.reject_all(queue, store)
            async with self._client() as client:
                entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(
                    f"{queue}:dead"
                )  # type: ignore[assignment]
            for _, fields in entries:
                assert fields[REJECT_REASON_FIELD.encode()] == fields[DEAD_REASON.encode()]

        self._run(scenario)


def test_no_store_without_dead_letters() -> None:
    provider = RedisProvider("s", url="redis://localhost/0", dead_letter=False)
    with pytest.raises(ConfigurationError, match="dead letters are off"):
        dead_letters_of(provider)
