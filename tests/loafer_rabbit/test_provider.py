"""RabbitProvider against a real RabbitMQ: start-up checks, each outcome, metadata, prefetch."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.outcome import ACCEPT, REJECT, RELEASE, RETRY
from loafer_core.provider import Delivery, Provider, Support
from loafer_rabbit import ATTEMPT_HEADER, REJECT_REASON_HEADER, RabbitProvider
from tests.loafer_rabbit.conftest import RabbitAdmin, unique

pytestmark = pytest.mark.rabbit

MakeProvider = Callable[..., Coroutine[Any, Any, RabbitProvider]]


@pytest.fixture
async def make_provider(rabbit_url: str, admin: RabbitAdmin) -> AsyncIterator[MakeProvider]:
    """Start a provider on ``queue`` (closed, and its side queues deleted, at teardown)."""
    providers: list[RabbitProvider] = []

    async def make(queue: str, capacity: int = 10, **options: Any) -> RabbitProvider:
        options.setdefault("url", rabbit_url)
        options.setdefault("poll_timeout", 1.0)
        provider = RabbitProvider(queue, **options)
        admin.track(
            provider.retry_queue,
            provider.dead_letter_queue,
            exchanges=(provider.dead_letter_exchange,),
        )
        providers.append(provider)
        await provider.start(capacity)
        return provider

    yield make
    for provider in providers:
        await provider.close()


async def fetch_n(provider: RabbitProvider, n: int, timeout: float = 15.0) -> list[Delivery]:
    """Fetch until ``n`` deliveries arrived (bounded by ``timeout``)."""
    out: list[Delivery] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.extend(await provider.fetch(n - len(out)))
    return out


# -- start-up ---------------------------------------------------------------------------


async def test_is_a_provider_with_truthful_capabilities(rabbit_url: str) -> None:
    plain = RabbitProvider("q", url=rabbit_url)
    assert isinstance(plain, Provider)
    caps = plain.capabilities
    assert caps.delayed_retry is Support.EMULATED
    assert caps.attempt_count is Support.EMULATED
    assert caps.release_uncounted is Support.NATIVE
    assert caps.dead_letter is Support.NONE
    assert caps.ordering_keys is Support.NONE
    assert caps.lease_extension is Support.NONE
    assert caps.max_retry_delay is not None and caps.max_retry_delay > 49 * 24 * 3600
    assert RabbitProvider("q", url=rabbit_url, delayed_retry=False).capabilities.delayed_retry is (
        Support.NONE
    )
    assert RabbitProvider("q", dead_letter=True).capabilities.dead_letter is Support.EMULATED
    assert (
        RabbitProvider("q", dead_letter=True, declare=True).capabilities.dead_letter
        is Support.NATIVE
    )
    assert RabbitProvider("q", dead_letter="queue").capabilities.dead_letter is Support.NATIVE


async def test_missing_queue_is_a_configuration_error_naming_queue_and_vhost(
    rabbit_url: str,
) -> None:
    name = unique("missing")
    provider = RabbitProvider(name, url=rabbit_url)
    with pytest.raises(ConfigurationError) as info:
        await provider.start(5)
    assert name in str(info.value)
    assert "vhost '/'" in str(info.value)
    assert "declare=True" in str(info.value)
    await provider.close()


async def test_bad_credentials_are_a_configuration_error_without_the_password() -> None:
    provider = RabbitProvider("q", url="amqp://guest:s3cr3t-pw@127.0.0.1:5672/")
    with pytest.raises(ConfigurationError) as info:
        await provider.start(5)
    text = str(info.value)
    assert "s3cr3t-pw" not in text and "s3cr3t-pw" not in repr(info.value)
    # Nothing in the whole traceback (chained exceptions included) shows it either.
    assert "s3cr3t-pw" not in "".join(traceback.format_exception(info.value))
    assert "login" in text
    await provider.close()


async def test_unknown_vhost_is_a_configuration_error() -> None:
    provider = RabbitProvider("q", url="amqp://guest:guest@127.0.0.1:5672/no-such-vhost")
    with pytest.raises(ConfigurationError, match="no-such-vhost"):
        await provider.start(5)


async def test_unreachable_broker_is_a_provider_error_without_the_password() -> None:
    provider = RabbitProvider("q", url="amqp://guest:s3cr3t-pw@127.0.0.1:1/", connect_timeout=5)
    with pytest.raises(ProviderError) as info:
        await provider.start(5)
    assert "s3cr3t-pw" not in "".join(traceback.format_exception(info.value))
    assert "******" in str(info.value)


def test_repr_and_describe_mask_the_password() -> None:
    provider = RabbitProvider("orders", url="amqp://user:hunter2@broker.example:5672/prod")
    for text in (repr(provider), provider.describe(), provider.url):
        assert "hunter2" not in text
    assert "******" in repr(provider)
    assert provider.vhost == "prod"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"url": "http://x"}, "amqp://"),
        ({"queue_type": "stream"}, "queue_type"),
        ({"dead_letter": "yes"}, "dead_letter"),
        ({"prefetch_headroom": -1}, "prefetch_headroom"),
        ({"poll_timeout": 0}, "poll_timeout"),
    ],
)
def test_bad_options_are_configuration_errors(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        RabbitProvider("q", **options)


def test_empty_queue_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="queue"):
        RabbitProvider("")


async def test_declare_creates_the_queue(admin: RabbitAdmin, make_provider: MakeProvider) -> None:
    name = unique()
    admin.track(name)
    provider = await make_provider(name, declare=True, queue_type="quorum")
    assert await admin.exists(name)
    await admin.put(name, b"{}")
    (delivery,) = await fetch_n(provider, 1)
    await provider.settle(delivery, ACCEPT)
    # It is a quorum queue: declaring it as classic now fails.
    with pytest.raises(Exception, match="PRECONDITION_FAILED"):
        await admin.declare(name)


async def test_declare_with_different_arguments_is_a_configuration_error(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    name = await admin.declare()
    provider = RabbitProvider(name, url=rabbit_url, declare=True, queue_type="quorum")
    with pytest.raises(ConfigurationError, match="different settings"):
        await provider.start(5)
    await provider.close()


# -- prefetch ---------------------------------------------------------------------------


async def test_prefetch_follows_capacity(admin: RabbitAdmin, make_provider: MakeProvider) -> None:
    name = await admin.declare()
    await admin.put_many(name, [b"%d" % i for i in range(20)])
    provider = await make_provider(name, capacity=5)
    assert provider.prefetch == 5
    # The broker hands out exactly 5 and keeps 15 ready until some are settled.
    await admin.wait_count(name, 15)
    first = await fetch_n(provider, 5)
    assert await admin.count(name) == 15
    for delivery in first[:2]:
        await provider.settle(delivery, ACCEPT)
    await admin.wait_count(name, 13)


async def test_prefetch_headroom_is_added(admin: RabbitAdmin, make_provider: MakeProvider) -> None:
    name = await admin.declare()
    await admin.put_many(name, [b"%d" % i for i in range(10)])
    provider = await make_provider(name, capacity=3, prefetch_headroom=2)
    assert provider.prefetch == 5
    await admin.wait_count(name, 5)


# -- outcomes ---------------------------------------------------------------------------


async def test_accept_acks(admin: RabbitAdmin, make_provider: MakeProvider) -> None:
    name = await admin.declare()
    await admin.put_many(name, [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}'])
    provider = await make_provider(name)
    deliveries = await fetch_n(provider, 3)
    assert sorted(d.raw for d in deliveries) == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    assert all(d.attempt == 1 for d in deliveries)
    for delivery in deliveries:
        await provider.settle(delivery, ACCEPT)
    await provider.close()
    assert await admin.count(name) == 0


async def test_release_requeues_without_counting_an_attempt(
    admin: RabbitAdmin, make_provider: MakeProvider
) -> None:
    name = await admin.declare()
    await admin.put(name, b"x")
    provider = await make_provider(name)
    (first,) = await fetch_n(provider, 1)
    await provider.settle(first, RELEASE)
    (again,) = await fetch_n(provider, 1)
    assert again.raw == b"x"
    assert again.attempt == 1
    assert again.metadata["redelivered"] is True
    await provider.settle(again, ACCEPT)


async def test_retry_without_delay_redelivers_with_the_next_attempt(
    admin: RabbitAdmin, make_provider: MakeProvider
) -> None:
    name = await admin.declare()
    await admin.put(name, b"x", headers={"custom": "kept"}, message_id="m-1")
    provider = await make_provider(name)
    (first,) = await fetch_n(provider, 1)
    await provider.settle(first, RETRY())
    (second,) = await fetch_n(provider, 1)
    assert second.attempt == 2
    assert second.message_id == "m-1"
    assert second.metadata["headers"]["custom"] == "kept"
    assert second.metadata["headers"][ATTEMPT_HEADER] == 2
    await provider.settle(second, RETRY())
    (third,) = await fetch_n(provider, 1)
    assert third.attempt == 3
    await provider.settle(third, ACCEPT)
    await provider.close()
    assert await admin.count(name) == 0


async def test_retry_with_delay_waits_then_redelivers(
    admin: RabbitAdmin, make_provider: MakeProvider
) -> None:
    name = await admin.declare()
    await admin.put(name, b"later")
    provider = await make_provider(name, poll_timeout=0.2)
    (first,) = await fetch_n(provider, 1)
    started = time.monotonic()
    await provider.settle(first, RETRY(1.5))
    # It waits in the retry queue for delays up to 2048 ms, not in the work queue.
    assert provider.retry_queue_for(1.5) == f"{provider.retry_queue}.2048ms"
    assert await admin.count(provider.retry_queue_for(1.5)) == 1
    (second,) = await fetch_n(provider, 1, timeout=10)
    waited = time.monotonic() - started
    assert 1.4 <= waited <= 4.0, waited
    assert second.raw == b"later"
    assert second.attempt == 2
    await provider.settle(second, ACCEPT)
    assert await admin.count(provider.retry_queue_for(1.5)) == 0


@pytest.mark.parametrize("tiers", [True, False])
async def test_a_short_delay_does_not_wait_behind_a_long_one(
    admin: RabbitAdmin, make_provider: MakeProvider, tiers: bool
) -> None:
    name = await admin.declare()
    await admin.put_many(name, [b"long", b"short"])
    provider = await make_provider(name, poll_timeout=0.2, retry_tiers=tiers)
    deliveries = {d.raw: d for d in await fetch_n(provider, 2)}
    started = time.monotonic()
    await provider.settle(deliveries[b"long"], RETRY(3.0))
    await provider.settle(deliveries[b"short"], RETRY(0.5))
    arrivals: dict[bytes, float] = {}
    async with asyncio.timeout(10):
        while len(arrivals) < 2:
            for d in await provider.fetch(2):
                arrivals[d.raw] = time.monotonic() - started
                await provider.settle(d, ACCEPT)
    assert 2.9 <= arrivals[b"long"] <= 5.0, arrivals
    if tiers:
        assert 0.4 <= arrivals[b"short"] <= 1.8, arrivals
    else:
        # One retry queue: RabbitMQ expires only at its head, so "short" waits for "long"
        # (documented; the reason retry_tiers is the default).
        assert arrivals[b"short"] >= 2.9, arrivals


async def test_retry_with_delay_disabled_retries_at_once(
    admin: RabbitAdmin, make_provider: MakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    name = await admin.declare()
    await admin.put(name, b"x")
    provider = await make_provider(name, delayed_retry=False)
    assert not await admin.exists(provider.retry_queue)
    (first,) = await fetch_n(provider, 1)
    with caplog.at_level(logging.WARNING, logger="loafer_rabbit"):
        await provider.settle(first, RETRY(30))
    (second,) = await fetch_n(provider, 1, timeout=5)
    assert second.attempt == 2
    assert "delayed retries are disabled" in caplog.text
    await provider.settle(second, ACCEPT)


async def test_reject_without_dead_letter_drops(
    admin: RabbitAdmin, make_provider: MakeProvider
) -> None:
    name = await admin.declare()
    await admin.put(name, b"poison")
    provider = await make_provider(name)
    (delivery,) = await fetch_n(provider, 1)
    await provider.settle(delivery, REJECT("bad"))
    await provider.close()
    assert await admin.count(name) == 0


async def test_reject_goes_to_the_queues_own_dead_letter_exchange(
    admin: RabbitAdmin, make_provider: MakeProvider
) -> None:
    dlq = await admin.declare()
    name = await admin.declare(
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}
    )
    await admin.put(name, b"poison")
    provider = await make_provider(name, dead_letter="queue")
    assert provider.capabilities.dead_letter is Support.NATIVE
    (delivery,) = await fetch_n(provider, 1)
    await provider.settle(delivery, REJECT("bad"))
    await admin.wait_count(dlq, 1)
    assert await admin.count(name) == 0


async def test_reject_with_dead_letter_on_an_existing_queue_publishes_with_the_reason(
    admin: RabbitAdmin, make_provider: MakeProvider
) -> None:
    name = await admin.declare()
    await admin.put(name, b"poison", headers={"k": "v"}, message_id="p-1")
    provider = await make_provider(name, dead_letter=True)
    (delivery,) = await fetch_n(provider, 1)
    await provider.settle(delivery, REJECT("unparseable"))
    await provider.close()
    assert await admin.count(name) == 0
    (dead,) = await admin.drain(provider.dead_letter_queue)
    assert dead.body == b"poison"
    assert dead.message_id == "p-1"
    assert dead.headers[REJECT_REASON_HEADER] == "unparseable"
    assert dead.headers["k"] == "v"


async def test_reject_with_dead_letter_on_a_declared_queue_is_native(
    admin: RabbitAdmin, make_provider: MakeProvider
) -> None:
    name = unique()
    admin.track(name)
    provider = await make_provider(name, declare=True, dead_letter=True)
    await admin.put(name, b"poison")
    (delivery,) = await fetch_n(provider, 1)
    await provider.settle(delivery, REJECT("bad"))
    await admin.wait_count(provider.dead_letter_queue, 1)
    (dead,) = await admin.drain(provider.dead_letter_queue)
    assert dead.body == b"poison"
    assert dead.headers["x-death"][0]["reason"] == "rejected"


async def test_settling_twice_is_ignored(admin: RabbitAdmin, make_provider: MakeProvider) -> None:
    name = await admin.declare()
    await admin.put(name, b"x")
    provider = await make_provider(name)
    (delivery,) = await fetch_n(provider, 1)
    await provider.settle(delivery, ACCEPT)
    await provider.settle(delivery, RETRY())
    await provider.close()
    assert await admin.count(name) == 0


# -- metadata ---------------------------------------------------------------------------


async def test_metadata(admin: RabbitAdmin, make_provider: MakeProvider) -> None:
    name = await admin.declare()
    await admin.put(
        name,
        b'{"a": 1}',
        headers={"tenant": "acme"},
        message_id="id-1",
        correlation_id="corr-1",
        content_type="application/json",
    )
    provider = await make_provider(name)
    (delivery,) = await fetch_n(provider, 1)
    meta = delivery.metadata
    assert delivery.message_id == "id-1"
    assert meta["message_id"] == "id-1"
    assert meta["correlation_id"] == "corr-1"
    assert meta["headers"] == {"tenant": "acme"}
    assert meta["routing_key"] == name
    assert meta["exchange"] == ""
    assert meta["redelivered"] is False
    assert meta["delivery_count"] is None
    assert meta["content_type"] == "application/json"
    assert delivery.raw == delivery.body == b'{"a": 1}'
    assert provider.default_translator.translate(delivery.raw)["content"] == {"a": 1}
    await provider.settle(delivery, ACCEPT)


async def test_quorum_queue_delivery_count(admin: RabbitAdmin, make_provider: MakeProvider) -> None:
    name = await admin.declare(quorum=True)
    await admin.put(name, b"q")
    provider = await make_provider(name)
    (first,) = await fetch_n(provider, 1)
    # RabbitMQ 3.10 sets x-delivery-count on redeliveries only (basic.get also on the first).
    assert first.metadata["delivery_count"] in (None, 0)
    await provider.settle(first, RELEASE)
    (second,) = await fetch_n(provider, 1)
    assert second.metadata["delivery_count"] == 1
    assert second.attempt == 1  # a release is not an attempt
    await provider.settle(second, RETRY())
    (third,) = await fetch_n(provider, 1)
    assert third.attempt == 2
    await provider.settle(third, ACCEPT)


async def test_garbage_attempt_header_counts_as_first_attempt(
    admin: RabbitAdmin, make_provider: MakeProvider
) -> None:
    name = await admin.declare()
    await admin.put(name, b"x", headers={ATTEMPT_HEADER: "many"})
    await admin.put(name, b"y", headers={ATTEMPT_HEADER: "4"})
    provider = await make_provider(name)
    deliveries = {d.raw: d for d in await fetch_n(provider, 2)}
    assert deliveries[b"x"].attempt == 1
    assert deliveries[b"y"].attempt == 4
    for d in deliveries.values():
        await provider.settle(d, ACCEPT)


# -- fetch and close --------------------------------------------------------------------


async def test_fetch_returns_empty_after_poll_timeout(
    admin: RabbitAdmin, make_provider: MakeProvider
) -> None:
    name = await admin.declare()
    provider = await make_provider(name, poll_timeout=0.2)
    assert await provider.fetch(5) == []
    assert await provider.health()


async def test_cancelled_fetch_loses_nothing_and_pauses_consumption(
    admin: RabbitAdmin, make_provider: MakeProvider
) -> None:
    name = await admin.declare()
    provider = await make_provider(name, poll_timeout=30)
    waiting = asyncio.create_task(provider.fetch(5))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert provider._pause_task is not None
    await provider._pause_task
    # Paused: what is published now stays ready on the broker.
    await admin.put_many(name, [b"1", b"2", b"3"])
    assert await admin.count(name) == 3
    assert not await provider.health()
    # The next fetch consumes again.
    deliveries = await fetch_n(provider, 3)
    assert sorted(d.raw for d in deliveries) == [b"1", b"2", b"3"]
    for delivery in deliveries:
        await provider.settle(delivery, ACCEPT)
    assert await provider.health()


async def test_close_requeues_buffered_deliveries_at_once(
    admin: RabbitAdmin, make_provider: MakeProvider
) -> None:
    name = await admin.declare()
    await admin.put_many(name, [b"%d" % i for i in range(8)])
    provider = await make_provider(name, capacity=8)
    taken = await fetch_n(provider, 2)
    await provider.settle(taken[0], ACCEPT)
    await provider.settle(taken[1], ACCEPT)
    # Six are in the provider's buffer (delivered, never handed out).
    await admin.wait_count(name, 0)
    started = time.monotonic()
    await provider.close()
    assert await admin.count(name) == 6
    assert time.monotonic() - started < 5
    await provider.close()  # idempotent


async def test_fetch_after_close_returns_nothing(
    admin: RabbitAdmin, make_provider: MakeProvider
) -> None:
    name = await admin.declare()
    provider = await make_provider(name)
    await provider.close()
    assert await provider.fetch(3) == []
    assert not await provider.health()


async def test_large_and_binary_bodies(admin: RabbitAdmin, make_provider: MakeProvider) -> None:
    name = await admin.declare()
    big = b"x" * (5 * 1024 * 1024)
    await admin.put(name, big)
    await admin.put(name, b"\xff\xfe\x00binary")
    provider = await make_provider(name)
    deliveries = await fetch_n(provider, 2)
    assert sorted(len(d.raw) for d in deliveries) == [9, len(big)]
    for d in deliveries:
        await provider.settle(d, RETRY())
    again = await fetch_n(provider, 2)
    assert sorted(len(d.raw) for d in again) == [9, len(big)]
    for d in again:
        assert d.attempt == 2
        await provider.settle(d, ACCEPT)


# -- publish-then-ack failures ----------------------------------------------------------


async def test_retry_queue_deleted_behind_our_back_is_declared_again(
    admin: RabbitAdmin, make_provider: MakeProvider
) -> None:
    name = await admin.declare()
    await admin.put(name, b"x")
    provider = await make_provider(name, poll_timeout=0.2)
    (first,) = await fetch_n(provider, 1)
    await provider.settle(first, RETRY(0.3))
    assert provider.retry_queue_for(0.3) in provider.retry_queues
    (second,) = await fetch_n(provider, 1, timeout=10)
    await admin.delete(provider.retry_queue_for(0.3))
    await provider.settle(second, RETRY(0.3))
    (third,) = await fetch_n(provider, 1, timeout=10)
    assert third.attempt == 3
    await provider.settle(third, ACCEPT)


async def test_dead_letter_exchange_deleted_behind_our_back_is_declared_again(
    admin: RabbitAdmin, make_provider: MakeProvider
) -> None:
    name = await admin.declare()
    await admin.put(name, b"x")
    provider = await make_provider(name, dead_letter=True)
    async with admin.connection.channel() as channel:  # type: ignore[union-attr]
        await channel.exchange_delete(provider.dead_letter_exchange)
    (first,) = await fetch_n(provider, 1)
    # The first settle may fail (the publish channel is closed by the 404 and reopened);
    # the dispatcher retries a failed settle, as this loop does.
    async with asyncio.timeout(15):
        while True:
            try:
                await provider.settle(first, REJECT("bad"))
                break
            except ProviderError:
                await asyncio.sleep(0.2)
    await admin.wait_count(provider.dead_letter_queue, 1)


async def test_a_publish_that_keeps_failing_falls_back_to_requeue(
    admin: RabbitAdmin, make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = await admin.declare()
    await admin.put(name, b"x")
    provider = await make_provider(name)
    (first,) = await fetch_n(provider, 1)

    async def failing(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("simulated publish failure")

    monkeypatch.setattr(provider, "_publish", failing)
    for _ in range(2):
        with pytest.raises(ProviderError, match="simulated publish failure"):
            await provider.settle(first, RETRY(5))
    await provider.settle(first, RETRY(5))  # third failure: requeued with basic.nack
    monkeypatch.undo()
    (again,) = await fetch_n(provider, 1, timeout=5)
    assert again.raw == b"x"
    assert again.attempt == 1
    await provider.settle(again, ACCEPT)
