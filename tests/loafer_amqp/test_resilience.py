"""Failure handling on RabbitMQ's AMQP 1.0 plugin: dropped connections, sessions ended by
the broker, a dying reactor thread, a broker restart. None may lose a message or stop
the route."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from loafer_amqp import AMQPProvider, AMQPPublisher, AMQPRoute
from loafer_core import Manager
from loafer_core.errors import ProviderError
from loafer_core.outcome import ACCEPT, RETRY
from loafer_core.testing import eventually

from .conftest import Broker, rabbitmqctl

pytestmark = pytest.mark.amqp

needs_ss = pytest.mark.skipif(
    shutil.which("ss") is None or os.geteuid() != 0,
    reason="needs `ss -K` (iproute2, root) to cut our own TCP connection",
)


def bodies(numbers: range) -> list[bytes]:
    return [f'{{"i": {n}}}'.encode() for n in numbers]


class Recorder:
    """Collects handled message numbers and wakes waiters when a condition holds."""

    def __init__(self) -> None:
        self.handled: list[int] = []
        self.changed = asyncio.Event()

    def add(self, n: int) -> None:
        self.handled.append(n)
        self.changed.set()

    async def wait(self, condition: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


def our_sockets() -> set[str]:
    """Local ports of this process's TCP connections to the broker on 5672."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", "dst", "127.0.0.1:5672"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ports = set()
    for line in out.splitlines():
        if f"pid={os.getpid()}," in line:
            local = line.split()[2]
            ports.add(local.rsplit(":", 1)[1])
    return ports


def cut(ports: set[str]) -> None:
    """Destroy our side of these TCP connections (a network failure, as the kernel sees it).

    `rabbitmqctl close_all_connections` would also do, but RabbitMQ 3.10 does not list
    AMQP 1.0 connections, and it would cut every other user of the broker too.
    """
    for port in ports:
        subprocess.run(
            ["ss", "-K", "dst", "127.0.0.1", "dport", "=", "5672", "sport", "=", port],
            capture_output=True,
            check=False,
        )


async def wait_healthy(provider: AMQPProvider, timeout: float = 30) -> None:
    """Poll health until the receiver is attached again (no event exposes that)."""
    await eventually(provider.health, timeout=timeout, what="healthy again")


@needs_ss
async def test_dropped_connection_mid_stream_loses_nothing(
    amqp_url: str, broker: Broker, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loafer_amqp")
    recorder = Recorder()
    cut_done = asyncio.Event()
    busy = 0
    full = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        nonlocal busy
        if len(recorder.handled) >= 50 and not cut_done.is_set():
            busy += 1  # keep deliveries in flight while the connection is cut
            if busy == 10:
                full.set()
            await cut_done.wait()
        recorder.add(content["i"])
        return True

    address = f"/amq/queue/{queue}"
    async with AMQPPublisher(amqp_url, address) as publisher:
        await asyncio.gather(*(publisher.publish(b) for b in bodies(range(300))))
    before = our_sockets()
    route = AMQPRoute(address, url=amqp_url, handler=handler, max_concurrency=10, fetch_wait=1.0)
    async with Manager([route]) as manager:
        await manager.wait_started()
        assert route.provider.reconnects == 0
        receiver_sockets = our_sockets() - before
        assert len(receiver_sockets) == 1
        await asyncio.wait_for(full.wait(), 30)
        cut(receiver_sockets)
        # Every delivery of the dead connection is dropped, never settled on the new one.
        # health may still read the dead connection's state for a moment: await the new
        # connection's socket, then health
        await eventually(
            lambda: bool(our_sockets() - before - receiver_sockets),
            timeout=30,
            what="a new connection",
        )
        await wait_healthy(route.provider)
        async with asyncio.timeout(30):  # the links of the new connection attach
            while route.provider.reconnects == 0:  # noqa: ASYNC110 - no event to await
                await asyncio.sleep(0.05)
        assert route.provider.reconnects == 1  # the loafer_reconnects metric
        cut_done.set()
        await recorder.wait(lambda: set(recorder.handled) >= set(range(300)), 60)
    assert set(recorder.handled) == set(range(300))
    await broker.wait_depth(queue, 0)
    assert await broker.depth(f"{queue}.dlq") == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "loafer_amqp"]
    assert any("connection to" in m and "lost" in m for m in messages), messages
    # The 10 held by blocked handlers were dropped with the dead connection (the broker
    # requeued them; they were handled again above), not settled on the new one.
    assert any("unsettled deliveries dropped" in m for m in messages), messages


