"""RabbitPublisher against a real RabbitMQ: confirms, pipelining, refusals."""

from __future__ import annotations

import asyncio
import json
import traceback
from collections.abc import Iterator

import pytest

from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.provider import Publisher
from loafer_rabbit import PublishRejected, RabbitPublisher
from tests.loafer_rabbit.conftest import RabbitAdmin, unique

pytestmark = pytest.mark.rabbit


async def test_publish_one_with_properties(admin: RabbitAdmin, rabbit_url: str) -> None:
    name = await admin.declare()
    async with RabbitPublisher(rabbit_url, routing_key=name) as publisher:
        assert isinstance(publisher, Publisher)
        await publisher.publish(
            {"id": 1}, headers={"tenant": "acme"}, message_id="m-1", correlation_id="c-1"
        )
        await publisher.publish("text body")
        await publisher.publish(b"\x00raw")
    messages = await admin.drain(name)
    assert [m.body for m in messages] == [b'{"id": 1}', b"text body", b"\x00raw"]
    first = messages[0]
    assert json.loads(first.body) == {"id": 1}
    assert first.content_type == "application/json"
    assert first.headers == {"tenant": "acme"}
    assert first.message_id == "m-1" and first.correlation_id == "c-1"
    assert first.delivery_mode == 2  # persistent
    # exactly text/plain: FastStream decodes only that to str (not with a charset)
    assert messages[1].content_type == "text/plain"


async def test_publish_many_is_confirmed_and_complete(admin: RabbitAdmin, rabbit_url: str) -> None:
    name = await admin.declare()
    async with RabbitPublisher(rabbit_url, routing_key=name, pipeline=100) as publisher:
        sent = await publisher.publish_many(b"%d" % i for i in range(1050))
    assert sent == 1050
    assert await admin.count(name) == 1050


async def test_unroutable_mandatory_message_raises(admin: RabbitAdmin, rabbit_url: str) -> None:
    async with RabbitPublisher(rabbit_url) as publisher:
        with pytest.raises(PublishRejected, match="no queue is bound"):
            await publisher.publish(b"x", routing_key=unique("nowhere"))
        with pytest.raises(PublishRejected):
            await publisher.publish_many([b"a", b"b"], routing_key=unique("nowhere"))
        # The channel is still usable afterwards.
        name = await admin.declare()
        await publisher.publish(b"ok", routing_key=name)
    assert await admin.count(name) == 1


async def test_unroutable_message_error_says_why_in_words(rabbit_url: str) -> None:
    """The refusal's text is the broker's reply (312 NO_ROUTE), not aiormq's unformatted
    ``"%r for routing key %r"`` template."""
    key = unique("nowhere")
    async with RabbitPublisher(rabbit_url) as publisher:
        with pytest.raises(PublishRejected) as caught:
            await publisher.publish(b"x", routing_key=key)
    text = str(caught.value)
    assert "%r" not in text
    assert "312 NO_ROUTE" in text
    assert repr(key) in text


async def test_unroutable_without_mandatory_is_dropped_silently(rabbit_url: str) -> None:
    async with RabbitPublisher(rabbit_url, mandatory=False) as publisher:
        await publisher.publish(b"x", routing_key=unique("nowhere"))


async def test_missing_exchange_is_a_configuration_error(rabbit_url: str) -> None:
    publisher = RabbitPublisher(rabbit_url, exchange=unique("no-exchange"), routing_key="k")
    with pytest.raises(ConfigurationError, match="does not exist"):
        await publisher.connect()
    await publisher.close()


async def test_publish_to_a_named_exchange(admin: RabbitAdmin, rabbit_url: str) -> None:
    exchange = unique("exchange")
    name = await admin.declare()
    admin.track(exchanges=(exchange,))
    ex = await admin.channel.declare_exchange(exchange, "direct")
    queue = await admin.channel.declare_queue(name, passive=True)
    await queue.bind(ex, routing_key="rk")
    async with RabbitPublisher(rabbit_url, exchange, routing_key="rk") as publisher:
        await publisher.publish(b"via exchange")
    assert [m.body for m in await admin.drain(name)] == [b"via exchange"]


async def test_bad_credentials_and_no_routing_key(rabbit_url: str) -> None:
    publisher = RabbitPublisher("amqp://guest:s3cr3t-pw@127.0.0.1:5672/", routing_key="q")
    with pytest.raises(ConfigurationError) as info:
        await publisher.publish(b"x")
    assert "s3cr3t-pw" not in "".join(traceback.format_exception(info.value))
    assert "s3cr3t-pw" not in repr(publisher)
    async with RabbitPublisher(rabbit_url) as ok:
        with pytest.raises(ConfigurationError, match="routing key"):
            await ok.publish(b"x")


async def test_unreachable_broker_is_a_provider_error() -> None:
    publisher = RabbitPublisher("amqp://guest:guest@127.0.0.1:1/", routing_key="q")
    with pytest.raises(ProviderError):
        await publisher.publish(b"x")


def test_bad_options() -> None:
    with pytest.raises(ConfigurationError, match="amqp"):
        RabbitPublisher("http://nope")
    with pytest.raises(ConfigurationError, match="pipeline"):
        RabbitPublisher(pipeline=0)


async def test_unencodable_body_is_a_configuration_error(rabbit_url: str) -> None:
    async with RabbitPublisher(rabbit_url, routing_key="q") as publisher:
        with pytest.raises(ConfigurationError, match="JSON"):
            await publisher.publish(object())


async def test_close_during_a_publish_fails_it_with_a_provider_error(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    name = await admin.declare()
    publisher = RabbitPublisher(rabbit_url, routing_key=name, pipeline=1000)
    await publisher.connect()
    second_window = asyncio.Event()

    def bodies() -> Iterator[bytes]:
        for i in range(20000):
            if i == 1000:  # taken once the first window of 1000 is confirmed
                second_window.set()
            yield b"%d" % i

    publishing = asyncio.create_task(publisher.publish_many(bodies()))
    async with asyncio.timeout(15):
        await second_window.wait()
    await publisher.close()  # while the second window is in flight
    async with asyncio.timeout(15):
        (result,) = await asyncio.gather(publishing, return_exceptions=True)
    # Not a CancelledError: the caller of publish_many was not cancelled.
    assert isinstance(result, ProviderError), repr(result)
    # Nothing reopened behind close()'s back; a publish now is refused, connect() reopens.
    assert publisher._connection is None
    with pytest.raises(ProviderError, match="closed"):
        await publisher.publish(b"late")
    await publisher.connect()
    await publisher.publish(b"reopened")
    await publisher.close()
