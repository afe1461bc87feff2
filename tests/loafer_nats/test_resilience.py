"""The connection drops (a local TCP proxy is cut, the shared server untouched): the
route reconnects, resumes, and loses nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from loafer_core import Manager
from loafer_nats import NATSProvider, NATSRoute

from .conftest import NatsAdmin, Proxy

pytestmark = pytest.mark.nats


async def test_route_resumes_after_the_connection_drops_and_loses_nothing(
    admin: NatsAdmin, proxy: Proxy
) -> None:
    # messages or acks in flight in the cut socket come back after ack_wait: keep it short
    stream = await admin.stream(ack_wait=5)
    first, second = 300, 200
    await admin.put_many(stream, [f'{{"i": {i}}}'.encode() for i in range(first)])
    handled: Counter[int] = Counter()
    halfway = asyncio.Event()
    everything = asyncio.Event()
    total = first + second

    async def handler(content: Any, metadata: Any) -> bool:
        await asyncio.sleep(0.005)
        handled[content["i"]] += 1
        if len(handled) >= first // 2:
            halfway.set()
        if len(handled) == total:
            everything.set()
        return True

    route = NATSRoute(
        stream,
        url=proxy.url,
        consumer="work",
        handler=handler,
        max_concurrency=20,
        poll_timeout=1.0,
        reconnect_wait=0.2,
    )
    provider = route.provider
    assert isinstance(provider, NATSProvider)
    async with Manager([route], shutdown_timeout=20) as manager:
        await manager.wait_started()
        async with asyncio.timeout(30):
            await halfway.wait()
        before = proxy.connections
        await proxy.cut()
        # the outage: messages keep arriving on the server meanwhile
        await admin.put_many(stream, [f'{{"i": {i}}}'.encode() for i in range(first, total)])
        async with asyncio.timeout(10):
            while True:  # the client notices the dropped socket (no event to await)
                if not await provider.health():
                    break
                await asyncio.sleep(0.05)
        assert await provider.backlog() is None  # not connected: unknown, no error
        await proxy.resume()
        async with asyncio.timeout(60):
            await everything.wait()
        assert proxy.connections > before, "the client never reconnected"
        assert await provider.health()
        # acks written into the cut socket were lost: those messages come back after
        # ack_wait, to this same route, and are handled again (at least once)
        await admin.wait_consumer(stream, num_pending=0, num_ack_pending=0, timeout=30)
    assert set(handled) == set(range(total)), "messages lost"
    duplicates = sum(count - 1 for count in handled.values())
    print(f"handled {total} messages, {duplicates} duplicates after the drop")
