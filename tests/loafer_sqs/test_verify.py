"""SQSProvider.verify against moto: the queue and its dead-letter queue are read, nothing
is received (no receive counted), and nothing is left open."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.provider import Support, Verifiable
from loafer_sqs import SQSProvider
from tests.loafer_sqs.blackhole import Blackhole
from tests.loafer_sqs.conftest import MakeQueue, queue_counts, send_bodies
from tests.loafer_sqs.test_shutdown import leftover_tasks, through

pytestmark = pytest.mark.sqs


async def test_verify_reads_the_dead_letter_queue_and_receives_nothing(
    make_queue: MakeQueue, sqs: Any, client_options: dict[str, Any]
) -> None:
    url = await make_queue(dlq=True, visibility=17)
    await send_bodies(sqs, url, ["a", "b", "c"])
    provider = SQSProvider(url, **client_options)
    assert isinstance(provider, Verifiable)
    async with asyncio.timeout(15):
        await provider.verify()
    assert not leftover_tasks()
    assert provider.dead_letter_queue_url is not None
    assert provider.dead_letter_queue_url.endswith("-dlq")
    assert provider.capabilities.dead_letter is Support.EMULATED
    assert provider.lease_duration == 17.0
    assert await queue_counts(sqs, url) == (3, 0)
    received = await sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"]
    )
    messages = received["Messages"]
    assert sorted(m["Body"] for m in messages) == ["a", "b", "c"]
    assert {m["Attributes"]["ApproximateReceiveCount"] for m in messages} == {"1"}


async def test_a_queue_without_dead_letter_queue_says_so_once_verified(
    make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    provider = SQSProvider(url, **client_options)
    assert provider.capabilities.dead_letter is Support.EMULATED  # not known yet
    async with asyncio.timeout(15):
        await provider.verify()
    assert provider.capabilities.dead_letter is Support.NONE


async def test_a_missing_queue_is_a_configuration_error_naming_it(
    client_options: dict[str, Any],
) -> None:
    provider = SQSProvider("loafer-no-such-queue", **client_options)
    with pytest.raises(ConfigurationError, match="'loafer-no-such-queue' does not exist"):
        async with asyncio.timeout(15):
            await provider.verify()
    assert not leftover_tasks()


async def test_a_missing_dead_letter_queue_is_a_configuration_error(
    make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    provider = SQSProvider(url, dead_letter_queue="loafer-no-such-dlq", **client_options)
    with pytest.raises(ConfigurationError, match="'loafer-no-such-dlq' does not exist"):
        async with asyncio.timeout(15):
            await provider.verify()


async def test_an_unreachable_endpoint_is_a_provider_error_within_the_bound() -> None:
    provider = SQSProvider(
        "q",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
    )
    provider.verify_timeout = 3
    started = time.monotonic()
    with pytest.raises(ProviderError):
        async with asyncio.timeout(10):
            await provider.verify()
    assert time.monotonic() - started < 5
    assert not leftover_tasks()


async def test_a_silent_endpoint_is_a_provider_error_and_nothing_stays_open(
    make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    with Blackhole(client_options["endpoint_url"]) as hole:
        queue, options = through(hole, url, client_options)
        hole.swallow()
        provider = SQSProvider(queue, **options)
        provider.verify_timeout = 1
        started = time.monotonic()
        with pytest.raises(ProviderError, match="no answer within 1s"):
            async with asyncio.timeout(10):
                await provider.verify()
        assert time.monotonic() - started < 4
        assert not leftover_tasks()
        await hole.all_closed(5)


async def test_a_cancelled_verify_leaves_nothing_open(
    make_queue: MakeQueue, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    with Blackhole(client_options["endpoint_url"]) as hole:
        queue, options = through(hole, url, client_options)
        hole.swallow()
        provider = SQSProvider(queue, **options)
        task = asyncio.create_task(provider.verify())
        await hole.connected(5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(5):
                await task
        assert not leftover_tasks()
        await hole.all_closed(5)
