"""The loafer-core conformance kit, run against AMQPProvider on RabbitMQ's AMQP 1.0 plugin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import ClassVar

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from loafer_amqp import AMQPProvider, AMQPPublisher
from loafer_core.provider import Capabilities, Provider
from loafer_core.testing import ProviderContract

pytestmark = pytest.mark.amqp


def _provider(queue: str, url: str) -> AMQPProvider:
    return AMQPProvider(url, f"/amq/queue/{queue}", fetch_wait=1.0)


class TestAMQPContract(ProviderContract):
    """Every capability AMQPProvider claims on RabbitMQ (profile "auto") is exercised."""

    capabilities: ClassVar[Capabilities] = _provider("q", "amqp://localhost").capabilities
    queue_prefix: ClassVar[str] = "loafer-contract-amqp"
    large_body_size: ClassVar[int] = 5 * 1024 * 1024
    timeout: ClassVar[float] = 15.0

    @pytest.fixture(autouse=True)
    def _broker(self, amqp_url: str, pika_url: str) -> None:
        self.url = amqp_url
        self.pika_url = pika_url

    @asynccontextmanager
    async def _channel(self) -> AsyncIterator[AbstractChannel]:
        connection = await aio_pika.connect(self.pika_url)
        try:
            yield await connection.channel()
        finally:
            await connection.close()

    async def make_provider(self, queue: str) -> Provider:
        return _provider(queue, self.url)

    async def create_queue(self, queue: str) -> None:
        async with self._channel() as channel:
            await channel.declare_queue(f"{queue}.dlq", durable=True)
            await channel.declare_queue(
                queue,
                durable=True,
                arguments={
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": f"{queue}.dlq",
                },
            )

    async def delete_queue(self, queue: str) -> None:
        async with self._channel() as channel:
            await channel.queue_delete(queue)
            await channel.queue_delete(f"{queue}.dlq")

    async def put(self, queue: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        await self.put_many(queue, [body], headers)

    async def put_many(
        self, queue: str, bodies: Sequence[bytes], headers: Mapping[str, str] | None = None
    ) -> None:
        async with AMQPPublisher(self.url, f"/amq/queue/{queue}") as publisher:
            await asyncio.gather(*(publisher.publish(b, headers=headers) for b in bodies))

    async def dead_letters(self, queue: str) -> list[bytes] | None:
        """Peek at ``<queue>.dlq``: take everything unacked; closing the channel requeues it."""
        bodies: list[bytes] = []
        async with self._channel() as channel:
            declared = await channel.declare_queue(f"{queue}.dlq", passive=True)
            while True:
                message = await declared.get(fail=False, no_ack=False, timeout=10)
                if message is None:
                    return bodies
                bodies.append(message.body)
