"""A batch handler on RabbitMQ: batches of the prefetched messages, an outcome per
message (a REJECT dead-lettered on its own), nothing lost or handled twice."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from loafer_core import REJECT, Manager
from loafer_core.batches import Batch
from loafer_rabbit import RabbitRoute
from tests.loafer_rabbit.conftest import RabbitAdmin

pytestmark = pytest.mark.rabbit

COUNT = 600


async def test_batches_on_rabbitmq_settle_each_message_with_its_own_outcome(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await admin.declare()
    await admin.put_many(queue, [json.dumps({"i": i}).encode() for i in range(COUNT)])
    seen: list[int] = []
    sizes: list[int] = []
    done = asyncio.Event()

    async def save(orders: list[dict[str, Any]]) -> dict[int, Any]:
        sizes.append(len(orders))
        seen.extend(o["i"] for o in orders)
        if len(seen) >= COUNT:
            done.set()
        # every 100th is refused: dead-lettered alone, the rest of its batch accepted
        return {n: REJECT("multiple of 100") for n, o in enumerate(orders) if o["i"] % 100 == 0}

    route = RabbitRoute(
        queue,
        url=rabbit_url,
        handler=Batch(save, max_size=50, max_wait=0.5),
        max_concurrency=100,
        dead_letter=True,
    )
    provider: Any = route.provider
    admin.track(provider.dead_letter_queue, exchanges=(provider.dead_letter_exchange,))
    async with Manager([route]) as manager:
        await manager.wait_started()
        await asyncio.wait_for(done.wait(), 60)
        await admin.wait_count(provider.dead_letter_queue, COUNT // 100)
        await admin.wait_count(queue, 0)
    assert sorted(seen) == list(range(COUNT))  # each once
    assert max(sizes) == 50 and sum(sizes) == COUNT
    assert len(sizes) <= COUNT // 50 + 4, sizes  # batches, not single messages
    dead = await admin.drain(provider.dead_letter_queue)
    assert sorted(json.loads(m.body)["i"] for m in dead) == list(range(0, COUNT, 100))
    assert all(m.headers["x-loafer-reject-reason"] == "multiple of 100" for m in dead)
