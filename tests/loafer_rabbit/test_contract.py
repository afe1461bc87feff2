"""The loafer-core conformance kit, run against RabbitProvider on a real RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import ClassVar

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustChannel

from loafer_core.provider import Capabilities, Provider
from loafer_core.testing import ProviderContract
from loafer_rabbit import RabbitProvider
from tests.loafer_rabbit.conftest import retry_tiers

pytestmark = pytest.mark.rabbit


def _provider(queue: str, url: str) -> RabbitProvider:
    return RabbitProvider(queue, url=url, dead_letter=True, poll_timeout=1.0)


class TestRabbitContract(ProviderContract):
    """Every capability RabbitProvider claims with ``dead_letter=True`` is exercised."""

    capabilities: ClassVar[Capabilities] = _provider("q", "amqp://localhost/").capabilities
    queue_prefix: ClassVar[str] = "loafer-contract-rabbit"
    large_body_size: ClassVar[int] = 5 * 1024 * 1024

    @pytest.fixture(autouse=True)
    def _broker(self, rabbit_url: str) -> None:
        self.url = rabbit_url

    @asynccontextmanager
    async def _channel(self) -> AsyncIterator[AbstractRobustChannel]:
        connection = await aio_pika.connect_robust(
            self.url, client_properties={"connection_name": "loafer-test-contract"}
        )
        try:
            yield await connection.channel(publisher_confirms=True)
        finally:
            await connection.close()

    async def make_provider(self, queue: str) -> Provider:
        return _provider(queue, self.url)

    async def create_queue(self, queue: str) -> None:
        async with self._channel() as channel:
            await channel.declare_queue(queue, durable=True)

    async def delete_queue(self, queue: str) -> None:
        provider = _provider(queue, self.url)
        async with self._channel() as channel:
            for name in (queue, provider.dead_letter_queue, *retry_tiers(provider.retry_queue)):
                await channel.queue_delete(name)
            await channel.exchange_delete(provider.dead_letter_exchange)

    async def put(self, queue: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        await self.put_many(queue, [body], headers)

    async def put_many(
        self, queue: str, bodies: Sequence[bytes], headers: Mapping[str, str] | None = None
    ) -> None:
        async with self._channel() as channel:
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            body,
                            headers=dict(headers or {}),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=queue,
                        timeout=30,
                    )
                    for body in bodies
                )
            )

    async def dead_letters(self, queue: str) -> list[bytes] | None:
        """Peek at the dead-letter queue: take everything unacked, then let the channel's
        close put it all back."""
        dlq = _provider(queue, self.url).dead_letter_queue
        bodies: list[bytes] = []
        async with self._channel() as channel:
            try:
                declared = await channel.declare_queue(dlq, passive=True, robust=False)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                return []
            while True:
                message = await declared.get(fail=False, no_ack=False, timeout=10)
                if message is None:
                    return bodies
                bodies.append(message.body)
