"""NATSPublisher against a real JetStream: publish acks, pipelining, the payload limit."""

from __future__ import annotations

import asyncio

import pytest

from loafer_core.errors import ConfigurationError, ProviderError
from loafer_nats import MessageTooLarge, NATSPublisher, PublishRejected
from loafer_nats.publisher import message_size

from .conftest import NatsAdmin, unique

pytestmark = pytest.mark.nats


async def test_publish_waits_for_the_ack_and_keeps_headers(admin: NatsAdmin) -> None:
    stream = await admin.stream(consumer=None)
    async with NATSPublisher(f"{stream}.in", url=admin.url) as publisher:
        await publisher.publish({"a": 1}, headers={"k": "v", "n": 3})
        await publisher.publish("text")
        await publisher.publish(b"raw", msg_id="one")
        await publisher.publish(b"raw", msg_id="one")  # de-duplicated by the stream
    stored = await admin.stored(stream)
    assert [m.data for m in stored] == [b'{"a": 1}', b"text", b"raw"]
    assert stored[0].headers == {"k": "v", "n": "3"}
    assert not stored[1].headers  # no headers: none added


async def test_publish_many_is_pipelined_and_counted(admin: NatsAdmin) -> None:
    stream = await admin.stream(consumer=None)
    async with NATSPublisher(f"{stream}.in", url=admin.url, pipeline=100) as publisher:
        sent = await publisher.publish_many(f'{{"i": {i}}}'.encode() for i in range(1050))
    assert sent == 1050
    assert await admin.messages(stream) == 1050


async def test_too_large_is_refused_before_sending_naming_the_limit(admin: NatsAdmin) -> None:
    stream = await admin.stream(consumer=None)
    async with NATSPublisher(f"{stream}.in", url=admin.url) as publisher:
        limit = publisher.max_payload
        assert limit == 1024 * 1024
        with pytest.raises(MessageTooLarge, match=f"max_payload of {limit} bytes") as caught:
            await publisher.publish(b"x" * (limit + 1))
        assert isinstance(caught.value, ValueError)
        # headers count too
        with pytest.raises(MessageTooLarge):
            await publisher.publish(b"x" * (limit - 10), headers={"k": "v" * 20})
        with pytest.raises(MessageTooLarge):
            await publisher.publish_many([b"ok", b"x" * (limit + 1)])
        # nothing was sent, and the connection still works
        await publisher.publish(b"x" * 1_000_000)
        await publisher.publish(b"x" * (limit - 200), headers={"k": "v"})
    stored = await admin.stored(stream)
    assert [len(m.data) for m in stored] == [1_000_000, limit - 200]


def test_message_size_counts_headers() -> None:
    assert message_size(b"abc", None) == 3
    assert message_size(b"abc", {"k": "v"}) == 3 + len(b"NATS/1.0\r\n\r\n") + len(b"k: v\r\n")


async def test_no_stream_for_the_subject_is_rejected(admin: NatsAdmin) -> None:
    async with NATSPublisher(f"nowhere.{unique()}", url=admin.url, timeout=5) as publisher:
        with pytest.raises(PublishRejected, match="no stream"):
            await publisher.publish(b"{}")
        with pytest.raises(PublishRejected, match="no stream"):
            await publisher.publish_many([b"{}", b"{}"])


async def test_expected_stream_mismatch_is_rejected(admin: NatsAdmin) -> None:
    stream = await admin.stream(consumer=None)
    async with NATSPublisher(f"{stream}.in", url=admin.url, stream="other") as publisher:
        with pytest.raises(PublishRejected):
            await publisher.publish(b"{}")


async def test_no_subject_and_bad_body_are_configuration_errors(admin: NatsAdmin) -> None:
    publisher = NATSPublisher(url=admin.url)
    with pytest.raises(ConfigurationError, match="no subject"):
        await publisher.publish(b"{}")
    with pytest.raises(ConfigurationError, match="JSON"):
        await publisher.publish(object(), subject="x")
    await publisher.close()


async def test_closed_publisher_refuses_until_connect(admin: NatsAdmin) -> None:
    stream = await admin.stream(consumer=None)
    publisher = NATSPublisher(f"{stream}.in", url=admin.url)
    await publisher.publish(b"1")
    await publisher.close()
    await publisher.close()
    with pytest.raises(ProviderError, match="closed"):
        await publisher.publish(b"2")
    await publisher.connect()
    await publisher.publish(b"3")
    await publisher.close()
    assert await admin.messages(stream) == 2


async def test_unreachable_server_is_a_provider_error() -> None:
    publisher = NATSPublisher("x", url="nats://127.0.0.1:1", connect_timeout=1.0)
    with pytest.raises(ProviderError, match=r"timed out connecting|cannot connect"):
        await publisher.publish(b"{}")
    await publisher.close()


async def test_close_while_connecting_leaves_nothing_open(admin: NatsAdmin) -> None:
    publisher = NATSPublisher("x", url=admin.url)
    connecting = asyncio.create_task(publisher.connect())
    await asyncio.sleep(0)  # the connect has begun
    await publisher.close()
    with pytest.raises(ProviderError, match="closed"):
        await connecting
    assert publisher.max_payload is None  # no client kept
