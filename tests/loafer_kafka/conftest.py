"""Fixtures for the Kafka provider tests: the broker (``kafka_url``, from
tests/_brokers.py) and an admin client for set-up (unique topics, deleted after each
test)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest

from loafer_core.settings import Connection
from loafer_kafka._client import options


def unique(prefix: str = "loafer-test") -> str:
    """A topic name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class KafkaAdmin:
    """Test-side client of the broker: creates, fills, reads and deletes topics.

    Producers are not idempotent: Tansu refuses the idempotent producer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.options = options(Connection(url=url), "loafer-test-admin")
        self._producer: Any = None
        self.created: list[str] = []

    async def topic(self, name: str | None = None, partitions: int = 3) -> str:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        name = name or unique()
        admin = AIOKafkaAdminClient(**self.options)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            await admin.close()
        self.created.append(name)
        return name

    async def delete(self, *names: str) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**self.options)
        await admin.start()
        try:
            await admin.delete_topics(list(names))
        except Exception:  # already gone, or never made
            pass
        finally:
            await admin.close()

    async def producer(self) -> Any:
        from aiokafka import AIOKafkaProducer

        if self._producer is None:
            self._producer = AIOKafkaProducer(
                **self.options, acks="all", enable_idempotence=False, linger_ms=2
            )
            await self._producer.start()
        return self._producer

    async def put(
        self,
        topic: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> None:
        producer = await self.producer()
        await producer.send_and_wait(
            topic,
            body,
            key=key.encode() if key is not None else None,
            headers=[(k, v.encode()) for k, v in (headers or {}).items()],
        )

    async def put_many(self, topic: str, bodies: Sequence[bytes]) -> None:
        producer = await self.producer()
        futures = [await producer.send(topic, body) for body in bodies]
        await asyncio.gather(*futures)

    async def read(self, topic: str, timeout: float = 3.0) -> list[Any]:
        """Every record of ``topic`` from the start (no group), waiting up to
        ``timeout`` for the first."""
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(topic, **self.options, auto_offset_reset="earliest")
        await consumer.start()
        out: list[Any] = []
        try:
            batch = await consumer.getmany(timeout_ms=int(timeout * 1000))
            while batch:
                for records in batch.values():
                    out.extend(records)
                batch = await consumer.getmany(timeout_ms=500)
        finally:
            await consumer.stop()
        return out

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self.created:
            names, self.created = self.created, []
            await self.delete(*names)


async def lag(url: str, topic: str, group: str) -> int:
    """Records of ``topic`` after ``group``'s committed offsets, the ends read from the
    records themselves (Tansu's ListOffsets "latest" answers wrong ends)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    ends: dict[int, int] = {}
    for record in await KafkaAdmin(url).read(topic, timeout=2.0):
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    consumer = AIOKafkaConsumer(**options(Connection(url=url), "loafer-test-lag"), group_id=group)
    await consumer.start()
    try:
        total = 0
        for partition, end in ends.items():
            total += end - (await consumer.committed(TopicPartition(topic, partition)) or 0)
        return total
    finally:
        await consumer.stop()


@pytest.fixture
async def admin(kafka_url: str) -> AsyncIterator[KafkaAdmin]:
    """A :class:`KafkaAdmin`; the topics it made are deleted after the test."""
    made = KafkaAdmin(kafka_url)
    try:
        yield made
    finally:
        await made.close()
