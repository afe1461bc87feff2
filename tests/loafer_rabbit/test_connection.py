"""Starting and stopping are safe at any point: a connect cancelled, timed out or cut by
close() leaves no connection, reconnect loop or task behind."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import struct
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest
from yarl import URL

from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.manager import Manager
from loafer_core.outcome import ACCEPT, RELEASE, RETRY
from loafer_core.provider import Delivery
from loafer_rabbit import RabbitProvider, RabbitPublisher, RabbitRoute
from tests.loafer_rabbit.conftest import RabbitAdmin, SilentBroker

pytestmark = pytest.mark.rabbit

#: Longest a stop, close or cancelled start may take here (the connect timeout is 60 s).
BOUND = 10.0


async def assert_nothing_left(
    before: set[asyncio.Task[object]], ignore: set[asyncio.Task[None]] | None = None
) -> None:
    """Every task started since ``before`` (but the test's own ``ignore``) ends (at once,
    or within BOUND for a close that finishes in the background)."""
    left = asyncio.all_tasks() - before - {asyncio.current_task()} - (ignore or set())
    if left:
        _, pending = await asyncio.wait(left, timeout=BOUND)
        assert not pending, f"tasks left running: {pending}"


async def test_stopping_a_manager_whose_route_is_still_connecting_returns(
    silent: tuple[SilentBroker, str],
) -> None:
    broker, url = silent
    route = RabbitRoute("q", url=url, handler=lambda content, metadata: None, connect_timeout=60)
    manager = Manager([route], shutdown_timeout=5)
    before = asyncio.all_tasks()
    serving = asyncio.create_task(manager.serve())
    async with asyncio.timeout(BOUND):
        await broker.accepted.wait()
    manager.stop()
    async with asyncio.timeout(BOUND):
        await serving
    await assert_nothing_left(before)


async def test_a_cancelled_provider_start_leaves_nothing_behind(
    silent: tuple[SilentBroker, str],
) -> None:
    broker, url = silent
    provider = RabbitProvider("q", url=url, connect_timeout=60)
    before = asyncio.all_tasks()
    starting = asyncio.create_task(provider.start(1))
    async with asyncio.timeout(BOUND):
        await broker.accepted.wait()
    starting.cancel()
    async with asyncio.timeout(BOUND):
        await asyncio.gather(starting, return_exceptions=True)
        await provider.close()
    assert starting.cancelled()
    await assert_nothing_left(before)


async def test_close_during_a_provider_start_ends_the_start(
    silent: tuple[SilentBroker, str],
) -> None:
    broker, url = silent
    provider = RabbitProvider("q", url=url, connect_timeout=60)
    before = asyncio.all_tasks()
    starting = asyncio.create_task(provider.start(1))
    async with asyncio.timeout(BOUND):
        await broker.accepted.wait()
        await provider.close()
        with pytest.raises(ProviderError, match="closed"):
            await starting
    await assert_nothing_left(before)


async def test_a_timed_out_provider_start_leaves_nothing_behind(
    silent: tuple[SilentBroker, str],
) -> None:
    _, url = silent
    provider = RabbitProvider("q", url=url, connect_timeout=0.5)
    before = asyncio.all_tasks()
    async with asyncio.timeout(BOUND):
        with pytest.raises(ProviderError, match="timed out"):
            await provider.start(1)
        await provider.close()
    await assert_nothing_left(before)


async def test_a_cancelled_publisher_connect_leaves_nothing_behind(
    silent: tuple[SilentBroker, str],
) -> None:
    broker, url = silent
    publisher = RabbitPublisher(url, routing_key="q", connect_timeout=60)
    before = asyncio.all_tasks()
    publishing = asyncio.create_task(publisher.publish(b"x"))
    async with asyncio.timeout(BOUND):
        await broker.accepted.wait()
    publishing.cancel()
    async with asyncio.timeout(BOUND):
        await asyncio.gather(publishing, return_exceptions=True)
        await publisher.close()
    assert publishing.cancelled()
    await assert_nothing_left(before)


async def test_close_during_a_publisher_connect_ends_the_publish(
    silent: tuple[SilentBroker, str],
) -> None:
    broker, url = silent
    publisher = RabbitPublisher(url, routing_key="q", connect_timeout=60)
    before = asyncio.all_tasks()
    publishing = asyncio.create_task(publisher.publish(b"x"))
    async with asyncio.timeout(BOUND):
        await broker.accepted.wait()
        await publisher.close()
        with pytest.raises(ProviderError, match="closed"):
            await publishing
    await assert_nothing_left(before)


async def test_a_timed_out_publisher_connect_leaves_nothing_behind(
    silent: tuple[SilentBroker, str],
) -> None:
    _, url = silent
    publisher = RabbitPublisher(url, routing_key="q", connect_timeout=0.5)
    before = asyncio.all_tasks()
    async with asyncio.timeout(BOUND):
        with pytest.raises(ProviderError, match="timed out"):
            await publisher.publish(b"x")
        await publisher.close()
    await assert_nothing_left(before)


class FreezingProxy:
    """A TCP proxy to RabbitMQ that, once frozen, forwards nothing more either way (a
    broker or network that died without closing the socket). With ``freeze_on_channel``,
    it freezes by itself when the client's first channel frame comes (a broker that
    stops answering right after the connection handshake)."""

    def __init__(self, target: str) -> None:
        url = URL(target)
        self.target = (url.host or "127.0.0.1", url.port or 5672)
        self.credentials = f"{url.user}:{url.password}"
        self.frozen = asyncio.Event()
        self.freeze_on_channel = False
        self.pumps: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if not self.frozen.is_set():
                writer.write(data)
                await writer.drain()

    async def _client_pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Forward the client's frames one by one (type, channel, size, payload, end)."""
        with contextlib.suppress(asyncio.IncompleteReadError):
            writer.write(await reader.readexactly(8))  # the protocol header
            while True:
                head = await reader.readexactly(7)
                _, channel, size = struct.unpack(">BHI", head)
                rest = await reader.readexactly(size + 1)
                if channel and self.freeze_on_channel:
                    self.frozen.set()
                if not self.frozen.is_set():
                    writer.write(head + rest)
                    await writer.drain()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, upstream_writer]
        pumps = (self._client_pump(reader, upstream_writer), self._pump(upstream_reader, writer))
        for pump in pumps:
            task = asyncio.create_task(pump)
            self.pumps.add(task)

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"amqp://{self.credentials}@127.0.0.1:{port}/"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.pumps:
            task.cancel()
        await asyncio.gather(*self.pumps, return_exceptions=True)
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


