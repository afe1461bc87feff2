"""Fixtures for the RabbitMQ provider tests: a real broker, and an admin client for set-up."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from loafer_core.testing import eventually


def unique(prefix: str = "loafer-test") -> str:
    """A queue name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def retry_tiers(base: str) -> list[str]:
    """Every retry queue name a provider with ``retry_queue=base`` may declare."""
    return [base] + [f"{base}.{1 << k}ms" for k in range(33)]


def rabbitmqctl_available() -> bool:
    return shutil.which("rabbitmqctl") is not None


def _run_ctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


async def close_connections(connection_name: str) -> int:
    """Force-close (as the broker would on a network failure) the connections whose
    client-provided name is ``connection_name``; return how many were closed.

    Targets only our own connections, so parallel users of the broker are not disturbed.
    """
    listing = await asyncio.to_thread(
        _run_ctl, "list_connections", "pid", "client_properties", "-q", "--no-table-headers"
    )
    closed = 0
    for line in listing.splitlines():
        if f'{{"connection_name","{connection_name}"}}' in line:
            pid = line.split("\t", 1)[0]
            await asyncio.to_thread(_run_ctl, "close_connection", pid, "loafer test: forced close")
            closed += 1
    return closed


class RabbitAdmin:
    """Test-side RabbitMQ client: declares, fills, inspects and deletes queues."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: AbstractRobustConnection | None = None
        self.queues: set[str] = set()
        self.exchanges: set[str] = set()

    async def open(self) -> None:
        self.connection = await aio_pika.connect_robust(
            self.url, client_properties={"connection_name": "loafer-test-admin"}
        )
        self.channel = await self.connection.channel(publisher_confirms=True)

    async def declare(
        self,
        name: str | None = None,
        *,
        quorum: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> str:
        name = name or unique()
        args = dict(arguments or {})
        if quorum:
            args["x-queue-type"] = "quorum"
        await self.channel.declare_queue(name, durable=True, arguments=args or None)
        self.queues.add(name)
        return name

    def track(self, *queues: str, exchanges: tuple[str, ...] = ()) -> None:
        """Delete these at teardown too (queues a provider declared)."""
        self.queues.update(queues)
        self.exchanges.update(exchanges)

    async def put(
        self,
        queue: str,
        body: bytes,
        headers: Mapping[str, Any] | None = None,
        **properties: Any,
    ) -> None:
        properties.setdefault("delivery_mode", aio_pika.DeliveryMode.PERSISTENT)
        await self.channel.default_exchange.publish(
            aio_pika.Message(body, headers=dict(headers or {}), **properties),
            routing_key=queue,
            timeout=30,
        )

    async def put_many(self, queue: str, bodies: list[bytes]) -> None:
        await asyncio.gather(*(self.put(queue, body) for body in bodies))

    async def count(self, queue: str) -> int:
        """Messages ready in ``queue`` (not counting unacknowledged ones)."""
        assert self.connection is not None
        async with self.connection.channel() as channel:
            declared = await channel.declare_queue(queue, passive=True, robust=False)
            return int(declared.declaration_result.message_count or 0)

    async def wait_count(self, queue: str, expected: int, timeout: float = 15.0) -> int:
        """Poll the broker until ``queue`` holds ``expected`` ready messages (or time out)."""

        async def reached() -> bool:
            return await self.count(queue) == expected

        await eventually(reached, timeout=timeout, what=f"{expected} messages in {queue!r}")
        return expected

    async def drain(self, queue: str) -> list[AbstractIncomingMessage]:
        """Take (and ack) every ready message of ``queue``."""
        assert self.connection is not None
        out: list[AbstractIncomingMessage] = []
        async with self.connection.channel() as channel:
            declared = await channel.declare_queue(queue, passive=True, robust=False)
            while True:
                message = await declared.get(fail=False, timeout=10)
                if message is None:
                    return out
                await message.ack()
                out.append(message)

    async def exists(self, queue: str) -> bool:
        assert self.connection is not None
        channel = await self.connection.channel()
        try:
            await channel.declare_queue(queue, passive=True, robust=False)
            return True
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
        finally:
            if not channel.is_closed:
                await channel.close()

    async def delete(self, queue: str) -> None:
        assert self.connection is not None
        async with self.connection.channel() as channel:
            await channel.queue_delete(queue)

    async def cleanup(self) -> None:
        """Delete what the test made, on a fresh connection (a test may have restarted the
        broker, leaving the admin connection reconnecting)."""
        assert self.connection is not None
        await self.connection.close()
        queues = set(self.queues)
        for queue in self.queues:
            if queue.endswith(".retry"):
                queues.update(retry_tiers(queue))
        async with asyncio.timeout(60):
            while True:
                try:
                    connection = await aio_pika.connect(self.url)
                    break
                except aio_pika.exceptions.AMQPConnectionError:
                    await asyncio.sleep(0.5)  # the broker is still starting
        async with connection:
            channel = await connection.channel()
            for queue in queues:
                await channel.queue_delete(queue)
            for exchange in self.exchanges:
                await channel.exchange_delete(exchange)


@contextlib.asynccontextmanager
async def open_admin(url: str) -> AsyncIterator[RabbitAdmin]:
    """A :class:`RabbitAdmin` on ``url``, opened; what it declared is deleted at the end."""
    helper = RabbitAdmin(url)
    await helper.open()
    try:
        yield helper
    finally:
        await helper.cleanup()


@pytest.fixture
async def admin(rabbit_url: str) -> AsyncIterator[RabbitAdmin]:
    """An admin client; every queue it declares or tracks is deleted after the test."""
    async with open_admin(rabbit_url) as helper:
        yield helper


class SilentBroker:
    """A TCP server that accepts connections and never answers (a hung broker)."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        self.accepted.set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"amqp://guest:guest@127.0.0.1:{port}/"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()


@pytest.fixture
async def silent() -> AsyncIterator[tuple[SilentBroker, str]]:
    broker = SilentBroker()
    url = await broker.start()
    try:
        yield broker, url
    finally:
        await broker.stop()
