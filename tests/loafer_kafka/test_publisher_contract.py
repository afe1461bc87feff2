"""loafer-core's publisher conformance kit, run against KafkaPublisher on Tansu (each
destination a topic, read from its start without a group)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from loafer_core.testing import Arrived, PublisherContract
from loafer_kafka import KafkaPublisher
from tests.loafer_kafka.conftest import KafkaAdmin

pytestmark = pytest.mark.kafka


class TestKafkaPublisherContract(PublisherContract):
    destination_prefix: ClassVar[str] = "loafer-pub-contract-kafka"
    #: larger than the refusing publisher's max_request_size
    refused_body: ClassVar[Any] = b"x" * 5000

    @pytest.fixture(autouse=True)
    def _server(self, kafka_url: str) -> None:
        self.url = kafka_url
        self.seen: dict[str, int] = {}

    async def make_publisher(self, destination: str) -> Any:
        # Tansu refuses the idempotent producer
        return KafkaPublisher(destination, url=self.url, idempotent=False)

    async def create_destination(self, destination: str) -> None:
        admin = KafkaAdmin(self.url)
        await admin.topic(destination, partitions=1)

    async def delete_destination(self, destination: str) -> None:
        await KafkaAdmin(self.url).delete(destination)

    async def take(self, destination: str) -> Sequence[Arrived]:
        records = await KafkaAdmin(self.url).read(destination, timeout=1.0)
        start, self.seen[destination] = self.seen.get(destination, 0), len(records)
        return [Arrived(r.value, {k: v.decode() for k, v in r.headers}) for r in records[start:]]

    async def make_refusing_publisher(self, destination: str) -> Any:
        # a record larger than max_request_size: refused before it is sent
        return KafkaPublisher(
            destination,
            url=self.url,
            idempotent=False,
            connection_options={"max_request_size": 1000},
        )

    async def make_publisher_with_secret(self, destination: str) -> tuple[Any, str]:
        # SASL PLAIN credentials in the URL, nothing listening at the port
        secret = "s3cr3t-kafka-pass"
        publisher = KafkaPublisher(
            destination,
            url=f"kafka://loafer:{secret}@127.0.0.1:9/",
            timeout=3,
            connect_timeout=3,
        )
        return publisher, secret
