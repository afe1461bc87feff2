"""Several consumer groups on one stream: a group's retries, delays and releases never
write into the stream the others read (issue 21, item 7)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import pytest

from loafer_core import Manager
from loafer_core.outcome import RELEASE, RETRY, Outcome
from loafer_redis import RedisProvider, RedisRoute
from tests.loafer_redis.conftest import RedisAdmin

pytestmark = pytest.mark.redis

DELAY = 0.6


def _plan(body: dict[str, Any], group: str) -> str:
    """What a group's handler does on an entry's first delivery."""
    kind = str(body["kind"])
    if kind == "poison":
        return "poison" if group == "billing" else "accept"
    return kind


async def test_two_groups_retry_delay_and_release_without_writing_to_the_stream(
    redis_url: str, admin: RedisAdmin
) -> None:
    stream = await admin.stream(group="billing")
    await admin.client.xgroup_create(stream, "shipping", id="0")
    kinds = ["retry", "delay", "release", "retry", "delay", "release", "accept", "poison"]
    produced: dict[str, str] = {}  # entry id -> kind
    for n, kind in enumerate(kinds):
        entry_id = await admin.put(stream, b'{"n": %d, "kind": "%s"}' % (n, kind.encode()))
        produced[entry_id.decode()] = kind
    written = await admin.client.xlen(stream)
    assert written == len(kinds)

    # group -> entry id -> [(attempt, monotonic time)] of every delivery
    seen: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    accepted: dict[str, dict[str, int]] = defaultdict(dict)  # group -> id -> attempt
    done = asyncio.Event()
    expected = {"billing": len(kinds) - 1, "shipping": len(kinds)}

    def handler_for(group: str) -> Any:
        async def handler(content: Any, metadata: Any) -> Outcome | bool:
            entry_id = metadata["message_id"]
            deliveries = seen[group][entry_id]
            deliveries.append((metadata["attempt"], time.monotonic()))
            plan = _plan(content, group)
            if plan == "poison":
                return RETRY()  # every time: dead-lettered at max_attempts
            if len(deliveries) == 1 and plan != "accept":
                return {"retry": RETRY(), "delay": RETRY(DELAY), "release": RELEASE}[plan]
            accepted[group][entry_id] = metadata["attempt"]
            if all(len(accepted[g]) == n for g, n in expected.items()) and dead_done():
                done.set()
            return True

        return handler

    dead_ids: list[str] = []

    def dead_done() -> bool:
        return len(dead_ids) == 1

    async def poll_dead() -> None:
        while True:
            for _, fields in await admin.dead(stream):
                rid = fields[b"x-loafer-rejected-id"].decode()
                if rid not in dead_ids:
                    dead_ids.append(rid)
            if dead_done() and all(len(accepted[g]) == n for g, n in expected.items()):
                done.set()
                return
            await asyncio.sleep(0.05)  # Redis's state: nothing signals it

    routes = [
        RedisRoute(
            stream,
            url=redis_url,
            group=group,
            handler=handler_for(group),
            retry=None,  # RETRY() is an immediate retry, RETRY(d) waits d seconds
            max_attempts=3,
            block=0.5,
        )
        for group in ("billing", "shipping")
    ]
    async with Manager(routes):
        poller = asyncio.create_task(poll_dead())
        try:
            async with asyncio.timeout(30):
                await done.wait()
        finally:
            poller.cancel()

    # every group handled every producer entry, under the producer's id: no copies
    assert set(accepted["shipping"]) == set(produced)
    poison = [i for i, kind in produced.items() if kind == "poison"]
    assert set(accepted["billing"]) == set(produced) - set(poison)
    for group in ("billing", "shipping"):
        assert set(seen[group]) == set(produced), f"{group} saw entries nobody produced"
        for entry_id, kind in produced.items():
            attempts = [a for a, _ in seen[group][entry_id]]
            if _plan({"kind": kind}, group) in ("retry", "delay"):
                assert attempts == [1, 2], (group, kind, attempts)
            elif kind == "release":
                assert attempts == [1, 1], f"{group}: RELEASE counted an attempt: {attempts}"
            elif _plan({"kind": kind}, group) == "poison":
                assert attempts == [1, 2, 3], (group, attempts)
            else:
                assert attempts == [1], (group, kind, attempts)
            if _plan({"kind": kind}, group) == "delay":
                (_, first), (_, second) = seen[group][entry_id]
                assert second - first >= DELAY * 0.9, f"{group}: delayed retry came early"
    # the stream holds what the producers wrote, and nothing else
    assert await admin.client.xlen(stream) == written
    assert sorted(e.decode() for e, _ in await admin.client.xrange(stream)) == sorted(produced)
    # the poison entry was dead-lettered once, with its reason, by billing only
    [(_, fields)] = await admin.dead(stream)
    assert fields[b"x-loafer-rejected-id"].decode() == poison[0]
    assert fields[b"x-loafer-reject-reason"] == b"max_attempts (3) reached"
    for group in ("billing", "shipping"):
        assert await admin.pending(stream, group) == [], f"{group} left entries pending"


async def test_a_group_of_another_client_sees_only_the_producers_entries(
    redis_url: str, admin: RedisAdmin
) -> None:
    """A non-loafer consumer group (plain XREADGROUP) of the same stream reads exactly
    what the producer wrote, however often a loafer group retried or released."""
    stream = await admin.stream(group="loafer")
    await admin.client.xgroup_create(stream, "foreign", id="0")
    ids = [await admin.put(stream, b'{"i": %d}' % i) for i in range(5)]
    p = RedisProvider(stream, url=redis_url, block=0.5)
    await p.start(5)
    try:
        async with asyncio.timeout(15):
            got: list[Any] = []
            while len(got) < 5:
                got.extend(await p.fetch(5 - len(got)))
            for d in got:
                await p.settle(d, RETRY())
            again: list[Any] = []
            while len(again) < 5:
                again.extend(await p.fetch(5 - len(again)))
            assert sorted(d.message_id for d in again) == sorted(i.decode() for i in ids)
            assert [d.attempt for d in again] == [2] * 5
            for d in again:
                await p.settle(d, RELEASE)
            third: list[Any] = []
            while len(third) < 5:
                third.extend(await p.fetch(5 - len(third)))
            assert [d.attempt for d in third] == [2] * 5, "RELEASE counted an attempt"
            for d in third:
                await p.settle(d, RETRY(0.2))
    finally:
        await p.close()
    assert await admin.client.xlen(stream) == 5
    reply = await admin.client.xreadgroup("foreign", "c", {stream: ">"}, count=100)
    [(_, entries)] = reply
    assert [entry_id for entry_id, _ in entries] == ids
