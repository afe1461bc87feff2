"""The dead-letter kit on a real RabbitMQ: with ``dead_letter=True`` on a queue the
provider did not declare, REJECT publishes the copy with the common keys; a replay
publishes with confirm, then acks the dead letter (at least once)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from loafer_core.deadletters import dead_letters_of
from loafer_core.errors import ConfigurationError
from loafer_core.provider import Provider
from loafer_core.testing import DeadLetterContract
from loafer_rabbit import RabbitProvider
from tests.loafer_rabbit.conftest import retry_tiers

pytestmark = pytest.mark.rabbit


def _provider(queue: str, url: str) -> RabbitProvider:
    return RabbitProvider(queue, url=url, dead_letter=True, poll_timeout=0.5)


class TestRabbitDeadLetters(DeadLetterContract):
    queue_prefix = "loafer-dlq-rabbit"

    @pytest.fixture(autouse=True)
    def _broker(self, rabbit_url: str) -> None:
        self.url = rabbit_url

    @asynccontextmanager
    async def _channel(self) -> AsyncIterator[AbstractChannel]:
        connection = await aio_pika.connect(self.url)
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
        async with self._channel() as channel:
            await channel.default_exchange.publish(
                aio_pika.Message(body, headers=dict(headers or {})), routing_key=queue
            )


def test_no_store_without_a_known_dead_letter_queue() -> None:
    provider = RabbitProvider("q", url="amqp://localhost/", dead_letter="queue")
    with pytest.raises(ConfigurationError, match="knows no dead-letter queue"):
        dead_letters_of(provider)


class TestRabbitNativeDeadLetters(TestRabbitDeadLetters):
    """A queue the provider declared: RabbitMQ dead-letters it itself, keeping no reason
    of ours (the store reads x-death); list, replay and purge still work."""

    keeps_reason = False

    async def make_provider(self, queue: str) -> Provider:
        return RabbitProvider(queue, url=self.url, dead_letter=True, declare=True, poll_timeout=0.5)

    async def create_queue(self, queue: str) -> None:
        """The provider declares the queue (with its dead-letter exchange)."""
        provider = await self.make_provider(queue)
        await provider.start(1)
        await provider.close()

    def test_the_limit_is_declared(self) -> None:
        provider = RabbitProvider("q", url=self.url, dead_letter=True, declare=True)
        store = dead_letters_of(provider)
        assert store.limits is not None and "no reason of ours" in store.limits
