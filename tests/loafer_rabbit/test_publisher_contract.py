"""loafer-core's publisher conformance kit, run against RabbitPublisher on a real RabbitMQ."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import aio_pika
import pytest

from loafer_core.testing import Arrived, PublisherContract
from loafer_rabbit import RabbitPublisher

pytestmark = pytest.mark.rabbit


class TestRabbitPublisherContract(PublisherContract):
    destination_prefix: ClassVar[str] = "loafer-pub-contract-rabbit"

    @pytest.fixture(autouse=True)
    def _broker(self, rabbit_url: str) -> None:
        self.url = rabbit_url

    async def _admin(self) -> aio_pika.abc.AbstractConnection:
        return await aio_pika.connect(
            self.url, client_properties={"connection_name": "loafer-test-pub-contract"}
        )

    async def make_publisher(self, destination: str) -> Any:
        return RabbitPublisher(self.url, routing_key=destination)

    async def create_destination(self, destination: str) -> None:
        async with await self._admin() as connection:
            channel = await connection.channel()
            await channel.declare_queue(destination, durable=True)
            # full at one message, refusing what comes next: a nack to the publisher
            await channel.declare_queue(
                f"{destination}-full",
                durable=True,
                arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
            )

    async def delete_destination(self, destination: str) -> None:
        async with await self._admin() as connection:
            channel = await connection.channel()
            for name in (destination, f"{destination}-full"):
                await channel.queue_delete(name)

    async def take(self, destination: str) -> Sequence[Arrived]:
        out: list[Arrived] = []
        async with await self._admin() as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(destination, passive=True)
            while (message := await queue.get(fail=False, no_ack=True)) is not None:
                headers = {k: _text(v) for k, v in (message.headers or {}).items()}
                out.append(Arrived(message.body, headers))
        return out

    async def make_refusing_publisher(self, destination: str) -> Any:
        return RabbitPublisher(self.url, routing_key=f"{destination}-full")

    async def make_publisher_with_secret(self, destination: str) -> tuple[Any, str]:
        secret = "s3cret-rabbit-password"
        url = f"amqp://guest:{secret}@127.0.0.1:5672/?heartbeat=5&token={secret}"
        return RabbitPublisher(url, routing_key=destination, connect_timeout=5), secret


class TestRabbitPublisherContractUnroutable(TestRabbitPublisherContract):
    """The other refusal: ``mandatory`` and no queue bound to the routing key."""

    async def make_refusing_publisher(self, destination: str) -> Any:
        return RabbitPublisher(self.url, routing_key=f"{destination}-nowhere", mandatory=True)


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
