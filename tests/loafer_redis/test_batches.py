"""A batch handler on Redis Streams: batches of the group's entries, an outcome per
entry (a RETRY redelivered on its own), nothing lost or handled twice."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from loafer_core import RETRY, Manager
from loafer_core.batches import Batch
from loafer_core.testing import eventually
from loafer_redis import RedisRoute
from tests.loafer_redis.conftest import RedisAdmin

pytestmark = pytest.mark.redis

COUNT = 600


async def test_batches_on_redis_settle_each_entry_with_its_own_outcome(
    redis_url: str, admin: RedisAdmin
) -> None:
    stream = await admin.stream()
    await admin.put_many(stream, [json.dumps({"i": i}).encode() for i in range(COUNT)])
    handled: dict[int, int] = {}
    sizes: list[int] = []
    done = asyncio.Event()

    async def save(items: list[dict[str, Any]], metadata: list[Any]) -> list[Any]:
        sizes.append(len(items))
        results: list[Any] = []
        for item, meta in zip(items, metadata, strict=True):
            i = item["i"]
            # every 50th fails on its first attempt: retried alone, handled on the second
            if i % 50 == 0 and meta["attempt"] == 1:
                results.append(RETRY(0.2))
                continue
            handled[i] = handled.get(i, 0) + 1
            results.append(True)
        if len(handled) >= COUNT:
            done.set()
        return results

    route = RedisRoute(
        stream,
        url=redis_url,
        handler=Batch(save, max_size=50, max_wait=0.3),
        max_concurrency=100,
    )
    async with Manager([route]) as manager:
        await manager.wait_started()
        await asyncio.wait_for(done.wait(), 60)

        async def nothing_pending() -> bool:
            return not await admin.pending(stream)

        await eventually(nothing_pending, timeout=15, what="no entry pending")
    assert handled == dict.fromkeys(range(COUNT), 1)  # each accepted once
    assert max(sizes) == 50 and len(sizes) <= COUNT // 50 + 20, sizes
    assert await admin.client.xlen(stream) == COUNT  # the retries wrote no copies
