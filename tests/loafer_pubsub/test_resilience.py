"""Reconnection: the API unreachable for a while (a TCP proxy in front of the emulator
drops every connection and stops listening, as an outage or a restart looks to the
client; the shared emulator is never touched). A running route fails its pulls and
settles meanwhile, retries with backoff, and loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from loafer_core import Manager
from loafer_core.errors import ProviderError
from loafer_pubsub import PubSubProvider, PubSubRoute

from .conftest import PROJECT, PubSubAdmin

pytestmark = pytest.mark.pubsub


class Proxy:
    """A local TCP proxy: :meth:`cut` drops every connection and stops listening,
    :meth:`resume` listens again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self.tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            w.close()
            self.writers.discard(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()
        for task in list(self.tasks):
            task.cancel()
        self.tasks.clear()


@pytest.fixture
async def proxy(pubsub_emulator: str) -> AsyncIterator[Proxy]:
    host, _, port = pubsub_emulator.rpartition(":")
    helper = Proxy(host, int(port))
    await helper.start()
    try:
        yield helper
    finally:
        await helper.cut()


async def test_a_fetch_fails_while_the_api_is_away_and_works_once_it_is_back(
    admin: PubSubAdmin, proxy: Proxy
) -> None:
    queue = await admin.queue(dead_letters=False)
    p = PubSubProvider(queue, project=PROJECT, emulator_host=proxy.host, poll_timeout=0.5)
    await p.start(1)
    try:
        await proxy.cut()
        with pytest.raises(ProviderError, match="cannot reach the API"):
            await p.fetch(1)
        await proxy.start()
        await admin.put(queue, b'{"back": 1}')
        async with asyncio.timeout(10):
            while not (got := await p.fetch(1)):
                pass
        assert got[0].body == b'{"back": 1}'
    finally:
        await p.close()


async def test_a_route_rides_out_an_outage_and_loses_nothing(
    admin: PubSubAdmin, proxy: Proxy
) -> None:
    total = 300
    queue = await admin.queue(dead_letters=False, ack_deadline=5)
    seen: list[int] = []
    half, every = asyncio.Event(), asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        seen.append(int(content["i"]))
        if len(seen) >= total // 2:
            half.set()
        if set(seen) >= set(range(total)):
            every.set()
        await asyncio.sleep(0.002)
        return True

    route = PubSubRoute(
        queue,
        project=PROJECT,
        emulator_host=proxy.host,
        handler=handler,
        max_concurrency=10,
        poll_timeout=0.5,
    )
    await admin.put_many(queue, [json.dumps({"i": i}).encode() for i in range(total)])
    async with Manager([route]):
        async with asyncio.timeout(30):
            await half.wait()
        await proxy.cut()  # pulls and acks fail now
        await asyncio.sleep(2)
        await proxy.start()
        async with asyncio.timeout(60):
            await every.wait()
    assert set(seen) == set(range(total)), "messages lost"
    print(f"\n{len(seen) - total} handled twice (acks lost in the outage)")
    assert await admin.pull(queue) == []
