"""KafkaProvider beyond the kit: the dead letter's headers, a rebalance that abandons an
unsettled delivery (never committed past it), settings errors at construction."""

from __future__ import annotations

import asyncio

import pytest

from loafer_core.errors import ConfigurationError
from loafer_core.outcome import ACCEPT, REJECT, RETRY
from loafer_core.provider import Delivery
from loafer_kafka import (
    DEAD_ATTEMPTS_HEADER,
    DEAD_ORIGIN_HEADER,
    DEAD_REASON_HEADER,
    KafkaProvider,
    KafkaPublisher,
)

from .conftest import KafkaAdmin, lag

pytestmark = pytest.mark.kafka


async def _one(provider: KafkaProvider, timeout: float = 20.0) -> Delivery:
    async with asyncio.timeout(timeout):
        while True:
            got = await provider.fetch(1)
            if got:
                return got[0]


async def test_reject_produces_the_dead_letter_with_its_reason_then_commits(
    admin: KafkaAdmin, kafka_url: str
) -> None:
    topic = await admin.topic(partitions=1)
    await admin.topic(f"{topic}.dlt", partitions=1)
    await admin.put(topic, b'{"poison": 1}', {"tenant": "acme"}, key="k1")
    provider = KafkaProvider(topic, url=kafka_url, idempotent=False)
    await provider.start(5)
    try:
        first = await _one(provider)
        await provider.settle(first, RETRY(0.1))
        again = await _one(provider)
        assert again.attempt == 2 and again.ordering_key == "k1"
        await provider.settle(again, REJECT("bad\nthing"))
    finally:
        await provider.close()
    [dead] = await admin.read(f"{topic}.dlt")
    assert dead.value == b'{"poison": 1}' and dead.key == b"k1"
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers == {
        "tenant": "acme",
        DEAD_REASON_HEADER: "bad thing",
        DEAD_ATTEMPTS_HEADER: "2",
        DEAD_ORIGIN_HEADER: f"{topic}/0/0",
    }
    assert await lag(kafka_url, topic, f"loafer-{topic}") == 0


async def test_a_rebalance_abandons_what_is_unsettled_and_commits_nothing_past_it(
    admin: KafkaAdmin, kafka_url: str
) -> None:
    topic = await admin.topic(partitions=2)
    async with KafkaPublisher(topic, url=kafka_url, idempotent=False) as pub:
        for i in range(6):
            await pub.publish(f'{{"i": {i}}}', partition=i % 2)
    options = {"url": kafka_url, "dead_letter_topic": None, "revoke_timeout": 1.0}
    first = KafkaProvider(topic, session_timeout=6, poll_timeout=0.2, **options)
    second = KafkaProvider(topic, session_timeout=6, poll_timeout=0.2, **options)
    await first.start(10)
    try:
        held = await _one(first)  # kept unsettled through the rebalance
        await second.start(10)
        seen: list[bytes] = []
        async with asyncio.timeout(40):
            while held.raw not in seen:
                for provider in (first, second):
                    for delivery in await provider.fetch(10):
                        seen.append(delivery.raw)
                        await provider.settle(delivery, ACCEPT)
        assert first.abandoned >= 1
        await first.settle(held, ACCEPT)  # late: ignored, the copy above was the one
        async with asyncio.timeout(20):
            while len(set(seen)) < 6:
                for provider in (first, second):
                    for delivery in await provider.fetch(10):
                        seen.append(delivery.raw)
                        await provider.settle(delivery, ACCEPT)
    finally:
        await first.close()
        await second.close()
    assert len(set(seen)) == 6
    assert await lag(kafka_url, topic, f"loafer-{topic}") == 0


def test_wrong_settings_fail_at_construction_naming_the_field() -> None:
    with pytest.raises(ConfigurationError, match="ordering"):
        KafkaProvider("orders", ordering="keys")
    with pytest.raises(ConfigurationError, match="dead_letter_topic"):
        KafkaProvider("orders", dead_letter_topic="{topic}")
    with pytest.raises(ConfigurationError, match="acks"):
        KafkaPublisher("orders", acks=1)  # idempotence needs acks="all"
    with pytest.raises(ConfigurationError, match="kafka://"):
        KafkaPublisher("orders", url="127.0.0.1:9092")
    assert KafkaProvider("orders", dead_letter_topic="dead.{topic}").dead_letter_topic == (
        "dead.orders"
    )
    assert KafkaProvider("orders").group_id == "loafer-orders"
