"""The loafer-core conformance kit, run against KafkaProvider on Tansu."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import ClassVar

import pytest

from loafer_core.provider import Capabilities, Provider, Support
from loafer_core.testing import ProviderContract
from loafer_kafka import KafkaProvider
from tests.loafer_kafka.conftest import KafkaAdmin

pytestmark = pytest.mark.kafka


def _provider(queue: str, url: str) -> KafkaProvider:
    # Tansu refuses the idempotent producer (the dead letters' producer here)
    return KafkaProvider(queue, url=url, idempotent=False, poll_timeout=0.5, session_timeout=6)


class TestKafkaContract(ProviderContract):
    """Every capability KafkaProvider claims with a dead-letter topic is exercised."""

    capabilities: ClassVar[Capabilities] = _provider("kit", "kafka://127.0.0.1:9092").capabilities
    queue_prefix: ClassVar[str] = "loafer-contract-kafka"
    # a group join takes about 3 s on Tansu
    redelivery_timeout: ClassVar[float] = 15.0
    duplicate_window: ClassVar[float] = 1.0

    @pytest.fixture(autouse=True)
    def _broker(self, kafka_url: str) -> None:
        self.url = kafka_url

    @contextlib.asynccontextmanager
    async def _admin(self) -> AsyncIterator[KafkaAdmin]:
        admin = KafkaAdmin(self.url)
        try:
            yield admin
        finally:
            admin.created.clear()  # delete_queue removes them
            await admin.close()

    async def make_provider(self, queue: str) -> Provider:
        return _provider(queue, self.url)

    async def create_queue(self, queue: str) -> None:
        async with self._admin() as admin:
            await admin.topic(queue, partitions=3)
            await admin.topic(f"{queue}.dlt", partitions=1)

    async def delete_queue(self, queue: str) -> None:
        async with self._admin() as admin:
            await admin.delete(queue, f"{queue}.dlt")

    async def put(self, queue: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        async with self._admin() as admin:
            await admin.put(queue, body, headers)

    async def put_many(self, queue: str, bodies: Sequence[bytes]) -> None:
        async with self._admin() as admin:
            await admin.put_many(queue, bodies)

    async def put_keyed(self, queue: str, body: bytes, key: str) -> None:
        async with self._admin() as admin:
            await admin.put(queue, body, key=key)

    async def dead_letters(self, queue: str) -> list[bytes] | None:
        async with self._admin() as admin:
            return [r.value for r in await admin.read(f"{queue}.dlt", timeout=2.0)]


def test_declared_capabilities_are_what_kafka_does() -> None:
    """Held in the consumer (emulated) but ordering keys; no lease."""
    caps = _provider("t-name", "kafka://127.0.0.1:9092").capabilities
    assert caps.delayed_retry is Support.EMULATED
    assert caps.attempt_count is Support.EMULATED
    assert caps.release_uncounted is Support.EMULATED
    assert caps.dead_letter is Support.EMULATED
    assert caps.ordering_keys is Support.NATIVE
    assert caps.lease_extension is Support.NONE
    assert caps.max_retry_delay == 300.0
    bare = KafkaProvider("t-name", dead_letter_topic=None, ordering="none").capabilities
    assert bare.dead_letter is Support.NONE
    assert bare.ordering_keys is Support.NONE
