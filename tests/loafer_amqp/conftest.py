"""Fixtures for the AMQP 1.0 tests: RabbitMQ's rabbitmq_amqp1_0 plugin.

Broker state is observed through AMQP 0-9-1 (aio-pika), never through the code under test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest

from loafer_core.testing import eventually


@pytest.fixture(scope="session")
def pika_url(amqp_url: str) -> str:
    """The same broker's AMQP 0-9-1 URL, for observing queues."""
    parts = urlsplit(amqp_url)
    return f"amqp://{parts.netloc}/"


def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    """Run rabbitmqctl (skip when it is not available)."""
    exe = shutil.which("rabbitmqctl")
    if exe is None or os.environ.get("LOAFER_TEST_AMQP_URL"):
        pytest.skip("rabbitmqctl is not available for this broker")
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


class Broker:
    """AMQP 0-9-1 view of the broker: declare, inspect and delete queues."""

    def __init__(self, connection: aio_pika.abc.AbstractRobustConnection) -> None:
        self.connection = connection
        self.created: list[str] = []

    async def declare(self, name: str, *, dead_letter: bool = True, **arguments: Any) -> str:
        async with self.connection.channel() as channel:
            args: dict[str, Any] = dict(arguments)
            if dead_letter:
                await channel.declare_queue(f"{name}.dlq", durable=True)
                self.created.append(f"{name}.dlq")
                args.update(
                    {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{name}.dlq"}
                )
            await channel.declare_queue(name, durable=True, arguments=args)
            self.created.append(name)
        return name

    async def depth(self, name: str) -> int:
        """Messages ready in ``name`` (not counting unacknowledged ones)."""
        async with self.connection.channel() as channel:
            queue = await channel.declare_queue(name, passive=True)
            count = queue.declaration_result.message_count
            assert count is not None
            return count

    async def wait_depth(self, name: str, expected: int, timeout: float = 10.0) -> int:
        """Wait until ``name`` holds ``expected`` ready messages (polls the broker)."""

        async def reached() -> bool:
            return await self.depth(name) == expected

        await eventually(reached, timeout=timeout, what=f"{expected} messages in {name!r}")
        return expected

    async def put(
        self, name: str, body: bytes, headers: dict[str, Any] | None = None, **props: Any
    ) -> None:
        async with self.connection.channel(publisher_confirms=True) as channel:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body,
                    headers=headers,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    **props,
                ),
                routing_key=name,
            )

    async def put_many(self, name: str, bodies: list[bytes]) -> None:
        async with self.connection.channel(publisher_confirms=True) as channel:
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(b, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=name,
                    )
                    for b in bodies
                )
            )

    async def get_all(
        self, name: str, timeout: float = 5.0
    ) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Take (and ack) every message now in ``name``."""
        out: list[aio_pika.abc.AbstractIncomingMessage] = []
        async with self.connection.channel() as channel:
            queue = await channel.declare_queue(name, passive=True)
            while True:
                message = await queue.get(fail=False, timeout=timeout)
                if message is None:
                    return out
                await message.ack()
                out.append(message)

    async def delete_all(self, url: str) -> None:
        """Delete every queue made here, on a fresh connection (the broker may have just
        restarted under a test), retrying for a while."""
        async with asyncio.timeout(30):
            while True:
                try:
                    connection = await aio_pika.connect(url)
                except (ConnectionError, aio_pika.exceptions.AMQPConnectionError):
                    await asyncio.sleep(0.5)  # the broker is coming back: nothing to await
                    continue
                try:
                    channel = await connection.channel()
                    for name in self.created:
                        await channel.queue_delete(name)
                    return
                finally:
                    await connection.close()


@pytest.fixture
async def broker(pika_url: str) -> AsyncIterator[Broker]:
    connection = await aio_pika.connect_robust(pika_url)
    b = Broker(connection)
    try:
        yield b
    finally:
        try:
            await connection.close()
        finally:
            await b.delete_all(pika_url)


@pytest.fixture
async def queue(broker: Broker) -> str:
    """A fresh durable queue with a dead-letter queue ``<name>.dlq``."""
    return await broker.declare(f"loafer-amqp-{uuid.uuid4().hex[:12]}")
