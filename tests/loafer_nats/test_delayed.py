"""Delayed publish on NATS, emulated: the provider holds an early message back (nak)."""

from __future__ import annotations

import time

import pytest

from loafer_core.kit import NOT_BEFORE
from loafer_core.outcome import ACCEPT
from loafer_nats import NATSPublisher

from .conftest import NatsAdmin
from .test_provider import fetch_n, provider

pytestmark = pytest.mark.nats


async def test_a_delayed_message_is_held_back_until_due_costing_one_attempt(
    admin: NatsAdmin,
) -> None:
    stream = await admin.stream()
    async with NATSPublisher(f"{stream}.in", url=admin.url) as publisher:
        started = time.monotonic()
        await publisher.publish(b"later", delay=1.0)
        await publisher.publish(b"now")
    p = provider(admin, stream, poll_timeout=0.3)
    await p.start(10)
    try:
        [first] = await fetch_n(p, 1)
        assert first.body == b"now" and first.attempt == 1
        await p.settle(first, ACCEPT)
        [later] = await fetch_n(p, 1)
        assert time.monotonic() - started >= 1.0
        assert later.body == b"later"
        assert later.attempt == 2  # the hold-back nak counted one delivery
        assert NOT_BEFORE in later.metadata["headers"]
        await p.settle(later, ACCEPT)
    finally:
        await p.close()


async def test_the_last_allowed_delivery_is_handed_out_not_held(admin: NatsAdmin) -> None:
    stream = await admin.stream(max_deliver=1)
    async with NATSPublisher(f"{stream}.in", url=admin.url) as publisher:
        await publisher.publish_many([b"a"], delay=30)
    p = provider(admin, stream, poll_timeout=0.3)
    await p.start(10)
    try:
        [early] = await fetch_n(p, 1)  # early, rather than never delivered again
        assert early.body == b"a"
        await p.settle(early, ACCEPT)
    finally:
        await p.close()