@pytest.fixture
async def proxy(rabbit_url: str) -> AsyncIterator[tuple[FreezingProxy, str]]:
    frozen = FreezingProxy(rabbit_url)
    url = await frozen.start()
    try:
        yield frozen, url
    finally:
        await frozen.stop()


async def test_close_on_a_broker_that_stopped_answering_is_bounded_by_close_timeout(
    admin: RabbitAdmin, proxy: tuple[FreezingProxy, str]
) -> None:
    frozen, url = proxy
    name = await admin.declare()
    await admin.put(name, b"held")
    provider = RabbitProvider(name, url=url, close_timeout=1.0, poll_timeout=5.0)
    publisher = RabbitPublisher(url, routing_key=name, close_timeout=1.0)
    async with asyncio.timeout(BOUND):
        await provider.start(2)
        await publisher.connect()
        deliveries = await provider.fetch(1)
        assert deliveries  # one delivery held: close() would ack/requeue it
        await provider.settle(deliveries[0], ACCEPT)  # an ack waiting to be flushed
    frozen.frozen.set()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(BOUND):
        await provider.close()
        await publisher.close()
    # Each: close_timeout for the goodbyes, then at least a second for the disconnect.
    assert loop.time() - started < 5.0


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _fetch_one(provider: RabbitProvider) -> Delivery:
    while True:
        deliveries = await provider.fetch(1)
        if deliveries:
            return deliveries[0]


