"""RedisProvider against a real Redis: start-up checks, settlements, leases, reclaims,
cancel-safety of the blocking read."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.outcome import ACCEPT, REJECT, RELEASE, RETRY
from loafer_core.provider import Backlog, Drainable, HealthChecker, LeaseExtender, Verifiable
from loafer_core.testing import eventually
from loafer_redis import RedisProvider
from loafer_redis.provider import consumer_name
from tests.loafer_redis.conftest import RedisAdmin, unique

pytestmark = pytest.mark.redis


async def fetch_n(provider: RedisProvider, n: int, timeout: float = 10.0) -> list:
    """Fetch until ``n`` deliveries arrived (bounded)."""
    got: list = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            got.extend(await provider.fetch(n - len(got)))
    return got


def provider(stream: str, url: str, **options: object) -> RedisProvider:
    options.setdefault("block", 0.5)
    return RedisProvider(stream, url=url, **options)  # type: ignore[arg-type]


async def test_it_implements_the_optional_protocols() -> None:
    p = RedisProvider("s")
    for protocol in (LeaseExtender, Drainable, Verifiable, Backlog, HealthChecker):
        assert isinstance(p, protocol), protocol


async def test_a_missing_stream_is_a_configuration_error_saying_what_to_do(
    redis_url: str, admin: RedisAdmin
) -> None:
    stream = unique()
    admin.track(stream)
    p = provider(stream, redis_url)
    with pytest.raises(ConfigurationError, match="create=True") as caught:
        await p.start(5)
    assert "XGROUP CREATE" in str(caught.value) and "does not exist" in str(caught.value)
    with pytest.raises(ConfigurationError, match="does not exist"):
        await provider(stream, redis_url).verify()
    assert not await admin.client.exists(stream), "verify or start created the stream"


async def test_a_missing_group_is_a_configuration_error(redis_url: str, admin: RedisAdmin) -> None:
    stream = await admin.stream(group="other")
    with pytest.raises(ConfigurationError, match="no consumer group 'loafer'"):
        await provider(stream, redis_url).start(5)


async def test_create_makes_the_stream_and_group(redis_url: str, admin: RedisAdmin) -> None:
    stream = unique()
    admin.track(stream)
    p = provider(stream, redis_url, create=True, group="billing")
    await p.verify()  # fine: start creates them
    assert not await admin.client.exists(stream), "verify created the stream"
    await p.start(5)
    try:
        groups = await admin.client.xinfo_groups(stream)
        assert [g["name"] for g in groups] == [b"billing"]
        await p.start(5)  # idempotent
    finally:
        await p.close()


async def test_consumer_names_are_unique_per_provider() -> None:
    names = {consumer_name("loafer") for _ in range(100)}
    assert len(names) == 100
    assert all(f"-{__import__('os').getpid()}-" in n for n in names)


async def test_retry_settled_twice_counts_once_and_writes_nothing(
    redis_url: str, admin: RedisAdmin
) -> None:
    stream = await admin.stream()
    entry_id = await admin.put(stream, b'{"n": 1}')
    p = provider(stream, redis_url, lease=60)
    await p.start(5)
    try:
        [d] = await fetch_n(p, 1)
        d.token.settled = False  # as if our own bookkeeping were lost: Redis's check holds
        await p.settle(d, RETRY())
        d.token.settled = False
        await p.settle(d, RETRY())
        assert await admin.client.xlen(stream) == 1, "a RETRY wrote into the stream"
        [again] = await fetch_n(p, 1)
        assert again.message_id == entry_id.decode(), "not the producer's entry"
        assert again.attempt == 2
        assert await p.fetch(5) == [], "retried twice"
        await p.settle(again, ACCEPT)
    finally:
        await p.close()
    assert await admin.pending(stream) == []


async def test_an_entry_another_consumer_reclaimed_is_not_settled_again(
    redis_url: str, admin: RedisAdmin
) -> None:
    stream = await admin.stream()
    await admin.put(stream, b'{"n": 1}')
    a = provider(stream, redis_url, lease=0.3, reclaim_interval=0.05)
    b = provider(stream, redis_url, lease=0.3, reclaim_interval=0.05)
    await a.start(5)
    await b.start(5)
    try:
        [first] = await fetch_n(a, 1)
        await asyncio.sleep(0.4)  # let the lease lapse (a time-based lease: no event)
        [taken] = await fetch_n(b, 1)
        assert taken.message_id == first.message_id
        assert taken.attempt == 2, "the reclaim did not count a delivery"
        await a.settle(first, RETRY())
        await a.settle(first, REJECT("late"))  # ignored: settled already
        assert await admin.client.xlen(stream) == 1, "the stale consumer re-added it"
        assert await admin.dead(stream) == []
        [pending] = await admin.pending(stream)
        assert pending["consumer"] == b.consumer.encode()  # type: ignore[union-attr]
        await b.settle(taken, ACCEPT)
    finally:
        await a.close()
        await b.close()
    assert await admin.pending(stream) == []


async def test_a_dead_consumers_entries_are_reclaimed_with_their_attempt(
    redis_url: str, admin: RedisAdmin
) -> None:
    stream = await admin.stream()
    for i in range(3):
        await admin.put(stream, b'{"i": %d}' % i)
    # a consumer that read them and died
    await admin.client.xreadgroup("loafer", "ghost", {stream: ">"}, count=3)
    read_at = time.monotonic()
    p = provider(stream, redis_url, lease=0.5, reclaim_interval=0.1)
    await p.start(5)
    try:
        got = await fetch_n(p, 3, timeout=10)
        assert time.monotonic() - read_at >= 0.45, "reclaimed before the lease lapsed"
        assert [d.attempt for d in got] == [2, 2, 2]
        assert [d.metadata["delivery_count"] for d in got] == [2, 2, 2]
        for d in got:
            await p.settle(d, ACCEPT)
    finally:
        await p.close()
    assert await admin.pending(stream) == []


async def test_lease_extension_keeps_the_entry_from_other_consumers(
    redis_url: str, admin: RedisAdmin
) -> None:
    stream = await admin.stream()
    await admin.put(stream, b'{"n": 1}')
    a = provider(stream, redis_url, lease=1.5, reclaim_interval=0.05)
    b = provider(stream, redis_url, lease=1.5, reclaim_interval=0.05, block=0.1)
    await a.start(5)
    await b.start(5)
    try:
        [d] = await fetch_n(a, 1)
        for _ in range(5):  # 2.5 s in all: past the lease, each step well within it
            await asyncio.sleep(0.4)
            await a.extend_leases([d], 1.5)
            assert await b.fetch(5) == [], "another consumer took an extended entry"
        [pending] = await admin.pending(stream)
        assert pending["times_delivered"] == 1, "the extension counted a delivery"
        await a.settle(d, ACCEPT)
    finally:
        await a.close()
        await b.close()


async def test_delayed_retry_waits_in_redis_and_survives_the_process(
    redis_url: str, admin: RedisAdmin
) -> None:
    stream = await admin.stream()
    await admin.put(stream, b'{"n": 1}', {"h": "v"})
    p = provider(stream, redis_url)
    await p.start(5)
    [d] = await fetch_n(p, 1)
    settled_at = time.monotonic()
    await p.settle(d, RETRY(1.0))
    # one atomic step: parked (still pending for the group) and its id in the sorted set
    [parked] = await admin.pending(stream)
    assert parked["consumer"] == b"x-loafer-parked"
    assert parked["times_delivered"] == 1
    assert await admin.client.zrange(f"{stream}:loafer:delayed", 0, -1) == [d.token.id]
    assert await admin.client.xlen(stream) == 1, "a delayed RETRY wrote into the stream"
    await p.close()  # the process goes away before it is due
    later = provider(stream, redis_url)
    await later.start(5)
    try:
        [again] = await fetch_n(later, 1, timeout=10)
        assert time.monotonic() - settled_at >= 0.9, "a delayed retry came back early"
        assert again.message_id == d.message_id
        assert again.body == b'{"n": 1}'
        assert again.attempt == 2
        assert again.metadata["headers"]["h"] == "v"
        assert await admin.client.zcard(f"{stream}:loafer:delayed") == 0
        await later.settle(again, ACCEPT)
    finally:
        await later.close()


async def test_reject_dead_letters_with_the_reason(redis_url: str, admin: RedisAdmin) -> None:
    stream = await admin.stream()
    entry_id = await admin.put(stream, b'{"bad": 1}', {"h": "v"})
    p = provider(stream, redis_url)
    await p.start(5)
    try:
        [d] = await fetch_n(p, 1)
        await p.settle(d, REJECT("bad schema"))
    finally:
        await p.close()
    [(_, fields)] = await admin.dead(stream)
    assert fields[b"body"] == b'{"bad": 1}'
    assert fields[b"h"] == b"v"
    assert fields[b"x-loafer-reject-reason"] == b"bad schema"
    assert fields[b"x-loafer-rejected-from"] == stream.encode()
    assert fields[b"x-loafer-rejected-id"] == entry_id
    assert await admin.pending(stream) == []


async def test_reject_without_dead_letter_only_acknowledges(
    redis_url: str, admin: RedisAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    stream = await admin.stream()
    await admin.put(stream, b'{"bad": 1}')
    p = provider(stream, redis_url, dead_letter=False)
    assert not p.capabilities.dead_letter
    await p.start(5)
    try:
        [d] = await fetch_n(p, 1)
        await p.settle(d, REJECT("nope"))
    finally:
        await p.close()
    assert await admin.pending(stream) == []
    assert not await admin.client.exists(f"{stream}:dead")
    assert "rejected (nope) and acknowledged" in caplog.text


async def test_copies_an_earlier_version_re_added_are_still_understood(
    redis_url: str, admin: RedisAdmin
) -> None:
    """Earlier versions re-added RETRY copies with an attempt and a group field, and
    parked delayed copies (cmsgpack) in ``<stream>:delayed``: after an upgrade the copy
    counts from its field for its group, other loafer groups skip it, and a parked copy
    still reaches the stream when due."""
    stream = await admin.stream(group="a")
    await admin.client.xgroup_create(stream, "b", id="0")
    copy_id = await admin.put(stream, b'{"n": 1}', {"x-loafer-attempt": "3", "x-loafer-group": "a"})
    # as the earlier version packed it: group, original id, then the copy's fields
    legacy = await admin.client.eval(
        "return cmsgpack.pack(ARGV)", 0, "a", "1-0", "body", '{"n": 2}', "x-loafer-attempt", "2"
    )
    await admin.client.zadd(f"{stream}:delayed", {legacy: 0})  # due long ago
    a = provider(stream, redis_url, group="a")
    b = provider(stream, redis_url, group="b")
    await a.start(5)
    await b.start(5)
    try:
        got = {d.body: d for d in await fetch_n(a, 2)}
        assert got[b'{"n": 1}'].attempt == 3
        assert got[b'{"n": 1}'].message_id == copy_id.decode()
        assert got[b'{"n": 2}'].attempt == 2, "the parked copy did not reach the stream"
        for d in got.values():
            await a.settle(d, ACCEPT)
        assert await admin.client.zcard(f"{stream}:delayed") == 0
        [db] = await fetch_n(b, 1)  # the moved copy has no group field: b takes it
        assert db.body == b'{"n": 2}'
        await b.settle(db, ACCEPT)
        async with asyncio.timeout(5):
            while await admin.pending(stream, "b"):  # a's copy was read and skipped
                await b.fetch(5)
        assert await b.fetch(5) == []
    finally:
        await a.close()
        await b.close()


async def test_a_delayed_retry_idle_past_the_lease_waits_for_its_delay(
    redis_url: str, admin: RedisAdmin
) -> None:
    """A delayed retry stays pending for the group; idle longer than any consumer's
    lease, it is still not reclaimed (by this consumer or another) before it is due, and
    it comes back once, its attempt counted once. (A 1 s lease: a 0.2 s one lapsed on a
    loaded machine between the fetch and the settle, a third delivery.)"""
    stream = await admin.stream()
    await admin.put(stream, b'{"n": 1}')
    a = provider(stream, redis_url, lease=1.0, reclaim_interval=0.05, block=0.05)
    b = provider(stream, redis_url, lease=1.0, reclaim_interval=0.05, block=0.05)
    await a.start(5)
    await b.start(5)
    try:
        [d] = await fetch_n(a, 1)
        settled_at = time.monotonic()
        await a.settle(d, RETRY(2.5))
        got: list = []
        async with asyncio.timeout(10):
            while not got:
                for p in (a, b):
                    got.extend(await p.fetch(5))
        assert time.monotonic() - settled_at >= 2.4, "reclaimed before its delay"
        [again] = got
        assert again.message_id == d.message_id
        assert again.attempt == 2
        [pending] = await admin.pending(stream)
        assert pending["times_delivered"] == 2
        [owner] = [p for p in (a, b) if p.consumer == again.metadata["consumer"]]
        await owner.settle(again, ACCEPT)
        await asyncio.sleep(2.1)  # past two more leases: nothing else comes (time-based)
        for p in (a, b):
            assert await p.fetch(5) == [], "delivered twice"
    finally:
        await a.close()
        await b.close()
    assert await admin.pending(stream) == []
    assert await admin.client.xlen(stream) == 1


async def test_release_after_a_reclaim_keeps_the_attempt(redis_url: str, admin: RedisAdmin) -> None:
    """An entry reclaimed from a dead consumer (attempt 2) and then RELEASEd comes back
    with attempt 2; RETRY then makes it 3."""
    stream = await admin.stream()
    await admin.put(stream, b'{"n": 1}')
    await admin.client.xreadgroup("loafer", "ghost", {stream: ">"}, count=1)
    p = provider(stream, redis_url, lease=0.2, reclaim_interval=0.05)
    await p.start(5)
    try:
        [d] = await fetch_n(p, 1)
        assert d.attempt == 2
        await p.settle(d, RELEASE)
        [released] = await fetch_n(p, 1)
        assert released.attempt == 2, "RELEASE counted an attempt"
        await p.settle(released, RETRY())
        [retried] = await fetch_n(p, 1)
        assert retried.attempt == 3
        await p.settle(retried, ACCEPT)
    finally:
        await p.close()
    assert await admin.pending(stream) == []
    assert await admin.client.xlen(stream) == 1


async def test_a_cancelled_fetch_loses_nothing(redis_url: str, admin: RedisAdmin) -> None:
    """A fetch cancelled while its XREADGROUP blocks: entries that arrive afterwards are
    read into the buffer (the read is not cancelled), and given back at the drain."""
    stream = await admin.stream()
    p = provider(stream, redis_url, block=5.0)
    await p.start(5)
    try:
        fetching = asyncio.create_task(p.fetch(5))
        await eventually(lambda: bool(p._reader and p._reader.reading), what="a blocked read")
        fetching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetching
        for i in range(3):
            await admin.put(stream, b'{"i": %d}' % i)
        # the blocked read's reply came after the cancel
        await eventually(lambda: len(p._buffer) == 3, what="the entries buffered")
        assert len(await admin.pending(stream)) == 3
        await p.stop_fetching()
        pending = await admin.pending(stream)
        assert {e["consumer"] for e in pending} == {b"x-loafer-parked"}, (
            "buffered entries not given back"
        )
        assert [e["times_delivered"] for e in pending] == [0, 0, 0]
    finally:
        await p.close()
    other = provider(stream, redis_url)
    await other.start(5)
    try:
        got = await fetch_n(other, 3)
        assert sorted(d.body for d in got) == [b'{"i": 0}', b'{"i": 1}', b'{"i": 2}']
        assert [d.attempt for d in got] == [1, 1, 1], "giving back counted an attempt"
        for d in got:
            await other.settle(d, ACCEPT)
    finally:
        await other.close()


async def test_stop_fetching_ends_a_blocked_read_at_once(redis_url: str, admin: RedisAdmin) -> None:
    stream = await admin.stream()
    p = provider(stream, redis_url, block=30.0)
    await p.start(5)
    try:
        fetching = asyncio.create_task(p.fetch(5))
        await eventually(lambda: bool(p._reader and p._reader.reading), what="a blocked read")
        started = time.monotonic()
        fetching.cancel()
        await p.stop_fetching()
        assert time.monotonic() - started < 2, "CLIENT UNBLOCK did not end the read"
        with pytest.raises(asyncio.CancelledError):
            await fetching
        # a later fetch reads again
        await admin.put(stream, b'{"n": 1}')
        [d] = await fetch_n(p, 1)
        await p.settle(d, ACCEPT)
    finally:
        await p.close()


async def test_entries_read_with_a_lost_reply_are_released_at_close(
    redis_url: str, admin: RedisAdmin
) -> None:
    """Redis gave this consumer entries whose reply never reached it (the read was cut
    short): close finds them pending for it and gives them back, uncounted."""
    stream = await admin.stream()
    for i in range(2):
        await admin.put(stream, b'{"i": %d}' % i)
    p = provider(stream, redis_url)
    await p.start(5)
    assert p.consumer is not None
    await admin.client.xreadgroup("loafer", p.consumer, {stream: ">"}, count=2)
    await p.close()
    pending = await admin.pending(stream)
    assert [e["consumer"] for e in pending] == [b"x-loafer-parked"] * 2, "not given back"
    consumers = {c["name"] for c in await admin.client.xinfo_consumers(stream, "loafer")}
    assert p.consumer.encode() not in consumers, "close left its consumer in the group"
    other = provider(stream, redis_url, lease=60)
    await other.start(5)
    try:
        got = await fetch_n(other, 2, timeout=5)  # at once: not after a lease
        assert [d.attempt for d in got] == [1, 1]
        for d in got:
            await other.settle(d, ACCEPT)
    finally:
        await other.close()


async def test_a_read_cut_off_mid_way_recovers_its_entries(
    redis_url: str, admin: RedisAdmin
) -> None:
    """The reader's connection is killed while it blocks: Redis may have assigned entries
    whose reply is lost. The next read gives such entries back before reading on."""
    stream = await admin.stream()
    p = provider(stream, redis_url, block=5.0, lease=60)
    await p.start(5)
    try:
        fetching = asyncio.create_task(p.fetch(5))
        await eventually(lambda: bool(p._reader and p._reader.reading), what="a blocked read")
        reader_id = p._reader.client_id
        await admin.client.client_kill_filter(_id=reader_id)
        with pytest.raises(ProviderError):
            async with asyncio.timeout(10):
                await fetching
        # as if the cut-off read had been answered by Redis and the answer lost
        await admin.put(stream, b'{"lost": 1}')
        assert p.consumer is not None
        await admin.client.xreadgroup("loafer", p.consumer, {stream: ">"}, count=5)
        [d] = await fetch_n(p, 1, timeout=10)
        assert d.body == b'{"lost": 1}'
        assert d.attempt == 1
        await p.settle(d, ACCEPT)
    finally:
        await p.close()
    assert await admin.pending(stream) == []


async def test_backlog_health_and_verify(redis_url: str, admin: RedisAdmin) -> None:
    stream = await admin.stream()
    for i in range(5):
        await admin.put(stream, b'{"i": %d}' % i)
    p = provider(stream, redis_url)
    assert await p.backlog() is None
    assert not await p.health()
    await p.verify()
    await p.start(2)
    try:
        assert await p.health()
        version = (await admin.client.info("server"))["redis_version"]
        if int(str(version).split(".")[0]) >= 7:
            assert await p.backlog() == 5
            got = await fetch_n(p, 2)
            assert await p.backlog() == 3
            for d in got:
                await p.settle(d, ACCEPT)
    finally:
        await p.close()
    assert not await p.health()


async def test_bad_settings_are_configuration_errors() -> None:
    for options in (
        {"lease": 0},
        {"block": -1},
        {"dead_letter": ""},
        {"dead_letter_maxlen": 0},
        {"max_connections": 1},
        {"group": ""},
        {"group_start": "later"},
        {"url": "http://localhost"},
    ):
        with pytest.raises(ConfigurationError):
            RedisProvider("s", **options)


async def test_idle_consumers_with_nothing_pending_are_forgotten(
    redis_url: str, admin: RedisAdmin
) -> None:
    stream = await admin.stream()
    await admin.put(stream, b'{"held": 1}')
    await admin.client.xreadgroup("loafer", "dead-with-pending", {stream: ">"}, count=1)
    await admin.client.xreadgroup("loafer", "dead-and-empty", {stream: ">"}, count=1)
    await asyncio.sleep(0.3)  # both idle past forget_consumers_after (time-based)
    p = provider(stream, redis_url, forget_consumers_after=0.2, lease=60)
    await p.start(5)
    try:
        await p.fetch(5)  # a read cycle looks for idle consumers

        async def names() -> set[bytes]:
            return {c["name"] for c in await admin.client.xinfo_consumers(stream, "loafer")}

        await eventually(
            lambda: _without(names(), b"dead-and-empty"), what="the empty consumer forgotten"
        )
        assert b"dead-with-pending" in await names(), "a consumer with pending entries went"
    finally:
        await p.close()


async def _without(names: Any, name: bytes) -> bool:
    return name not in await names


async def test_a_group_deleted_while_running(redis_url: str, admin: RedisAdmin) -> None:
    """Without create: a ConfigurationError (fatal: the manager stops, saying what to
    do). With create=True (e.g. a Redis without persistence restarted): made again."""
    stream = await admin.stream()
    strict = provider(stream, redis_url)
    lenient = provider(stream, redis_url, create=True)
    await strict.start(5)
    await lenient.start(5)
    try:
        await admin.client.delete(stream)
        with pytest.raises(ConfigurationError, match="no longer exists"):
            async with asyncio.timeout(10):
                while True:
                    await strict.fetch(5)
        with pytest.raises(ProviderError, match="created again"):
            async with asyncio.timeout(10):
                while True:
                    await lenient.fetch(5)
        await admin.put(stream, b'{"after": 1}')
        [d] = await fetch_n(lenient, 1)
        await lenient.settle(d, ACCEPT)
    finally:
        await strict.close()
        await lenient.close()


async def test_a_retried_then_rejected_entry_is_readable_by_any_group_of_the_dead_stream(
    redis_url: str, admin: RedisAdmin
) -> None:
    stream = await admin.stream(group="billing")
    await admin.put(stream, b'{"n": 1}')
    p = provider(stream, redis_url, group="billing")
    await p.start(5)
    try:
        [d] = await fetch_n(p, 1)
        await p.settle(d, RETRY())
        [again] = await fetch_n(p, 1)
        assert again.attempt == 2
        assert again.metadata["headers"] == {}, "control fields on the entry"
        await p.settle(again, REJECT("poison"))
    finally:
        await p.close()
    assert await admin.pending(stream, "billing") == []
    [(_, fields)] = await admin.dead(stream)
    assert fields[b"x-loafer-reject-reason"] == b"poison"
    assert b"x-loafer-group" not in fields
    assert b"x-loafer-attempt" not in fields
    # a reprocessor of the dead-letter stream, in a group of another name, gets it
    dead = f"{stream}:dead"
    await admin.client.xgroup_create(dead, "loafer", id="0")
    reprocessor = provider(dead, redis_url, dead_letter=False)
    await reprocessor.start(5)
    try:
        [entry] = await fetch_n(reprocessor, 1)
        assert entry.body == b'{"n": 1}'
        await reprocessor.settle(entry, ACCEPT)
    finally:
        await reprocessor.close()


async def test_deliveries_never_settled_do_not_shrink_what_a_fetch_gets(
    redis_url: str, admin: RedisAdmin
) -> None:
    """A delivery the dispatcher gave up settling (Redis down through every try) frees
    its slot there; the provider must still read for a fetch asking for that slot (the
    entry itself comes back to the group once its lease lapses)."""
    stream = await admin.stream()
    for i in range(4):
        await admin.put(stream, b'{"i": %d}' % i)
    p = provider(stream, redis_url, lease=60)
    await p.start(2)
    try:
        abandoned = await fetch_n(p, 2)  # never settled
        assert len(abandoned) == 2
        got = await fetch_n(p, 2, timeout=5)
        assert sorted(d.body for d in got) == [b'{"i": 2}', b'{"i": 3}']
        for d in [*abandoned, *got]:
            await p.settle(d, ACCEPT)
    finally:
        await p.close()
