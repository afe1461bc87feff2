"""Providers and publishers are freed once closed: nothing the plugin keeps (module
state, log filters, the client, tasks, callbacks) holds on to them."""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
import weakref
from typing import Any

import pytest

from loafer_core.outcome import ACCEPT
from loafer_sqs import SNSPublisher, SQSProvider, SQSPublisher
from tests.loafer_sqs.conftest import MakeQueue
from tests.loafer_sqs.test_provider import fetch_n

pytestmark = pytest.mark.sqs

CYCLES = 30


def rss() -> int:
    """This process's resident set size (bytes)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


async def _cycle(url: str, topic: str, options: dict[str, Any]) -> list[weakref.ref[Any]]:
    """Start, use and close one provider and one publisher of each kind."""
    publisher = SQSPublisher(url, **options)
    async with publisher:
        await publisher.publish({"n": 1})
    provider = SQSProvider(url, {"WaitTimeSeconds": 1}, **options)
    await provider.start(1)
    try:
        [delivery] = await fetch_n(provider, 1)
        await provider.settle(delivery, ACCEPT)
    finally:
        await provider.close()
    sns = SNSPublisher(topic, **options)
    async with sns:
        await sns.publish({"n": 1})
    return [weakref.ref(provider), weakref.ref(publisher), weakref.ref(sns)]


@pytest.mark.slow  # a soak: many open/close cycles against moto
async def test_closed_providers_and_publishers_are_freed(
    make_queue: MakeQueue, sns: Any, client_options: dict[str, Any]
) -> None:
    url = await make_queue()
    topic = (await sns.create_topic(Name=f"loafer-sqs-{uuid.uuid4().hex[:12]}"))["TopicArn"]
    try:
        async with asyncio.timeout(120):
            for _ in range(5):  # warm-up: imports, caches, the pools' first allocations
                await _cycle(url, topic, client_options)
            gc.collect()
            before = rss()
            refs: list[weakref.ref[Any]] = []
            for _ in range(CYCLES):
                refs.extend(await _cycle(url, topic, client_options))
        gc.collect()
        alive = [ref() for ref in refs if ref() is not None]
        assert not alive, f"{len(alive)} of {len(refs)} still alive, e.g. {alive[:3]}"
        growth = rss() - before
        # seen here: 5 to 10 MB after the warm-up, flat from then on (the allocator's high
        # water mark, not a leak: 120 cycles end at the same figure)
        assert growth < 30 * 2**20, f"RSS grew by {growth / 2**20:.1f} MB over {CYCLES} cycles"
    finally:
        await sns.delete_topic(TopicArn=topic)
