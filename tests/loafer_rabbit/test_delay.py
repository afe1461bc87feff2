"""RabbitPublisher's delayed publish: delay queues dead-lettered to the target."""

from __future__ import annotations

import time

import aio_pika
import pytest

from loafer_core.errors import ConfigurationError
from loafer_rabbit import RabbitPublisher
from loafer_rabbit._delay import arguments, queue_name, rounded_ms
from tests.loafer_rabbit.conftest import RabbitAdmin, unique


def test_delays_round_up_to_three_significant_digits() -> None:
    assert rounded_ms(0.0001) == 1
    assert rounded_ms(0.25) == 250
    assert rounded_ms(1.2341) == 1240
    assert rounded_ms(61.2) == 61_200
    assert rounded_ms(3600.001) == 3_610_000
    assert rounded_ms(10**9) == 2**32 - 1


def test_a_delay_queue_is_named_after_its_target_and_dead_letters_to_it() -> None:
    assert queue_name("", "orders", 1500) == "orders.delay.1500"
    assert queue_name("shop", "orders.new", 20) == "shop.orders.new.delay.20"
    declared = arguments("shop", "orders.new", 20)
    assert declared["x-message-ttl"] == 20
    assert declared["x-dead-letter-exchange"] == "shop"
    assert declared["x-dead-letter-routing-key"] == "orders.new"
    assert declared["x-expires"] > 20


@pytest.mark.rabbit
async def test_publish_many_with_a_delay_arrives_after_it(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    name = await admin.declare()
    admin.track(f"{name}.delay.800")
    started = time.monotonic()
    async with RabbitPublisher(rabbit_url, routing_key=name) as publisher:
        assert await publisher.publish_many([b"a", b"b", b"c"], delay=0.8) == 3
        assert await admin.count(name) == 0
        assert await admin.count(f"{name}.delay.800") == 3
        await publisher.publish(b"now")
    await admin.wait_count(name, 4)
    assert time.monotonic() - started >= 0.8
    assert sorted(m.body for m in await admin.drain(name)) == [b"a", b"b", b"c", b"now"]


@pytest.mark.rabbit
async def test_a_delay_through_a_named_exchange_reaches_its_bound_queue(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    exchange, name = unique("loafer-test-x"), await admin.declare()
    declared = await admin.channel.declare_exchange(exchange, aio_pika.ExchangeType.DIRECT)
    admin.track(f"{exchange}.{name}.delay.300", exchanges=(exchange,))
    queue = await admin.channel.declare_queue(name, passive=True)
    await queue.bind(declared, routing_key=name)
    async with RabbitPublisher(rabbit_url, exchange, routing_key=name) as publisher:
        await publisher.publish(b"later", delay=0.3)
        with pytest.raises(ConfigurationError, match="expiration"):
            await publisher.publish(b"x", delay=1, expiration=5)
    await admin.wait_count(name, 1)
    assert [m.body for m in await admin.drain(name)] == [b"later"]
