"""AMQPProvider.verify against RabbitMQ's AMQP 1.0 plugin: the address is attached with no
credit (a missing queue refused), nothing is delivered (no redelivery), and no reactor
thread or task is left."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator

import pytest

from loafer_amqp import AMQPProvider
from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.provider import Verifiable

from .conftest import Broker

pytestmark = pytest.mark.amqp


def _reactor_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("loafer-amqp-")]


def _tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


class _Silent:
    """A TCP server that accepts connections and never answers (a hung broker)."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []

    def on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        self.accepted.set()


@pytest.fixture
async def silent() -> AsyncIterator[tuple[_Silent, int]]:
    hung = _Silent()
    server = await asyncio.start_server(hung.on_client, "127.0.0.1", 0)
    try:
        yield hung, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in hung.writers:
            writer.close()
        await server.wait_closed()


async def test_a_good_address_verifies_and_its_messages_stay_undelivered(
    amqp_url: str, broker: Broker, queue: str
) -> None:
    await broker.put_many(queue, [b"1", b"2", b"3"])
    before = _tasks()
    provider = AMQPProvider(amqp_url, f"/amq/queue/{queue}")
    assert isinstance(provider, Verifiable)
    async with asyncio.timeout(20):
        await provider.verify()
    assert _reactor_threads() == []
    assert _tasks() <= before
    assert await broker.depth(queue) == 3
    messages = await broker.get_all(queue)
    assert [m.body for m in messages] == [b"1", b"2", b"3"]
    assert not any(m.redelivered for m in messages)


async def test_a_missing_queue_is_a_configuration_error_naming_it(
    amqp_url: str, broker: Broker
) -> None:
    provider = AMQPProvider(amqp_url, "/amq/queue/loafer-verify-no-such-queue")
    with pytest.raises(ConfigurationError, match="loafer-verify-no-such-queue") as caught:
        async with asyncio.timeout(20):
            await provider.verify()
    assert "not-found" in str(caught.value).lower()
    assert _reactor_threads() == []


async def test_refused_credentials_are_a_configuration_error(queue: str) -> None:
    provider = AMQPProvider("amqp://guest:wrong-pw@127.0.0.1:5672", f"/amq/queue/{queue}")
    with pytest.raises(ConfigurationError) as caught:
        async with asyncio.timeout(20):
            await provider.verify()
    assert "wrong-pw" not in str(caught.value)
    assert _reactor_threads() == []


async def test_generic_profile_on_an_old_rabbitmq_is_refused_as_start_would(
    amqp_url: str, queue: str
) -> None:
    provider = AMQPProvider(amqp_url, f"/amq/queue/{queue}", broker="generic")
    try:
        async with asyncio.timeout(20):
            await provider.verify()
    except ConfigurationError as exc:
        assert "use broker='rabbitmq'" in str(exc)  # RabbitMQ < 3.10.11
    assert _reactor_threads() == []


async def test_an_unreachable_broker_is_a_provider_error_within_the_bound() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = AMQPProvider(f"amqp://127.0.0.1:{port}", "/amq/queue/q", connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(ProviderError):
        async with asyncio.timeout(15):
            await provider.verify()
    assert time.monotonic() - started < 8
    assert _reactor_threads() == []


async def test_a_silent_broker_is_a_provider_error_after_connect_timeout(
    silent: tuple[_Silent, int],
) -> None:
    _, silent_port = silent
    provider = AMQPProvider(
        f"amqp://127.0.0.1:{silent_port}", "/amq/queue/q", connect_timeout=1, close_timeout=1
    )
    before = _tasks()
    started = time.monotonic()
    with pytest.raises(ProviderError, match="timed out"):
        async with asyncio.timeout(15):
            await provider.verify()
    assert time.monotonic() - started < 5
    assert _reactor_threads() == []
    assert _tasks() <= before


async def test_a_cancelled_verify_ends_its_reactor_thread(silent: tuple[_Silent, int]) -> None:
    hung, silent_port = silent
    provider = AMQPProvider(
        f"amqp://127.0.0.1:{silent_port}", "/amq/queue/q", connect_timeout=30, close_timeout=1
    )
    before = _tasks()
    task = asyncio.create_task(provider.verify())
    async with asyncio.timeout(5):
        await hung.accepted.wait()  # the reactor is connecting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await task
    assert _reactor_threads() == []
    assert _tasks() <= before
