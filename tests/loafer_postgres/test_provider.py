"""PostgresProvider against a real PostgreSQL: start-up checks, LISTEN/NOTIFY wake-ups
(and no hot polling), delayed rows, reconnects after the server drops the connections,
per-key order across two providers, settlements' effects on the tables."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from loafer_core import Manager, Route
from loafer_core.errors import ConfigurationError, ProviderError
from loafer_core.outcome import ACCEPT, REJECT, RELEASE, RETRY
from loafer_core.provider import Backlog, Drainable, HealthChecker, LeaseExtender, Verifiable
from loafer_core.testing import eventually
from loafer_core.translator import PassThroughTranslator
from loafer_postgres import PostgresProvider
from tests.loafer_postgres.conftest import PgAdmin

pytestmark = pytest.mark.postgres


def provider(pg: PgAdmin, queue: str, **options: Any) -> PostgresProvider:
    options.setdefault("wait", 0.5)
    options.setdefault("lease", 5.0)
    return PostgresProvider(queue, url=pg.url, schema=pg.schema, **options)


def queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


async def rows_left(pg: PgAdmin, queue: str, count: int) -> bool:
    return len(await pg.rows(queue)) == count


async def fetch_n(p: PostgresProvider, n: int, timeout: float = 10.0) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(timeout):
        while len(got) < n:
            got.extend(await p.fetch(n - len(got)))
    return got


def test_it_implements_the_optional_protocols() -> None:
    p = PostgresProvider("q")
    for protocol in (LeaseExtender, Drainable, Verifiable, Backlog, HealthChecker):
        assert isinstance(p, protocol), protocol


async def test_a_missing_table_is_a_configuration_error_naming_the_init_command(
    postgres_url: str,
) -> None:
    schema = f"missing_{uuid.uuid4().hex[:8]}"
    p = PostgresProvider("q", url=postgres_url, schema=schema)
    for call in (lambda: p.start(1), p.verify, lambda: p.start(1)):
        with pytest.raises(ConfigurationError, match="loafer postgres init") as caught:
            await call()
        assert f'"{schema}"."loafer_queue" does not exist' in str(caught.value)
    await p.close()
    await p.close()


async def test_a_missing_dead_letter_table_is_named(pg: PgAdmin) -> None:
    await pg.execute(f'DROP TABLE "{pg.schema}"."loafer_queue_dead"')
    with pytest.raises(ConfigurationError, match="loafer_queue_dead"):
        await provider(pg, "q").verify()
    # without dead letters the table is not needed
    await provider(pg, "q", dead_letters=False).verify()


async def test_an_unreachable_server_is_a_provider_error() -> None:
    p = PostgresProvider("q", url="postgresql://u:pw@127.0.0.1:1/test", connect_timeout=2)
    with pytest.raises(ProviderError, match="connecting failed"):
        await p.start(1)
    await p.close()


async def test_settlements_change_the_tables(pg: PgAdmin) -> None:
    q = queue_name()
    for i in range(4):
        await pg.put(q, f'{{"i": {i}}}'.encode(), {"h": str(i)})
    p = provider(pg, q)
    await p.start(4)
    try:
        a, b, c, d = await fetch_n(p, 4)
        assert [x.attempt for x in (a, b, c, d)] == [1, 1, 1, 1]
        assert a.metadata["headers"] == {"h": "0"} and a.metadata["queue"] == q
        await p.settle(a, ACCEPT)
        await p.settle(b, RETRY(30))
        await p.settle(c, REJECT("bad row"))
        await p.settle(d, RELEASE)
        # an ACCEPT is queued, and deleted with the next batch of accepted rows
        await eventually(lambda: rows_left(pg, q, 2), timeout=5, what="the accepted row gone")
        rows = {r["body"]: r for r in await pg.rows(q)}
        assert set(rows) == {b'{"i": 1}', b'{"i": 3}'}
        assert rows[b'{"i": 1}']["lease"] is None and rows[b'{"i": 1}']["attempts"] == 1
        assert rows[b'{"i": 3}']["attempts"] == 0, "RELEASE gives the attempt back"
        (dead,) = await pg.dead(q)
        assert (dead["body"], dead["reason"], dead["attempts"]) == (b'{"i": 2}', "bad row", 1)
        assert await p.backlog() == 1  # the released row; the retried one waits 30 s
        assert await p.health()
        # a settle of a lease no longer held changes nothing
        await p.settle(b, ACCEPT)
        await p.close()  # flushes the ACCEPTs
        assert len(await pg.rows(q)) == 2
    finally:
        await p.close()
    assert not await p.health()


async def test_reject_without_dead_letters_deletes(pg: PgAdmin) -> None:
    q = queue_name()
    await pg.put(q, b"{}")
    p = provider(pg, q, dead_letters=False)
    assert not p.capabilities.dead_letter
    await p.start(1)
    try:
        (d,) = await fetch_n(p, 1)
        await p.settle(d, REJECT("no"))
    finally:
        await p.close()
    assert await pg.rows(q) == [] and await pg.dead(q) == []


async def test_an_idle_consumer_waits_on_notifications_not_polling(pg: PgAdmin) -> None:
    """Idle for 3 s with a 10 s poll interval: one claim (plus one per wake-up by its
    own queue's notifications: none here, though another queue of the table is busy);
    then a row inserted is leased well within the poll interval."""
    q, other = queue_name(), queue_name()
    p = provider(pg, q, wait=3.0, poll_interval=10.0)
    await p.start(1)
    try:
        fetching = asyncio.ensure_future(p.fetch(1))
        for i in range(10):  # another queue's rows notify the same channel
            await pg.put(other, f'{{"other": {i}}}'.encode())
            await asyncio.sleep(0.1)
        assert await fetching == []
        assert p.claims == 1, f"{p.claims} claims in 3 s of idling: polling hot"
        started = time.monotonic()
        fetching = asyncio.ensure_future(p.fetch(1))
        await asyncio.sleep(0.2)
        await pg.put(q, b'{"wake": 1}')
        got = await fetching
        took = time.monotonic() - started
        assert [d.body for d in got] == [b'{"wake": 1}']
        assert took < 1.5, f"a notified row was leased after {took:.2f}s"
        assert p.claims <= 3
    finally:
        await p.close()


async def test_without_listen_it_polls_at_the_poll_interval(pg: PgAdmin) -> None:
    q = queue_name()
    p = provider(pg, q, wait=1.0, poll_interval=0.2, listen=False)
    await p.start(1)
    try:
        assert await p.fetch(1) == []
        assert 3 <= p.claims <= 7, p.claims
    finally:
        await p.close()


async def test_a_delayed_row_is_leased_when_due_without_a_notification(pg: PgAdmin) -> None:
    q = queue_name()
    p = provider(pg, q, wait=5.0, poll_interval=30.0)
    await p.start(1)
    try:
        await pg.put(q, b'{"later": 1}', delay=1.0)
        started = time.monotonic()
        got = await fetch_n(p, 1, timeout=5)
        took = time.monotonic() - started
        assert 0.8 <= took < 2.0, f"a row due in 1 s was leased after {took:.2f}s"
        assert p.claims <= 4, p.claims
        await p.settle(got[0], ACCEPT)
    finally:
        await p.close()


async def test_a_lapsed_lease_wakes_an_idle_consumer(pg: PgAdmin) -> None:
    q = queue_name()
    await pg.put(q, b'{"lapse": 1}')
    p = provider(pg, q, lease=1.0, wait=5.0, poll_interval=30.0)
    await p.start(1)
    try:
        (first,) = await fetch_n(p, 1)
        started = time.monotonic()
        (again,) = await fetch_n(p, 1, timeout=5)
        assert time.monotonic() - started < 2.0
        assert again.attempt == 2
        await p.settle(first, ACCEPT)  # the lapsed lease's late settle: nothing
        await asyncio.sleep(0.2)
        assert len(await pg.rows(q)) == 1
        await p.settle(again, ACCEPT)
        await eventually(lambda: rows_left(pg, q, 0), timeout=5, what="the row deleted")
    finally:
        await p.close()


async def _terminate(pg: PgAdmin, application_name: str) -> int:
    killed: int = await pg.pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
        application_name,
    )
    return killed


async def test_it_reconnects_after_the_server_drops_its_connections(pg: PgAdmin) -> None:
    """Every connection of a running route (pool and listener) is terminated twice while
    it consumes: every row is handled, and the listener is back (a row inserted after is
    picked up within the wait, not the poll interval)."""
    q = queue_name()
    name = f"loafer-test-{uuid.uuid4().hex[:8]}"
    total = 200
    seen: set[bytes] = set()
    done = asyncio.Event()

    async def handler(body: Any, metadata: Any) -> bool:
        seen.add(bytes(body))
        if len(seen) >= total:
            done.set()
        await asyncio.sleep(0.005)
        return True

    p = provider(pg, q, connection_name=name, poll_interval=30.0, wait=2.0, lease=3.0)
    route = Route(p, handler, translator=PassThroughTranslator(), max_concurrency=5)
    async with Manager([route], shutdown_timeout=5):
        await pg.put_many(q, [f'{{"n": {i}}}'.encode() for i in range(total // 2)])
        await eventually(lambda: len(seen) > 20, timeout=10, what="some rows handled")
        assert await _terminate(pg, name) >= 2  # the pool's and the listener's
        await pg.put_many(q, [f'{{"n": {i}}}'.encode() for i in range(total // 2, total)])
        await asyncio.sleep(0.3)
        assert await _terminate(pg, name) >= 1
        async with asyncio.timeout(30):
            await done.wait()
        listener = p._listener
        assert listener is not None
        await eventually(lambda: listener.connected, timeout=10, what="listening again")
        late = time.monotonic()
        await pg.put(q, b'{"late": 1}')
        await eventually(lambda: b'{"late": 1}' in seen, timeout=10, what="the late row")
        assert time.monotonic() - late < 3.0
    assert len(seen) == total + 1
    assert await pg.rows(q) == []


async def test_per_key_order_holds_across_two_providers(pg: PgAdmin) -> None:
    """Two routes (two providers, their own pools) on one queue: each key's rows are
    handled one at a time across both, in id order; different keys in parallel."""
    q = queue_name()
    keys = [f"k{i}" for i in range(4)]
    per_key = 15
    bodies, row_keys = [], []
    for i in range(per_key):
        for key in keys:
            bodies.append(f'{{"k": "{key}", "i": {i}}}'.encode())
            row_keys.append(key)
    await pg.put_many(q, bodies, keys=row_keys)
    order: dict[str, list[int]] = {k: [] for k in keys}
    running: dict[str, int] = dict.fromkeys(keys, 0)
    overlapped: list[str] = []
    by: dict[str, set[int]] = {k: set() for k in keys}
    done = asyncio.Event()

    def handler_of(which: int) -> Any:
        async def handler(content: Any, metadata: Any) -> bool:
            key, i = content["k"], content["i"]
            if running[key]:
                overlapped.append(key)
            running[key] += 1
            try:
                await asyncio.sleep(0.01)
                order[key].append(i)
                by[key].add(which)
            finally:
                running[key] -= 1
            if sum(map(len, order.values())) == len(bodies):
                done.set()
            return True

        return handler

    routes = [
        Route(provider(pg, q, poll_interval=1.0), handler_of(n), max_concurrency=8, name=f"r{n}")
        for n in (1, 2)
    ]
    async with Manager(routes, shutdown_timeout=5):
        async with asyncio.timeout(30):
            await done.wait()
    assert not overlapped, f"two rows of one key ran at once: {overlapped}"
    assert order == {k: list(range(per_key)) for k in keys}
    assert any(len(v) == 2 for v in by.values()), f"one provider did everything: {by}"


async def test_a_retried_keyed_row_holds_its_key_back(pg: PgAdmin) -> None:
    q = queue_name()
    await pg.put_many(q, [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}'], keys=["k", "k", None])
    p = provider(pg, q)
    await p.start(5)
    try:
        got = await fetch_n(p, 2)
        assert sorted(d.body for d in got) == [b'{"n": 1}', b'{"n": 3}']
        assert await p.fetch(5) == [], "the key's second row went out with its first"
        first = next(d for d in got if d.ordering_key == "k")
        await p.settle(first, RETRY(0.5))
        (again,) = await fetch_n(p, 1)  # not the key's next row: this one, when due
        assert again.body == b'{"n": 1}' and again.attempt == 2
        await p.settle(again, ACCEPT)
        (second,) = await fetch_n(p, 1)
        assert second.body == b'{"n": 2}'
    finally:
        await p.close()


async def test_lease_extension_holds_the_row(pg: PgAdmin) -> None:
    q = queue_name()
    await pg.put(q, b"{}")
    p = provider(pg, q, lease=1.0, wait=0.2)
    await p.start(1)
    try:
        (d,) = await fetch_n(p, 1)
        for _ in range(4):
            await asyncio.sleep(0.4)
            await p.extend_leases([d], 1.0)
        assert await p.fetch(1) == []
        await p.settle(d, ACCEPT)
        await p.extend_leases([d], 1.0)  # after the settle: nothing
    finally:
        await p.close()
    assert await pg.rows(q) == []


async def test_stop_fetching_gives_back_a_cancelled_fetch_s_rows(pg: PgAdmin) -> None:
    q = queue_name()
    p = provider(pg, q, wait=5.0)
    await p.start(3)
    try:
        fetching = asyncio.ensure_future(p.fetch(3))
        await asyncio.sleep(0.2)
        await pg.put_many(q, [b"1", b"2", b"3"])
        await eventually(lambda: p._buffer or fetching.done(), timeout=5)
        if not fetching.done():
            fetching.cancel()
        await asyncio.gather(fetching, return_exceptions=True)
        handed = [] if fetching.cancelled() else fetching.result()
        for d in handed:
            await p.settle(d, RELEASE)
        await p.stop_fetching()
        rows = await pg.rows(q)
        assert [r["lease"] for r in rows] == [None] * 3
        assert [r["attempts"] for r in rows] == [0, 0, 0]
    finally:
        await p.close()
