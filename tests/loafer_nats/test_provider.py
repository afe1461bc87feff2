"""NATSProvider against a real NATS JetStream: set-up checks, outcomes, shutdown."""

from __future__ import annotations

import asyncio
import time

import pytest

from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.outcome import ACCEPT, REJECT, RELEASE, RETRY
from loafer_core.provider import Backlog, Drainable, HealthChecker, LeaseExtender, Verifiable
from loafer_nats import REJECT_REASON_HEADER, NATSProvider

from .conftest import NatsAdmin, unique

pytestmark = pytest.mark.nats


def provider(admin: NatsAdmin, stream: str, **options: object) -> NATSProvider:
    options.setdefault("consumer", "work")
    options.setdefault("poll_timeout", 1.0)
    return NATSProvider(stream, url=admin.url, **options)


async def fetch_n(p: NATSProvider, n: int, timeout: float = 10.0) -> list:
    out: list = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            out.extend(await p.fetch(n - len(out)))
    return out


def test_optional_protocols() -> None:
    p = NATSProvider("s")
    for protocol in (LeaseExtender, Drainable, Verifiable, Backlog, HealthChecker):
        assert isinstance(p, protocol), protocol


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"stream": "a.b"}, "stream name"),
        ({"stream": "s", "url": "http://x"}, "nats://"),
        ({"stream": "s", "consumer": "a b"}, "consumer name"),
        ({"stream": "s", "max_deliver": 0}, "max_deliver"),
        ({"stream": "s", "poll_timeout": 0}, "poll_timeout"),
        ({"stream": "s", "subjects": "a.b"}, "subjects"),
    ],
)
def test_bad_settings_are_configuration_errors(kwargs: dict, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        NATSProvider(**kwargs)


async def test_missing_stream_says_what_to_do(admin: NatsAdmin) -> None:
    p = provider(admin, unique())
    with pytest.raises(ConfigurationError, match=r"does not exist.*nats stream add.*create=True"):
        await p.start(5)
    await p.close()


async def test_missing_consumer_says_what_to_do(admin: NatsAdmin) -> None:
    stream = await admin.stream(consumer=None)
    p = provider(admin, stream)
    with pytest.raises(ConfigurationError, match=r"no consumer 'work'.*--pull.*create=True"):
        await p.start(5)
    await p.close()


async def test_push_consumer_is_refused(admin: NatsAdmin) -> None:
    stream = await admin.stream(consumer="push", deliver_subject=f"deliver.{unique()}")
    p = provider(admin, stream, consumer="push")
    with pytest.raises(ConfigurationError, match="push consumer"):
        await p.start(5)
    await p.close()


async def test_missing_dead_letter_stream_is_a_configuration_error(admin: NatsAdmin) -> None:
    stream = await admin.stream()
    p = provider(admin, stream, dead_letter_subject=f"dead.{stream}")
    with pytest.raises(ConfigurationError, match="dead-letter subject"):
        await p.start(5)
    await p.close()


async def test_create_makes_stream_consumer_and_dead_letter_stream(admin: NatsAdmin) -> None:
    stream = unique()
    admin.track(stream, f"{stream}-dead")
    p = provider(
        admin,
        stream,
        create=True,
        subjects=[f"{stream}.>"],
        ack_wait=7,
        max_deliver=4,
        dead_letter_subject=f"dead.{stream}",
    )
    await p.start(5)
    try:
        info = await admin.consumer(stream)
        assert info.config.ack_wait == 7
        assert info.config.max_deliver == 4
        assert p.lease_duration == 7
        assert p.max_deliver == 4
        assert await admin.messages(f"{stream}-dead") == 0
        await admin.put(stream, b'{"a": 1}')
        [d] = await fetch_n(p, 1)
        assert d.attempt == 1
        await p.settle(d, ACCEPT)
    finally:
        await p.close()
    # a second start finds everything as it is
    again = provider(admin, stream, create=True, dead_letter_subject=f"dead.{stream}")
    await again.start(5)
    await again.close()


async def test_verify_checks_without_creating_or_consuming(admin: NatsAdmin) -> None:
    missing = unique()
    with pytest.raises(ConfigurationError, match="does not exist"):
        await provider(admin, missing).verify()
    await provider(admin, missing, create=True).verify()  # would create: fine
    assert missing not in [s.config.name for s in await admin.js.streams_info()]
    stream = await admin.stream()
    await admin.put(stream, b"{}")
    await provider(admin, stream).verify()
    info = await admin.consumer(stream)
    assert info.num_pending == 1 and info.num_ack_pending == 0


async def test_verify_unreachable_is_a_provider_error() -> None:
    p = NATSProvider("s", url="nats://127.0.0.1:1", connect_timeout=1.0)
    with pytest.raises(ProviderError, match=r"127\.0\.0\.1:1"):
        await p.verify()


async def test_outcomes_map_to_jetstream_acks(admin: NatsAdmin) -> None:
    stream = await admin.stream(dead_letter=True)
    # poll_timeout 3 s, not 1 s: NATS 2.9.10 hands a message whose nak delay ends as a pull
    # request expires to that expiring request without sending it, and holds it until
    # ack_wait (see docs/providers/nats.md); a 1 s delay on 1 s requests hit it 1 time in 4
    p = provider(admin, stream, dead_letter_subject=f"dead.{stream}", poll_timeout=3.0)
    await p.start(10)
    try:
        for i in range(4):
            await admin.put(stream, f'{{"i": {i}}}'.encode(), {"k": str(i)})
        ds = await fetch_n(p, 4)
        assert [d.metadata["headers"]["k"] for d in ds] == ["0", "1", "2", "3"]
        assert all(d.attempt == 1 for d in ds)
        await p.settle(ds[0], ACCEPT)
        settled_at = time.monotonic()
        await p.settle(ds[1], RETRY(1.0))
        await p.settle(ds[2], RELEASE)
        await p.settle(ds[3], REJECT("bad\nthing"))
        again = await fetch_n(p, 2)
        by_body = {d.body: d for d in again}
        released, retried = by_body[b'{"i": 2}'], by_body[b'{"i": 1}']
        # RELEASE is a nak: JetStream counts the delivery (declared: release_uncounted NONE)
        assert released.attempt == 2
        assert retried.attempt == 2
        assert time.monotonic() - settled_at >= 0.9
        for d in again:
            await p.settle(d, ACCEPT)
        [dead] = await admin.stored(f"{stream}-dead")
        assert dead.data == b'{"i": 3}'
        assert dead.headers[REJECT_REASON_HEADER] == "bad thing"
        assert dead.headers["k"] == "3"
        await admin.wait_consumer(stream, num_ack_pending=0, num_pending=0)
        assert await admin.messages(stream) == 0
    finally:
        await p.close()


async def test_settling_twice_is_ignored(admin: NatsAdmin) -> None:
    stream = await admin.stream()
    p = provider(admin, stream)
    await p.start(5)
    try:
        await admin.put(stream, b"{}")
        [d] = await fetch_n(p, 1)
        await p.settle(d, ACCEPT)
        await p.settle(d, RELEASE)  # logged, not sent
        await admin.wait_consumer(stream, num_ack_pending=0, num_pending=0)
    finally:
        await p.close()


async def test_max_deliver_reached_dead_letters_instead_of_vanishing(admin: NatsAdmin) -> None:
    stream = await admin.stream(max_deliver=2, dead_letter=True)
    p = provider(admin, stream, dead_letter_subject=f"dead.{stream}")
    await p.start(5)
    try:
        await admin.put(stream, b'{"poison": 1}')
        [first] = await fetch_n(p, 1)
        await p.settle(first, RETRY())
        [second] = await fetch_n(p, 1)
        assert second.attempt == 2
        await p.settle(second, RETRY())  # the server would never deliver it again
        [dead] = await admin.stored(f"{stream}-dead")
        assert "max_deliver (2) reached" in dead.headers[REJECT_REASON_HEADER]
        await admin.wait_consumer(stream, num_ack_pending=0, num_pending=0)
    finally:
        await p.close()


async def test_fetch_honours_max_messages_and_pulls_no_more(admin: NatsAdmin) -> None:
    stream = await admin.stream()
    await admin.put_many(stream, [b"{}"] * 10)
    p = provider(admin, stream)
    await p.start(10)
    try:
        got = await p.fetch(3)
        assert len(got) == 3
        # only what was asked for was pulled: the server holds the rest
        info = await admin.consumer(stream)
        assert info.num_ack_pending == 3 and info.num_pending == 7
        for d in got:
            await p.settle(d, ACCEPT)
    finally:
        await p.close()


async def test_cancelled_fetch_then_close_loses_nothing(admin: NatsAdmin) -> None:
    """An idle fetch (a pull request waiting on the server) cancelled at shutdown: a
    message published after close is available to the next consumer at once, not held
    by the dead request until ack_wait (120 s here)."""
    stream = await admin.stream(ack_wait=120)
    p = provider(admin, stream, poll_timeout=30.0)
    await p.start(5)
    fetching = asyncio.create_task(p.fetch(5))
    await admin.wait_consumer(stream, num_waiting=1)
    fetching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fetching
    await p.close()
    # no consumer info in between (it would make the server drop the request itself)
    await admin.put(stream, b'{"after": 1}')
    assert await assert_all_available(admin, stream, {b'{"after": 1}'}) == 1


async def test_messages_arriving_after_a_cancelled_fetch_are_given_back(
    admin: NatsAdmin,
) -> None:
    """The fetch is cancelled, then messages arrive on its pull request: they are
    buffered, and close naks them back: none is left unacked."""
    stream = await admin.stream(ack_wait=120)
    p = provider(admin, stream, poll_timeout=30.0)
    await p.start(5)
    fetching = asyncio.create_task(p.fetch(5))
    await admin.wait_consumer(stream, num_waiting=1)
    fetching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fetching
    await admin.put_many(stream, [b'{"i": 0}', b'{"i": 1}', b'{"i": 2}'])
    await admin.wait_consumer(stream, num_ack_pending=3)
    await p.close()
    assert p.released_unhandled == 3
    # nak'ed: available again at once (JetStream counts them as ack-pending until then)
    await assert_all_available(admin, stream, {b'{"i": 0}', b'{"i": 1}', b'{"i": 2}'})


async def assert_all_available(admin: NatsAdmin, stream: str, bodies: set[bytes]) -> int:
    """A fresh consumer gets every one of ``bodies`` at once (the consumers here have a
    long ack_wait: a message held unacked would not come back in time) and acks
    everything until the consumer holds nothing; returns how many deliveries it took.

    (NATS 2.9.10 may deliver a nak'ed message twice when it was the last one delivered:
    duplicates are acked too, not counted as a failure.)"""
    again = provider(admin, stream, poll_timeout=0.5)
    await again.start(10)
    seen: set[bytes] = set()
    deliveries = 0
    try:
        async with asyncio.timeout(10):
            while True:
                got = await again.fetch(10)
                deliveries += len(got)
                for d in got:
                    seen.add(d.body)
                    await again.settle(d, ACCEPT)
                if seen >= bodies and not got:
                    info = await admin.consumer(stream)
                    if info.num_pending == 0 and info.num_ack_pending == 0:
                        return deliveries
    finally:
        await again.close()


async def test_stop_fetching_gives_the_buffer_back_at_once(admin: NatsAdmin) -> None:
    stream = await admin.stream(ack_wait=120)
    await admin.put_many(stream, [f'{{"i": {i}}}'.encode() for i in range(6)])
    p = provider(admin, stream)
    await p.start(6)
    try:
        got = await p.fetch(6)
        handed, rest = got[:2], got[2:]
        # put the rest back in the buffer, as if never handed out
        assert p._puller is not None
        p._puller.buffer.extend(d.token.message for d in rest)
        await p.stop_fetching()
        assert p.released_unhandled == 4
        for d in handed:
            await p.settle(d, ACCEPT)
        # the 4 are available again at once (ack_wait is 120 s); fetching again resumes
        again = await fetch_n(p, 4, timeout=5)
        assert {d.body for d in again} == {d.body for d in rest}
        for d in again:
            await p.settle(d, ACCEPT)
    finally:
        await p.close()


async def test_lease_extension_keeps_the_message(admin: NatsAdmin) -> None:
    stream = await admin.stream(ack_wait=2.0)
    p = provider(admin, stream)
    await p.start(5)
    try:
        assert p.lease_duration == 2.0
        await admin.put(stream, b"{}")
        [d] = await fetch_n(p, 1)
        for _ in range(8):  # 3.2 s in all, 1.6 times the ack wait
            await asyncio.sleep(0.4)  # the handler's "work"
            await p.extend_leases([d], 2.0)
        info = await admin.consumer(stream)
        assert info.num_redelivered == 0 and info.num_ack_pending == 1
        await p.settle(d, ACCEPT)
        await admin.wait_consumer(stream, num_ack_pending=0, num_pending=0)
    finally:
        await p.close()


async def test_backlog_is_num_pending_and_health(admin: NatsAdmin) -> None:
    stream = await admin.stream()
    p = provider(admin, stream)
    assert await p.backlog() is None
    assert not await p.health()
    await p.start(5)
    try:
        assert await p.health()
        assert await p.backlog() == 0
        await admin.put_many(stream, [b"{}"] * 5)
        assert await p.backlog() == 5
    finally:
        await p.close()
    assert not await p.health()
    assert await p.backlog() is None


async def test_close_is_idempotent_and_fetch_after_close_is_empty(admin: NatsAdmin) -> None:
    stream = await admin.stream()
    p = provider(admin, stream)
    await p.start(5)
    await p.close()
    await p.close()
    assert await p.fetch(5) == []
    with pytest.raises(ProviderError):
        await p.start(5)


async def test_deleted_consumer_is_a_provider_error(admin: NatsAdmin) -> None:
    stream = await admin.stream()
    p = provider(admin, stream, poll_timeout=5.0)
    await p.start(5)
    try:
        fetching = asyncio.create_task(p.fetch(5))
        await admin.wait_consumer(stream, num_waiting=1)
        await admin.js.delete_consumer(stream, "work")
        with pytest.raises(ProviderError, match=r"deleted|does not answer"):
            async with asyncio.timeout(10):
                await fetching
                await p.fetch(5)
    finally:
        await p.close()


async def test_an_unhandled_message_at_max_deliver_is_dead_lettered_at_stop(
    admin: NatsAdmin,
) -> None:
    """Given back at its last allowed delivery, a nak would leave it undelivered for
    good: it goes to the dead-letter subject instead."""
    stream = await admin.stream(max_deliver=1, dead_letter=True, ack_wait=120)
    await admin.put(stream, b'{"last": 1}')
    p = provider(admin, stream, dead_letter_subject=f"dead.{stream}")
    await p.start(5)
    try:
        [d] = await fetch_n(p, 1)
        assert p._puller is not None
        p._puller.buffer.append(d.token.message)  # as if never handed out
        await p.stop_fetching()
        [dead] = await admin.stored(f"{stream}-dead")
        assert dead.data == b'{"last": 1}'
        assert "max_deliver (1) reached" in dead.headers[REJECT_REASON_HEADER]
        await admin.wait_consumer(stream, num_pending=0, num_ack_pending=0, timeout=5)
    finally:
        await p.close()
