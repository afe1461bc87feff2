"""The reactor bridge's life cycle: what close() leaves behind (nothing)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable

import pytest

from loafer_amqp import AMQPProvider, AMQPPublisher
from loafer_core.errors import ProviderError
from loafer_core.outcome import ACCEPT

from .conftest import Broker

pytestmark = pytest.mark.amqp

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


async def publisher_cycle(amqp_url: str, queue: str) -> weakref.ref[object]:
    publisher = AMQPPublisher(amqp_url, f"/amq/queue/{queue}")
    await publisher.start()
    await publisher.publish(b"x")
    await publisher.close()
    return weakref.ref(publisher)


async def provider_cycle(amqp_url: str, queue: str) -> weakref.ref[object]:
    provider = AMQPProvider(amqp_url, f"/amq/queue/{queue}", fetch_wait=5.0)
    await provider.start(10)
    [delivery] = await provider.fetch(1)  # the publisher cycle's message
    await provider.settle(delivery, ACCEPT)
    await provider.close()
    return weakref.ref(provider)


Cycle = Callable[[str, str], Awaitable["weakref.ref[object]"]]


@pytest.mark.slow  # a soak: many open/close cycles
@pytest.mark.parametrize("cycle", [publisher_cycle, provider_cycle], ids=["publisher", "provider"])
async def test_closed_clients_are_freed_and_memory_stays_flat(
    amqp_url: str, broker: Broker, queue: str, cycle: Cycle
) -> None:
    """Each closed provider/publisher is collected (with its Container and connection):
    over many open/use/close cycles the process's memory stays flat."""
    if cycle is provider_cycle:
        await broker.put_many(queue, [b"x"] * 60)

    async def run(n: int) -> list[weakref.ref[object]]:
        return [await cycle(amqp_url, queue) for _ in range(n)]

    await run(10)  # warm-up: imports, caches, allocator arenas
    gc.collect()
    before = rss()
    refs = await run(40)
    gc.collect()
    grown = rss() - before
    assert [r() for r in refs] == [None] * len(refs)
    # A leaked client cost ~1.7 MB (66 MB over these 40 cycles); malloc arenas of the
    # short-lived reactor threads make RSS wander by ~10 MB either way.
    assert grown < 25 * 2**20, f"RSS grew {grown / 2**20:.1f} MB over 40 cycles"


class SilentServer:
    """Accepts TCP connections and never writes a byte (a hung broker)."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        self.accepted.set()

    async def __aenter__(self) -> SilentServer:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.writers:
            writer.close()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def reactor_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("loafer-amqp-")]


Client = AMQPProvider | AMQPPublisher


def _provider(url: str) -> tuple[Client, Callable[[], Awaitable[None]]]:
    provider = AMQPProvider(url, "/amq/queue/x")  # default timeouts: 15 s connect, 10 s close
    return provider, lambda: provider.start(1)


def _publisher_start(url: str) -> tuple[Client, Callable[[], Awaitable[None]]]:
    publisher = AMQPPublisher(url, "/amq/queue/x")
    return publisher, publisher.start


def _publisher_publish(url: str) -> tuple[Client, Callable[[], Awaitable[None]]]:
    publisher = AMQPPublisher(url, "/amq/queue/x")  # the first publish opens the connection
    return publisher, lambda: publisher.publish(b"x")


@pytest.mark.parametrize(
    "make", [_provider, _publisher_start, _publisher_publish], ids=["provider", "start", "publish"]
)
async def test_a_start_cancelled_against_a_silent_server_stops_at_once(
    make: Callable[[str], tuple[Client, Callable[[], Awaitable[None]]]],
) -> None:
    """Cancelled while the server has not answered the protocol header: the cancellation
    completes promptly (not after connect_timeout or close_timeout), no reactor thread is
    left, and close() returns at once."""
    before = reactor_threads()
    async with SilentServer() as server:
        client, start = make(f"amqp://127.0.0.1:{server.port}")
        starting = asyncio.create_task(start())
        await asyncio.wait_for(server.accepted.wait(), 10)
        began = time.monotonic()
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(starting, 15)
        cancelled_in = time.monotonic() - began
        assert reactor_threads() == before
        began = time.monotonic()
        await asyncio.wait_for(client.close(), 15)
        closed_in = time.monotonic() - began
    assert cancelled_in < 1.0, f"the cancelled start took {cancelled_in:.1f}s to end"
    assert closed_in < 0.5, f"close() took {closed_in:.1f}s"


@pytest.mark.parametrize(
    "make", [_provider, _publisher_start, _publisher_publish], ids=["provider", "start", "publish"]
)
async def test_close_during_a_start_against_a_silent_server_ends_both_at_once(
    make: Callable[[str], tuple[Client, Callable[[], Awaitable[None]]]],
) -> None:
    """close() while start() waits for a silent server: close returns promptly, the start
    fails with ProviderError (not after connect_timeout), and no reactor thread is left."""
    before = reactor_threads()
    async with SilentServer() as server:
        client, start = make(f"amqp://127.0.0.1:{server.port}")
        starting = asyncio.create_task(start())
        await asyncio.wait_for(server.accepted.wait(), 10)
        began = time.monotonic()
        await asyncio.wait_for(client.close(), 15)
        closed_in = time.monotonic() - began
        with pytest.raises(ProviderError):
            await asyncio.wait_for(starting, 15)
        ended_in = time.monotonic() - began
        assert reactor_threads() == before
    assert closed_in < 1.0, f"close() took {closed_in:.1f}s"
    assert ended_in < 1.0, f"the start took {ended_in:.1f}s to fail"


class _Boom(BaseException):
    """Escapes the reactor's `except Exception` guards, killing the thread."""


async def test_a_provider_whose_reactor_died_is_freed_after_close(
    amqp_url: str, queue: str
) -> None:
    """After a crash of its reactor thread, the provider and the dead client are still
    collected once closed (a crashed Container keeps its handler and events)."""
    provider = AMQPProvider(amqp_url, f"/amq/queue/{queue}", fetch_wait=5.0)
    await provider.start(2)
    client = provider._client
    assert client is not None and client.ended is not None

    def boom() -> None:
        raise _Boom("simulated bug in a reactor callback")

    logging.disable(logging.CRITICAL)  # the crash is logged with its traceback
    try:
        client.call(boom)
        await asyncio.wait_for(asyncio.shield(client.ended), 10)
    finally:
        logging.disable(logging.NOTSET)
    await provider.close()
    refs = [weakref.ref(provider), weakref.ref(client)]
    del provider, client
    gc.collect()
    assert [r() for r in refs] == [None, None]
