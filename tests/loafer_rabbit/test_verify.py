"""RabbitProvider.verify against a real RabbitMQ: the set-up is checked, nothing consumed
(no redelivery), nothing declared, nothing left open."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aio_pika
import pytest

from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.provider import Verifiable
from loafer_rabbit import RabbitProvider
from tests.loafer_rabbit.conftest import (
    RabbitAdmin,
    SilentBroker,
    _run_ctl,
    rabbitmqctl_available,
    unique,
)

pytestmark = pytest.mark.rabbit


async def _open_connections(name: str) -> int:
    """Connections RabbitMQ holds whose client-given name is ``name``."""
    listing = await asyncio.to_thread(
        _run_ctl, "list_connections", "client_properties", "-q", "--no-table-headers"
    )
    return sum(f'{{"connection_name","{name}"}}' in line for line in listing.splitlines())


def _tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def test_a_good_queue_verifies_and_keeps_its_messages_undelivered(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await admin.declare()
    await admin.put_many(queue, [b"1", b"2", b"3"])
    before = _tasks()
    provider = RabbitProvider(queue, url=rabbit_url, dead_letter=True)
    assert isinstance(provider, Verifiable)
    async with asyncio.timeout(15):
        await provider.verify()
    assert _tasks() <= before  # nothing left running
    if rabbitmqctl_available():
        assert await _open_connections(f"loafer:{queue}:verify") == 0
    assert await admin.count(queue) == 3
    messages = await admin.drain(queue)
    assert [m.body for m in messages] == [b"1", b"2", b"3"]
    assert not any(m.redelivered for m in messages)
    # What start would declare was not declared.
    for name in (provider.dead_letter_queue, provider.retry_queue):
        assert not await admin.exists(name)


async def test_a_missing_queue_is_a_configuration_error_naming_it(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = unique("missing")
    provider = RabbitProvider(queue, url=rabbit_url)
    with pytest.raises(ConfigurationError, match=f"queue '{queue}' does not exist"):
        async with asyncio.timeout(15):
            await provider.verify()
    assert not await admin.exists(queue)


async def test_with_declare_a_missing_queue_is_fine_and_stays_missing(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = unique("to-declare")
    provider = RabbitProvider(queue, url=rabbit_url, declare=True, dead_letter=True)
    admin.track(queue, provider.dead_letter_queue, exchanges=(provider.dead_letter_exchange,))
    async with asyncio.timeout(15):
        await provider.verify()
    for name in (queue, provider.dead_letter_queue):
        assert not await admin.exists(name)


async def test_settings_that_differ_from_what_start_declares_are_a_configuration_error(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await admin.declare()  # classic
    await admin.put(queue, b"x")
    provider = RabbitProvider(queue, url=rabbit_url, declare=True, queue_type="quorum")
    with pytest.raises(ConfigurationError, match="exists with different settings"):
        async with asyncio.timeout(15):
            await provider.verify()
    [message] = await admin.drain(queue)
    assert not message.redelivered

    retry = await admin.declare(f"{queue}.retry")  # not the retry queue start declares
    provider = RabbitProvider(queue, url=rabbit_url, retry_tiers=False)
    with pytest.raises(ConfigurationError, match=f"retry queue '{retry}'"):
        async with asyncio.timeout(15):
            await provider.verify()


async def test_what_start_declared_verifies_and_keeps_its_messages(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    """Everything start declares exists with start's settings: verify accepts it as is."""
    queue = unique("declared")
    options: dict[str, Any] = {
        "url": rabbit_url,
        "declare": True,
        "dead_letter": True,
        "retry_tiers": False,
        "queue_type": "quorum",
    }
    started = RabbitProvider(queue, **options)
    admin.track(
        queue,
        started.retry_queue,
        started.dead_letter_queue,
        exchanges=(started.dead_letter_exchange,),
    )
    async with asyncio.timeout(15):
        await started.start(1)
    await started.close()
    await admin.put_many(queue, [b"a", b"b"])
    async with asyncio.timeout(15):
        await RabbitProvider(queue, **options).verify()
    messages = await admin.drain(queue)
    assert [m.body for m in messages] == [b"a", b"b"]
    assert not any(m.redelivered for m in messages)

    fanout = unique("fanout")  # a dead-letter exchange of another type than start's
    await admin.channel.declare_exchange(fanout, aio_pika.ExchangeType.FANOUT, durable=True)
    admin.track(exchanges=(fanout,))
    other_dlx = RabbitProvider(queue, **{**options, "dead_letter_exchange": fanout})
    with pytest.raises(ConfigurationError, match=re.escape(f"exchange {fanout!r} on")) as caught:
        async with asyncio.timeout(15):
            await other_dlx.verify()
    assert "exists with different settings" in str(caught.value)


async def test_refused_credentials_are_a_configuration_error(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await admin.declare()
    url = rabbit_url.replace("guest:guest", "guest:wrong-password")
    provider = RabbitProvider(queue, url=url)
    with pytest.raises(ConfigurationError, match="refused the login") as caught:
        async with asyncio.timeout(15):
            await provider.verify()
    assert "wrong-password" not in str(caught.value)


async def test_an_unreachable_broker_is_a_provider_error_within_the_bound() -> None:
    provider = RabbitProvider("q", url="amqp://guest:guest@127.0.0.1:1/")
    before = _tasks()
    with pytest.raises(ProviderError):
        async with asyncio.timeout(5):
            await provider.verify()
    assert _tasks() <= before


async def test_a_silent_broker_is_a_provider_error_after_connect_timeout(
    silent: tuple[SilentBroker, str],
) -> None:
    _, url = silent
    provider = RabbitProvider("q", url=url, connect_timeout=0.5, close_timeout=0.5)
    before = _tasks()
    started = time.monotonic()
    with pytest.raises(ProviderError, match="timed out"):
        async with asyncio.timeout(5):
            await provider.verify()
    assert time.monotonic() - started < 3
    assert _tasks() <= before


async def test_cancelled_verify_leaves_nothing_running(silent: tuple[SilentBroker, str]) -> None:
    broker, url = silent
    provider = RabbitProvider("q", url=url, connect_timeout=30, close_timeout=0.5)
    before = _tasks()
    task = asyncio.create_task(provider.verify())
    async with asyncio.timeout(5):
        await broker.accepted.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    assert _tasks() <= before
