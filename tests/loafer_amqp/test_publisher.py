"""AMQPPublisher against RabbitMQ's AMQP 1.0 plugin."""

from __future__ import annotations

import asyncio

import pytest

from loafer_amqp import AMQPProvider, AMQPPublisher
from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.outcome import ACCEPT
from loafer_core.provider import Delivery

from .conftest import Broker

pytestmark = pytest.mark.amqp


async def test_pipelined_publishes_all_land(amqp_url: str, broker: Broker, queue: str) -> None:
    async with AMQPPublisher(amqp_url, f"/amq/queue/{queue}") as publisher:
        await asyncio.gather(*(publisher.publish({"i": i}) for i in range(500)))
        # Many messages awaited their outcome at once: no round trip per message.
        assert publisher.peak_in_flight > 50
    await broker.wait_depth(queue, 500)
    got = await broker.get_all(queue)
    assert sorted(m.body for m in got) == sorted(f'{{"i":{i}}}'.encode() for i in range(500))
    assert all(m.delivery_mode == 2 for m in got)  # durable by default


async def test_publish_many_in_one_hand_over(amqp_url: str, broker: Broker, queue: str) -> None:
    async with AMQPPublisher(amqp_url, f"/amq/queue/{queue}") as publisher:
        await publisher.publish_many((f"m{i}".encode() for i in range(300)), subject="bulk")
        await publisher.publish_many([])
        assert publisher.peak_in_flight > 50
    await broker.wait_depth(queue, 300)
    got = await broker.get_all(queue)
    assert sorted(m.body for m in got) == sorted(f"m{i}".encode() for i in range(300))


async def test_body_sections_round_trip(amqp_url: str, queue: str) -> None:
    address = f"/amq/queue/{queue}"
    async with AMQPPublisher(amqp_url, address) as publisher:
        await publisher.publish(b"\x00\xffbinary")
        await publisher.publish("text é")
        await publisher.publish({"k": [1, 2]}, body_section="value")
        await publisher.publish([1, "two", 3.0], body_section="sequence")
        await publisher.publish("a string value", body_section="value")
    provider = AMQPProvider(amqp_url, address, fetch_wait=2.0)
    try:
        await provider.start(10)
        got: list[Delivery] = []
        async with asyncio.timeout(10):
            while len(got) < 5:
                got.extend(await provider.fetch(10))
        by_type = [(d.metadata["body_type"], d.raw) for d in got]
        assert by_type == [
            ("data", b"\x00\xffbinary"),
            ("data", "text é".encode()),
            ("value", {"k": [1, 2]}),
            ("sequence", [1, "two", 3.0]),
            ("value", "a string value"),
        ]
        # exactly text/plain: FastStream decodes only that to str (not with a charset)
        assert got[1].metadata["content_type"] == "text/plain"
        for d in got:
            await provider.settle(d, ACCEPT)
    finally:
        await provider.close()


async def test_unknown_option_and_bad_section_are_refused(amqp_url: str, queue: str) -> None:
    async with AMQPPublisher(amqp_url, f"/amq/queue/{queue}") as publisher:
        with pytest.raises(TypeError, match="bogus"):
            await publisher.publish(b"x", bogus=1)
        with pytest.raises(ValueError, match="body_section"):
            await publisher.publish(b"x", body_section="xml")


async def test_closed_publisher_refuses(amqp_url: str, queue: str) -> None:
    publisher = AMQPPublisher(amqp_url, f"/amq/queue/{queue}")
    await publisher.publish(b"one")
    await publisher.close()
    await publisher.close()
    with pytest.raises(ProviderError):
        await publisher.publish(b"two")


async def test_unreachable_broker_and_bad_credentials() -> None:
    with pytest.raises(ProviderError):
        async with AMQPPublisher("amqp://127.0.0.1:1", "/amq/queue/x", connect_timeout=5):
            pass
    publisher = AMQPPublisher("amqp://guest:nope-secret@127.0.0.1:5672", "/amq/queue/x")
    assert "nope-secret" not in repr(publisher)
    with pytest.raises(ConfigurationError) as info:
        await publisher.start()
    assert "nope-secret" not in str(info.value)
    await publisher.close()


async def test_no_outcome_within_the_timeout_is_a_provider_error(amqp_url: str, queue: str) -> None:
    async with AMQPPublisher(amqp_url, f"/amq/queue/{queue}", timeout=1e-6) as publisher:
        with pytest.raises(ProviderError, match="no outcome"):
            await publisher.publish(b"too slow to confirm")