async def _cycle(name: str, url: str, silent: tuple[SilentBroker, str]) -> list[weakref.ref[Any]]:
    """Open, use and close one provider and one publisher (every outcome, a cancelled
    fetch, a failed and a cancelled start); weak references to what should be freed."""
    provider = RabbitProvider(name, url=url, poll_timeout=5.0, delayed_retry=False)
    publisher = RabbitPublisher(url, routing_key=name)
    await publisher.publish_many([b"a", b"b", b"c"])
    await provider.start(3)
    await provider.settle(await _fetch_one(provider), RELEASE)
    await provider.settle(await _fetch_one(provider), RETRY())
    fetching = asyncio.create_task(provider.fetch(10))
    await asyncio.sleep(0)
    fetching.cancel()  # if it is waiting: consumption pauses, the buffer is requeued
    (fetched,) = await asyncio.gather(fetching, return_exceptions=True)
    for delivery in fetched if isinstance(fetched, list) else ():
        await provider.settle(delivery, RELEASE)  # it had returned before the cancel
    for _ in range(3):
        await provider.settle(await _fetch_one(provider), ACCEPT)
    refs = [
        weakref.ref(provider),
        weakref.ref(publisher),
        weakref.ref(provider._connection),
        weakref.ref(publisher._connection),
    ]
    await provider.close()
    await publisher.close()
    failing = RabbitProvider(name + ".missing", url=url)
    with pytest.raises(ConfigurationError):
        await failing.start(1)
    await failing.close()
    broker, silent_url = silent
    stuck = RabbitProvider(name, url=silent_url, connect_timeout=60)
    stuck_publisher = RabbitPublisher(silent_url, routing_key=name, connect_timeout=60)
    broker.accepted.clear()
    starting = asyncio.create_task(stuck.start(1))
    publishing = asyncio.create_task(stuck_publisher.publish(b"x"))
    await broker.accepted.wait()
    await stuck.close()
    await stuck_publisher.close()
    await asyncio.gather(starting, publishing, return_exceptions=True)
    return [*refs, weakref.ref(failing), weakref.ref(stuck), weakref.ref(stuck_publisher)]


async def test_closed_providers_and_publishers_are_freed(
    admin: RabbitAdmin, rabbit_url: str, silent: tuple[SilentBroker, str]
) -> None:
    name = await admin.declare()
    async with asyncio.timeout(120):
        for _ in range(5):  # warm-up: caches, pools, first imports
            await _cycle(name, rabbit_url, silent)
        gc.collect()
        baseline = rss_bytes()
        refs: list[weakref.ref[Any]] = []
        for _ in range(30):
            refs.extend(await _cycle(name, rabbit_url, silent))
    # The loop's last callback handle may still hold the last cycle's results: let it pass.
    await asyncio.sleep(0)
    gc.collect()
    alive = [ref() for ref in refs if ref() is not None]
    assert not alive, f"{len(alive)} objects not freed, e.g. {alive[:4]}"
    growth = rss_bytes() - baseline
    print(f"RSS growth over 30 cycles: {growth / 2**20:.2f} MiB")
    assert growth < 20 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 30 cycles"
    assert await admin.count(name) == 0


async def test_a_start_stuck_after_the_handshake_is_stoppable(
    admin: RabbitAdmin, proxy: tuple[FreezingProxy, str]
) -> None:
    frozen, url = proxy
    frozen.freeze_on_channel = True  # connected, then no answer to the channel's opening
    name = await admin.declare()
    provider = RabbitProvider(name, url=url, close_timeout=1.0)
    publisher = RabbitPublisher(url, routing_key=name, close_timeout=1.0)
    before = asyncio.all_tasks()
    starting = asyncio.create_task(provider.start(1))
    async with asyncio.timeout(BOUND):
        await frozen.frozen.wait()
    loop = asyncio.get_running_loop()
    stopped = loop.time()
    starting.cancel()
    async with asyncio.timeout(BOUND):
        await asyncio.gather(starting, return_exceptions=True)
        await provider.close()
    assert starting.cancelled()
    frozen.frozen.clear()  # the publisher's turn: it is closed while opening its channel
    publishing = asyncio.create_task(publisher.publish(b"x"))
    async with asyncio.timeout(BOUND):
        await frozen.frozen.wait()
        await publisher.close()
        with pytest.raises(ProviderError, match="closed"):
            await publishing
    # Each waits at most close_timeout for a broker that does not answer its goodbye.
    assert loop.time() - stopped < 4 * 1.0 + 1
    await assert_nothing_left(before, ignore=frozen.pumps)  # but the proxy's own
