"""loafer-core's publisher conformance kit, run against AMQPPublisher on RabbitMQ's AMQP 1.0
plugin (what arrived is read with AMQPProvider: over AMQP 0-9-1 the application
properties arrive encoded, not as headers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aio_pika
import pytest

from loafer_amqp import AMQPProvider, AMQPPublisher
from loafer_core.outcome import ACCEPT
from loafer_core.testing import Arrived, PublisherContract

pytestmark = pytest.mark.amqp


class TestAMQPPublisherContract(PublisherContract):
    destination_prefix: ClassVar[str] = "loafer-pub-contract-amqp"

    @pytest.fixture(autouse=True)
    def _broker(self, amqp_url: str) -> None:
        self.url = amqp_url
        self.pika_url = f"amqp://{urlsplit(amqp_url).netloc}/"
        self.readers: dict[str, AMQPProvider] = {}

    async def _admin(self) -> aio_pika.abc.AbstractConnection:
        return await aio_pika.connect(
            self.pika_url, client_properties={"connection_name": "loafer-test-pub-contract"}
        )

    async def make_publisher(self, destination: str) -> Any:
        return AMQPPublisher(self.url, f"/amq/queue/{destination}")

    async def create_destination(self, destination: str) -> None:
        async with await self._admin() as connection:
            channel = await connection.channel()
            await channel.declare_queue(destination, durable=True)

    async def delete_destination(self, destination: str) -> None:
        reader = self.readers.pop(destination, None)
        if reader is not None:
            await reader.close()
        async with await self._admin() as connection:
            channel = await connection.channel()
            await channel.queue_delete(destination)

    async def take(self, destination: str) -> Sequence[Arrived]:
        reader = self.readers.get(destination)
        if reader is None:
            reader = AMQPProvider(self.url, f"/amq/queue/{destination}", fetch_wait=0.2)
            await reader.start(100)
            self.readers[destination] = reader
        out: list[Arrived] = []
        for delivery in await reader.fetch(100):
            body = delivery.body
            out.append(
                Arrived(
                    body.encode() if isinstance(body, str) else bytes(body),
                    dict(delivery.metadata.get("headers") or {}),
                )
            )
            await reader.settle(delivery, ACCEPT)
        return out

    def test_a_refused_publish_raises_publish_refused(self) -> None:
        pytest.skip(
            "RabbitMQ 3.10's AMQP 1.0 plugin refuses nothing cleanly: an unroutable message "
            "is accepted, and a publish to a reject-publish queue drops the connection "
            "(ProviderError), so a 'rejected' outcome cannot be provoked here"
        )

    async def make_publisher_with_secret(self, destination: str) -> tuple[Any, str]:
        secret = "s3cret-amqp-password"
        host = urlsplit(self.url).netloc.rsplit("@", 1)[-1]
        publisher = AMQPPublisher(
            f"amqp://guest:{secret}@{host}", f"/amq/queue/{destination}", connect_timeout=5
        )
        return publisher, secret