async def test_session_ended_by_the_broker_is_recovered(
    amqp_url: str, broker: Broker, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    """RabbitMQ 3.10.8 ends the session on `modified`: force one and watch the recovery."""
    caplog.set_level(logging.INFO, logger="loafer_amqp")
    await broker.put_many(queue, bodies(range(3)))
    provider = AMQPProvider(amqp_url, f"/amq/queue/{queue}", fetch_wait=2.0)
    try:
        await provider.start(3)
        if provider.retry_outcome == "modified":
            pytest.skip("this broker accepts `modified`; nothing ends the session")
        client = provider._client
        assert client is not None
        first = [d async for d in _take(provider, 3)]
        old_generation = first[0].token.generation
        # What a naive client would do: send `modified` to RabbitMQ 3.10.8.
        client.call(setattr, client, "use_modified", True)
        await provider.settle(first[0], RETRY())
        # The broker ends the session (amqp:invalid-field); every unsettled delivery is
        # requeued; the provider opens a new session and link by itself.
        again = [d async for d in _take(provider, 3, timeout=30)]
        assert sorted(d.raw for d in again) == sorted(bodies(range(3)))
        assert all(d.token.generation > old_generation for d in again)
        for d in first[1:]:  # from the dead session: quietly not settled
            await provider.settle(d, ACCEPT)
        for d in again:
            await provider.settle(d, ACCEPT)
    finally:
        await provider.close()
    await broker.wait_depth(queue, 0)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("invalid-field" in m for m in errors), errors


async def _take(provider: AMQPProvider, n: int, timeout: float = 10.0) -> Any:
    got = 0
    async with asyncio.timeout(timeout):
        while got < n:
            for d in await provider.fetch(n - got):
                got += 1
                yield d


class _Boom(BaseException):
    """Escapes the reactor's `except Exception` guards, killing the thread."""


async def test_reactor_thread_death_raises_provider_error_then_restarts(
    amqp_url: str, broker: Broker, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    provider = AMQPProvider(amqp_url, f"/amq/queue/{queue}", fetch_wait=30.0)
    try:
        await provider.start(2)
        client = provider._client
        assert client is not None
        waiting = asyncio.create_task(provider.fetch(2))

        def boom() -> None:
            raise _Boom("simulated bug in a reactor callback")

        with caplog.at_level(logging.CRITICAL, logger="loafer_amqp"):
            client.call(boom)
            with pytest.raises(ProviderError, match="reactor thread"):
                await asyncio.wait_for(waiting, 10)  # not a 30 s hang
        assert client.dead is not None
        assert not await provider.health()
        # The next fetch starts a new reactor thread and connection.
        await broker.put(queue, b'{"after": true}')
        got = [d async for d in _take(provider, 1, timeout=20)]
        assert got[0].raw == b'{"after": true}'
        assert provider._client is not client
        await provider.settle(got[0], ACCEPT)
    finally:
        await provider.close()
    await broker.wait_depth(queue, 0)


async def test_an_exception_in_a_reactor_callback_is_logged_and_survived(
    amqp_url: str, broker: Broker, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    provider = AMQPProvider(amqp_url, f"/amq/queue/{queue}", fetch_wait=5.0)
    try:
        await provider.start(2)
        client = provider._client
        assert client is not None
        client.call(lambda: 1 / 0)
        await broker.put(queue, b"still alive")
        [d] = [d async for d in _take(provider, 1)]
        assert d.raw == b"still alive"
        await provider.settle(d, ACCEPT)
        assert client.dead is None
    finally:
        await provider.close()
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records), (
        "the error was not logged"
    )


@pytest.mark.slow  # waits on the broker noticing, which RabbitMQ 3.10 does late or not at all
async def test_deleted_queue_is_retried_until_it_comes_back(
    amqp_url: str, broker: Broker, queue: str
) -> None:
    recorder = Recorder()

    async def handler(content: Any, metadata: Any) -> bool:
        recorder.add(content["i"])
        return True

    route = AMQPRoute(
        f"/amq/queue/{queue}",
        url=amqp_url,
        handler=handler,
        fetch_wait=0.5,
        reconnect_max_delay=0.5,
    )
    async with Manager([route]) as manager:
        await manager.wait_started()
        await broker.put(queue, bodies(range(1))[0])
        await recorder.wait(lambda: 0 in recorder.handled, 15)
        async with broker.connection.channel() as channel:
            await channel.queue_delete(queue)
        # RabbitMQ 3.10 does not tell an AMQP 1.0 link that its queue is gone; the
        # connection dies (reset) later, usually within seconds (seen: 3 s), but in some
        # runs not within 45 s: then this test fails on the broker, not on the provider.
        try:
            async with asyncio.timeout(45):
                while await route.provider.health():  # noqa: ASYNC110 - no event to await
                    await asyncio.sleep(0.05)
        except TimeoutError:
            # only this broker behaviour is excused; any other failure still fails
            pytest.xfail("RabbitMQ 3.10 never reported the deleted queue to the AMQP 1.0 link")
        await broker.declare(queue)
        await wait_healthy(route.provider)
        await broker.put(queue, bodies(range(1, 2))[0])
        await recorder.wait(lambda: 1 in recorder.handled, 30)
    assert recorder.handled == [0, 1]


@pytest.mark.serial  # stop_app: every other test on RabbitMQ would fail meanwhile
@pytest.mark.slow
async def test_broker_restart_loses_nothing(amqp_url: str, broker: Broker, queue: str) -> None:
    recorder = Recorder()

    async def handler(content: Any, metadata: Any) -> bool:
        await asyncio.sleep(0.01)
        recorder.add(content["i"])
        return True

    address = f"/amq/queue/{queue}"
    async with AMQPPublisher(amqp_url, address) as publisher:
        await asyncio.gather(*(publisher.publish(b) for b in bodies(range(300))))
    route = AMQPRoute(
        address, url=amqp_url, handler=handler, max_concurrency=20, reconnect_max_delay=1.0
    )
    async with Manager([route]) as manager:
        await manager.wait_started()
        await recorder.wait(lambda: len(recorder.handled) >= 50, 30)
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        await asyncio.to_thread(rabbitmqctl, "start_app")
        await wait_healthy(route.provider, timeout=60)
        async with AMQPPublisher(amqp_url, address) as publisher:
            await asyncio.gather(*(publisher.publish(b) for b in bodies(range(300, 400))))
        await recorder.wait(lambda: set(recorder.handled) >= set(range(400)), 90)
    assert set(recorder.handled) == set(range(400))


@needs_ss
async def test_publisher_reconnects_after_a_dropped_connection(
    amqp_url: str, broker: Broker, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loafer_amqp")
    before = our_sockets()
    async with AMQPPublisher(amqp_url, f"/amq/queue/{queue}") as publisher:
        await publisher.publish(b"before")
        mine = our_sockets() - before
        assert len(mine) == 1
        cut(mine)
        async with asyncio.timeout(15):  # the publisher reconnects by itself
            while not our_sockets() - before - mine:  # noqa: ASYNC110 - another process' state
                await asyncio.sleep(0.05)
        # Sent on the new connection (queued until its link is attached if need be).
        await asyncio.wait_for(
            asyncio.gather(*(publisher.publish(f"after {i}".encode()) for i in range(20))), 30
        )
    await broker.wait_depth(queue, 21)
    got = sorted(m.body for m in await broker.get_all(queue))
    assert got == sorted([b"before", *(f"after {i}".encode() for i in range(20))])
    assert any("lost" in r.getMessage() for r in caplog.records if r.name == "loafer_amqp")
