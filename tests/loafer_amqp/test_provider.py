"""AMQPProvider against RabbitMQ's AMQP 1.0 plugin: outcomes, credit, metadata, errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from loafer_amqp import AMQPProvider, AMQPPublisher
from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.outcome import ACCEPT, REJECT, RELEASE, RETRY
from loafer_core.provider import Delivery, Provider, Support

from .conftest import Broker

pytestmark = pytest.mark.amqp

Factory = Callable[..., AMQPProvider]


@pytest.fixture
async def make_provider(amqp_url: str, broker: Broker) -> AsyncIterator[Factory]:
    # Depends on `broker` so that providers close before their queues are deleted.
    made: list[AMQPProvider] = []

    def make(queue: str, **options: Any) -> AMQPProvider:
        options.setdefault("fetch_wait", 5.0)
        provider = AMQPProvider(amqp_url, f"/amq/queue/{queue}", **options)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


def rabbit_version(provider: AMQPProvider) -> tuple[int, ...]:
    text = str(provider.peer_properties.get("version", ""))
    return tuple(int(x) for x in text.split(".")[:3] if x.isdigit())


async def fetch_n(provider: AMQPProvider, n: int, timeout: float = 10.0) -> list[Delivery]:
    out: list[Delivery] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.extend(await provider.fetch(n - len(out)))
    return out


async def test_is_a_provider_with_truthful_capabilities(make_provider: Factory) -> None:
    provider = make_provider("whatever")
    assert isinstance(provider, Provider)
    caps = provider.capabilities
    assert caps.delayed_retry is Support.EMULATED
    assert caps.attempt_count is Support.NONE  # RabbitMQ 3.10 sets no delivery-count
    assert caps.release_uncounted is Support.NATIVE
    assert caps.dead_letter is Support.NATIVE
    assert caps.lease_extension is Support.NONE
    generic = make_provider("whatever", broker="generic")
    assert generic.capabilities.attempt_count is Support.NATIVE


async def test_accept_removes_the_message(
    make_provider: Factory, broker: Broker, queue: str
) -> None:
    await broker.put_many(queue, [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}'])
    provider = make_provider(queue)
    await provider.start(10)
    deliveries = await fetch_n(provider, 3)
    assert sorted(d.raw for d in deliveries) == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    for d in deliveries:
        await provider.settle(d, ACCEPT)
    await provider.close()
    assert await broker.depth(queue) == 0
    assert await broker.depth(f"{queue}.dlq") == 0


async def test_reject_dead_letters_and_is_not_redelivered(
    make_provider: Factory, broker: Broker, queue: str
) -> None:
    await broker.put(queue, b"poison")
    provider = make_provider(queue, fetch_wait=1.0)
    await provider.start(5)
    [delivery] = await fetch_n(provider, 1)
    await provider.settle(delivery, REJECT("bad payload"))
    await broker.wait_depth(f"{queue}.dlq", 1)
    dead = await broker.get_all(f"{queue}.dlq")
    assert [m.body for m in dead] == [b"poison"]
    assert dead[0].headers["x-death"][0]["reason"] == "rejected"  # type: ignore[index]
    assert await provider.fetch(1) == []  # fetch_wait=1: nothing comes back
    assert await broker.depth(queue) == 0


async def test_release_requeues_at_once_and_the_session_survives(
    make_provider: Factory, broker: Broker, queue: str
) -> None:
    await broker.put(queue, b"again")
    provider = make_provider(queue)
    await provider.start(5)
    [first] = await fetch_n(provider, 1)
    assert first.metadata["first_acquirer"] is True
    await provider.settle(first, RELEASE)
    [second] = await fetch_n(provider, 1)
    assert second.raw == b"again"
    assert second.metadata["first_acquirer"] is False  # the broker's redelivery hint
    await provider.settle(second, ACCEPT)
    await provider.close()
    assert await broker.depth(queue) == 0
    assert await broker.depth(f"{queue}.dlq") == 0


async def test_retry_on_rabbitmq_310_is_released_never_modified(
    make_provider: Factory, broker: Broker, queue: str
) -> None:
    await broker.put_many(queue, [b"a", b"b"])
    provider = make_provider(queue)
    await provider.start(5)
    if provider.peer_properties.get("product") != "RabbitMQ" or rabbit_version(provider) >= (
        3,
        10,
        11,
    ):
        pytest.skip("this check is for RabbitMQ before 3.10.11")
    assert provider.retry_outcome == "released"
    deliveries = await fetch_n(provider, 2)
    for d in deliveries:
        await provider.settle(d, RETRY())
    # `modified` would end the session with amqp:invalid-field; instead both come back
    # on the same healthy session and can be accepted.
    again = await fetch_n(provider, 2)
    assert sorted(d.raw for d in again) == [b"a", b"b"]
    assert all(d.token.generation == deliveries[0].token.generation for d in again)
    for d in again:
        await provider.settle(d, ACCEPT)
    await provider.close()
    assert await broker.depth(queue) == 0


async def test_generic_profile_is_refused_on_rabbitmq_310(
    make_provider: Factory, queue: str
) -> None:
    provider = make_provider(queue, broker="generic")
    try:
        await provider.start(5)
    except ConfigurationError as exc:
        assert "modified" in str(exc)
    else:
        assert rabbit_version(provider) >= (3, 10, 11), "generic must be refused before 3.10.11"


async def test_retry_delay_is_held_client_side_keeping_its_credit(
    make_provider: Factory, broker: Broker, queue: str
) -> None:
    await broker.put_many(queue, [b"first", b"second"])
    provider = make_provider(queue)
    await provider.start(1)  # credit 1: the held delivery blocks the next one
    [first] = await fetch_n(provider, 1)
    assert first.raw == b"first"
    settled_at = time.monotonic()
    await provider.settle(first, RETRY(1.0))
    [again] = await fetch_n(provider, 1)
    waited = time.monotonic() - settled_at
    assert again.raw == b"first"  # released to the head of the queue after the delay
    assert waited >= 0.9, f"redelivered after {waited:.2f}s, before the 1.0s delay"
    await provider.settle(again, ACCEPT)
    [second] = await fetch_n(provider, 1)
    assert second.raw == b"second"
    await provider.settle(second, ACCEPT)
    await provider.close()
    assert await broker.depth(queue) == 0


async def test_close_settles_held_retries_and_releases_the_rest(
    make_provider: Factory, broker: Broker, queue: str
) -> None:
    await broker.put_many(queue, [b"1", b"2", b"3", b"4"])
    provider = make_provider(queue)
    await provider.start(4)
    deliveries = await fetch_n(provider, 2)
    await provider.settle(deliveries[0], RETRY(60.0))  # held for a minute...
    started = time.monotonic()
    await provider.close()  # ...but close settles it now, with the other three
    assert time.monotonic() - started < 5
    await broker.wait_depth(queue, 4)
    assert await broker.depth(f"{queue}.dlq") == 0


async def test_credit_never_exceeds_capacity(
    make_provider: Factory, broker: Broker, queue: str
) -> None:
    await broker.put_many(queue, [str(i).encode() for i in range(30)])
    provider = make_provider(queue, fetch_wait=1.0)
    await provider.start(5)
    held = await fetch_n(provider, 5)
    assert await provider.fetch(5) == []  # a full second: nothing beyond the credit
    assert await broker.depth(queue) == 25  # exactly 5 unacknowledged at the broker
    for d in held[:2]:
        await provider.settle(d, ACCEPT)
    more = await fetch_n(provider, 2)
    assert len(more) == 2
    assert await provider.fetch(5) == []
    await broker.wait_depth(queue, 23)
    for d in [*held[2:], *more]:
        await provider.settle(d, ACCEPT)
    rest = await fetch_n(provider, 5)
    assert len(rest) == 5
    await provider.close()
    await broker.wait_depth(queue, 23)  # the 5 unsettled ones were released at close


async def test_metadata_and_application_headers(
    make_provider: Factory, amqp_url: str, queue: str
) -> None:
    address = f"/amq/queue/{queue}"
    async with AMQPPublisher(amqp_url, address) as publisher:
        await publisher.publish(
            {"order": 7},
            headers={"tenant": "acme", "n": 3},
            message_id="m-1",
            correlation_id="c-9",
            subject="orders.created",
            group_id="g-1",
            reply_to="/queue/replies",
        )
    provider = make_provider(queue)
    await provider.start(2)
    [d] = await fetch_n(provider, 1)
    assert d.raw == b'{"order":7}'
    assert d.message_id == "m-1"
    meta = d.metadata
    assert meta["headers"] == {"tenant": "acme", "n": 3}
    assert meta["correlation_id"] == "c-9"
    assert meta["subject"] == "orders.created"
    assert meta["content_type"] == "application/json"
    assert meta["group_id"] == "g-1"
    assert meta["reply_to"] == "/queue/replies"
    assert meta["address"] == address
    assert meta["durable"] is True
    assert meta["delivery_count"] == 0
    assert meta["first_acquirer"] is True
    assert meta["body_type"] == "data"
    assert d.attempt is None
    assert provider.default_translator.translate(d.raw)["content"] == {"order": 7}
    await provider.settle(d, ACCEPT)


async def test_unknown_address_is_a_configuration_error(
    make_provider: Factory, amqp_url: str
) -> None:
    provider = make_provider("no-such-queue-loafer")
    with pytest.raises(ConfigurationError) as info:
        await provider.start(5)
    assert "no-such-queue-loafer" in str(info.value)
    assert "not-found" in str(info.value).lower()
    assert not await provider.health()


async def test_bad_credentials_are_a_configuration_error_and_never_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-Pa55"
    provider = AMQPProvider(f"amqp://guest:{secret}@127.0.0.1:5672", "/amq/queue/x")
    assert secret not in repr(provider)
    assert "guest:******@" in repr(provider)
    try:
        with pytest.raises(ConfigurationError) as info:
            await provider.start(5)
    finally:
        await provider.close()
    assert "authentication" in str(info.value).lower()
    assert secret not in str(info.value)
    assert secret not in caplog.text


async def test_unreachable_broker_is_a_provider_error() -> None:
    provider = AMQPProvider("amqp://127.0.0.1:1", "/amq/queue/x", connect_timeout=5)
    try:
        with pytest.raises(ProviderError):
            await provider.start(5)
    finally:
        await provider.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"url": "http://h", "address": "q"}, "amqp://"),
        ({"url": "amqp://h/q", "address": "q"}, "address"),
        ({"url": "amqp://h", "address": ""}, "address"),
        ({"url": "amqp://h", "address": "q", "broker": "artemis"}, "broker"),
        ({"url": "amqp://h", "address": "q", "fetch_wait": 0}, "fetch_wait"),
    ],
)
def test_bad_options_are_configuration_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        AMQPProvider(**kwargs)


async def test_cancelled_fetch_loses_nothing(
    make_provider: Factory, broker: Broker, queue: str
) -> None:
    provider = make_provider(queue, fetch_wait=30.0)
    await provider.start(3)
    waiting = asyncio.create_task(provider.fetch(3))
    await asyncio.sleep(0)  # let it start waiting
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await broker.put(queue, b"kept")
    [d] = await fetch_n(provider, 1)
    assert d.raw == b"kept"
    await provider.settle(d, ACCEPT)


async def test_close_releases_buffered_deliveries(
    make_provider: Factory, broker: Broker, queue: str
) -> None:
    await broker.put_many(queue, [b"1", b"2", b"3"])
    provider = make_provider(queue)
    await provider.start(3)
    await broker.wait_depth(queue, 0)  # all three are buffered on our side
    await provider.close()
    await provider.close()  # idempotent
    await broker.wait_depth(queue, 3, timeout=5)


async def test_health(make_provider: Factory, queue: str) -> None:
    provider = make_provider(queue)
    assert not await provider.health()
    await provider.start(1)
    assert await provider.health()
    await provider.close()
    assert not await provider.health()


async def test_settle_rejects_a_foreign_delivery(make_provider: Factory, queue: str) -> None:
    provider = make_provider(queue)
    await provider.start(1)
    with pytest.raises(ValueError):
        await provider.settle(Delivery(raw=b"x", token=object()), ACCEPT)


async def test_sasl_anonymous_without_credentials(
    amqp_url: str, broker: Broker, queue: str
) -> None:
    """No user in the URL: SASL ANONYMOUS (RabbitMQ's plugin logs it in as its default user)."""
    await broker.put(queue, b"anon")
    parts = urlsplit(amqp_url)
    anonymous = f"{parts.scheme}://{parts.hostname}:{parts.port or 5672}"
    provider = AMQPProvider(anonymous, f"/amq/queue/{queue}", fetch_wait=5.0)
    assert provider._connection.mechanisms() == "ANONYMOUS"
    try:
        await provider.start(1)
        [d] = await fetch_n(provider, 1)
        assert d.raw == b"anon"
        await provider.settle(d, ACCEPT)
    finally:
        await provider.close()
    await broker.wait_depth(queue, 0)


async def test_start_can_be_retried_after_a_failed_start(
    make_provider: Factory, broker: Broker, queue: str
) -> None:
    """The dispatcher retries start() after a transient failure (here: a timeout)."""
    provider = make_provider(queue, connect_timeout=0.001)
    with pytest.raises(ProviderError, match="timed out"):
        await provider.start(2)
    provider._connect_timeout = 15.0
    await provider.start(2)
    assert await provider.health()
    with pytest.raises(ProviderError, match="twice"):
        await provider.start(2)
    await broker.put(queue, b"after retry")
    [d] = await fetch_n(provider, 1)
    await provider.settle(d, ACCEPT)


async def test_virtual_host_in_the_open_frame(
    make_provider: Factory, broker: Broker, queue: str
) -> None:
    """RabbitMQ picks the vhost from the open frame's hostname, prefixed `vhost:`."""
    await broker.put(queue, b"vhost")
    provider = make_provider(queue, virtual_host="vhost:/")
    await provider.start(1)
    [d] = await fetch_n(provider, 1)
    assert d.raw == b"vhost"
    await provider.settle(d, ACCEPT)
    other = make_provider(queue, virtual_host="vhost:no-such-vhost-loafer")
    with pytest.raises(ConfigurationError, match="unauthorized-access"):
        await other.start(1)


async def test_deliveries_on_their_way_when_the_drain_begins_are_released(
    amqp_url: str, broker: Broker, queue: str
) -> None:
    from proton import Message

    from .rawsend import send_raw

    provider = AMQPProvider(amqp_url, f"/amq/queue/{queue}", fetch_wait=2.0)
    try:
        await provider.start(5)
        # Three messages arrive while the event loop is busy (a handler doing sync work):
        # the reactor receives them and posts them to the loop, which has not run them yet.
        payloads = [Message(body=str(i).encode(), inferred=True).encode() for i in range(3)]
        assert send_raw(amqp_url, f"/amq/queue/{queue}", payloads) == ["accepted"] * 3
        time.sleep(0.5)  # noqa: ASYNC251 - blocks the loop on purpose, as a sync handler would
        await provider.stop_fetching()  # the drain begins
        # never handed out: back on the queue for other consumers at once, not at close
        await broker.wait_depth(queue, 3, timeout=10.0)
    finally:
        await asyncio.wait_for(provider.close(), 20)


async def test_an_undecodable_message_does_not_eat_the_credit(
    amqp_url: str, broker: Broker, queue: str
) -> None:
    from .rawsend import UNDECODABLE, send_raw

    address = f"/amq/queue/{queue}"
    outcomes = await asyncio.wait_for(
        asyncio.to_thread(send_raw, amqp_url, address, [UNDECODABLE]), 15
    )
    assert outcomes == ["accepted"]
    await broker.put(queue, b'{"good": true}')
    provider = AMQPProvider(amqp_url, address, fetch_wait=1.0)
    try:
        await provider.start(1)  # capacity 1: the rejected one's credit must come back
        await broker.wait_depth(f"{queue}.dlq", 1, timeout=10)
        got: list[Delivery] = []
        async with asyncio.timeout(10):
            while not got:
                got = list(await provider.fetch(1))
        assert got[0].raw == b'{"good": true}'
        await provider.settle(got[0], ACCEPT)
    finally:
        await asyncio.wait_for(provider.close(), 20)
