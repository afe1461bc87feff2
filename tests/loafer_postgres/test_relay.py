"""The outbox relay against the real PostgreSQL and a real RabbitMQ.

Commit publishes exactly once, rollback nothing; rows of transactions still open are
relayed once they commit (the BIGSERIAL gap), a key's rows in order across 8 writers
committing out of order and 2 relays; an unknown destination is dead-lettered; a publish
refused is retried until it is confirmed.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest

from loafer_core import Manager
from loafer_core.errors import ConfigurationError
from loafer_core.policy import RetryPolicy
from loafer_core.testing import eventually
from loafer_postgres.outbox import MESSAGE_ID_HEADER, Outbox
from loafer_postgres.relay import OutboxRelay, Relay
from loafer_rabbit import RabbitPublisher
from tests.loafer_postgres._outbox_fixtures import PgSchema, pgo
from tests.loafer_rabbit.conftest import RabbitAdmin, open_admin, unique

__all__ = ["pgo"]

pytestmark = [pytest.mark.postgres, pytest.mark.rabbit]

FAST = RetryPolicy(initial=0.2, factor=1.0, maximum=0.2)


@pytest.fixture
async def rabbit(rabbit_url: str) -> AsyncIterator[RabbitAdmin]:
    async with open_admin(rabbit_url) as helper:
        yield helper


class Counting:
    """A publisher counting what it published (to see both relays at work)."""

    def __init__(self, publisher: RabbitPublisher) -> None:
        self.publisher = publisher
        self.published = 0

    async def start(self) -> None:
        await self.publisher.start()

    async def close(self) -> None:
        await self.publisher.close()

    async def publish(self, body: Any, *, headers: Any = None, **options: Any) -> None:
        await self.publisher.publish(body, headers=headers, **options)
        self.published += 1


def relay_of(pgo: PgSchema, rabbit_url: str, queue: str, **options: Any) -> OutboxRelay:
    return OutboxRelay(
        {"orders": RabbitPublisher(rabbit_url, routing_key=queue)},
        url=pgo.url,
        schema=pgo.name,
        lease=5,
        poll_interval=0.5,
        retry=FAST,
        **options,
    )


async def test_commit_publishes_once_rollback_nothing(
    pgo: PgSchema, rabbit: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await rabbit.declare()
    outbox = Outbox(schema=pgo.name)
    async with pgo.pool.acquire() as conn:
        async with conn.transaction():
            kept = await outbox.publish(conn, "orders", {"n": 1}, headers={"h": "v"}, key="k")
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await outbox.publish(conn, "orders", {"n": 2})
                raise RuntimeError("rolled back")
    async with Manager([relay_of(pgo, rabbit_url, queue, id_option="message_id")]):
        await rabbit.wait_count(queue, 1)

        async def emptied() -> bool:
            return await pgo.count() == 0

        await eventually(emptied, timeout=15, what="the relayed row deleted")
    (message,) = await rabbit.drain(queue)
    assert json.loads(message.body) == {"n": 1}
    assert message.headers["h"] == "v"
    assert message.headers[MESSAGE_ID_HEADER] == kept
    assert message.message_id == kept  # id_option: the AMQP message_id property too
    assert await pgo.count("loafer_outbox_dead") == 0


async def test_unknown_destination_is_dead_lettered_with_the_reason(
    pgo: PgSchema, rabbit: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await rabbit.declare()
    outbox = Outbox(schema=pgo.name)
    async with pgo.pool.acquire() as conn, conn.transaction():
        await outbox.publish(conn, "nowhere", b"lost?")
        await outbox.publish(conn, "orders", b"fine")
    async with Manager([relay_of(pgo, rabbit_url, queue)]):

        async def dead() -> bool:
            return await pgo.count("loafer_outbox_dead") == 1

        await eventually(dead, timeout=15, what="the row in loafer_outbox_dead")
        await rabbit.wait_count(queue, 1)
    (row,) = await pgo.rows("loafer_outbox_dead")
    assert row["destination"] == "nowhere"
    assert "no publisher for destination 'nowhere'" in row["reason"]
    assert await pgo.count() == 0


async def test_refused_publish_is_retried_until_confirmed(
    pgo: PgSchema, rabbit: RabbitAdmin, rabbit_url: str
) -> None:
    queue = unique()  # not declared yet: the mandatory publish is returned (refused)
    rabbit.track(queue)
    outbox = Outbox(schema=pgo.name)
    async with pgo.pool.acquire() as conn, conn.transaction():
        await outbox.publish_many(conn, "orders", [b"1", b"2", b"3"], key="k")
    route = relay_of(pgo, rabbit_url, queue, error_handler=lambda *exc: None)
    async with Manager([route]):

        async def retried() -> bool:
            rows = await pgo.rows()
            return bool(rows) and rows[0]["attempts"] >= 2

        await eventually(retried, timeout=15, what="the first row retried")
        assert await pgo.count() == 3  # nothing deleted without a confirm
        await rabbit.declare(queue)
        await rabbit.wait_count(queue, 3, timeout=20)
    assert [m.body for m in await rabbit.drain(queue)] == [b"1", b"2", b"3"]
    assert await pgo.count() == 0


async def test_a_row_of_a_transaction_still_open_is_relayed_once_it_commits(
    pgo: PgSchema, rabbit: RabbitAdmin, rabbit_url: str
) -> None:
    """The BIGSERIAL gap: the open transaction holds lower ids than rows relayed meanwhile."""
    queue = await rabbit.declare()
    outbox = Outbox(schema=pgo.name)
    async with pgo.pool.acquire() as slow, pgo.pool.acquire() as fast:
        open_tx = slow.transaction()
        await open_tx.start()
        await outbox.publish(slow, "orders", b"late-unkeyed")
        await outbox.publish(slow, "orders", b"late-keyed", key="k")
        async with fast.transaction():
            await outbox.publish(fast, "orders", b"early-unkeyed")
            await outbox.publish(fast, "orders", b"early-keyed", key="k")
        ids = {bytes(r["body"]): r["id"] for r in await pgo.rows()}
        assert set(ids) == {b"early-unkeyed", b"early-keyed"}  # the open one is invisible
        async with Manager([relay_of(pgo, rabbit_url, queue)]):
            await rabbit.wait_count(queue, 2)
            await open_tx.commit()
            await rabbit.wait_count(queue, 4)
    bodies = [m.body for m in await rabbit.drain(queue)]
    assert set(bodies[:2]) == {b"early-unkeyed", b"early-keyed"}
    assert set(bodies[2:]) == {b"late-unkeyed", b"late-keyed"}
    assert await pgo.count() == 0


async def test_eight_writers_out_of_order_two_relays_every_row_in_key_order(
    pgo: PgSchema, rabbit: RabbitAdmin, rabbit_url: str
) -> None:
    """8 writers, one key each (and a shared unkeyed stream), each transaction taking its
    ids and then waiting a random while before committing, so commits interleave out of
    id order; 2 relays (2 managers, their own pools and publishers) at once."""
    queue = await rabbit.declare()
    outbox = Outbox(schema=pgo.name)
    per_writer, rows_per_tx = 30, 3
    rng = random.Random(22)

    async def writer(w: int) -> None:
        seq = 0
        for _ in range(per_writer // rows_per_tx):
            async with pgo.pool.acquire() as conn, conn.transaction():
                for _ in range(rows_per_tx):
                    body = json.dumps({"key": f"k{w}", "seq": seq}).encode()
                    await outbox.publish(conn, "orders", body, key=f"k{w}")
                    await outbox.publish(conn, "orders", b'{"key": null}')
                    seq += 1
                await asyncio.sleep(rng.random() * 0.05)

    counted = [Counting(RabbitPublisher(rabbit_url, routing_key=queue)) for _ in (1, 2)]
    relays = [
        OutboxRelay(
            {"orders": publisher},
            url=pgo.url,
            schema=pgo.name,
            lease=5,
            poll_interval=0.5,
            retry=FAST,
            max_concurrency=8,
            name=f"relay-{i}",
        )
        for i, publisher in enumerate(counted)
    ]
    async with Manager([relays[0]]), Manager([relays[1]]):
        await asyncio.gather(*(writer(w) for w in range(8)))
        await rabbit.wait_count(queue, 8 * per_writer * 2, timeout=60)
    messages = [json.loads(m.body) for m in await rabbit.drain(queue)]
    assert len(messages) == 8 * per_writer * 2  # every row once (no crash: no duplicate)
    seqs: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        if m["key"] is not None:
            seqs[m["key"]].append(m["seq"])
    assert {k: v for k, v in seqs.items()} == {f"k{w}": list(range(per_writer)) for w in range(8)}
    assert await pgo.count() == 0
    assert all(c.published > 0 for c in counted), [c.published for c in counted]  # both relayed


def test_relay_arguments() -> None:
    with pytest.raises(ConfigurationError, match="publishers"):
        OutboxRelay({}, url="postgresql://x/y")
    with pytest.raises(ConfigurationError, match="the relay sets it"):
        OutboxRelay(
            {"a": RabbitPublisher("amqp://x/", routing_key="q")},
            url="postgresql://x/y",
            handler=print,
        )
    with pytest.raises(ConfigurationError, match="key_option"):
        Relay(key_option={"a": 3})  # type: ignore[dict-item]
    route = OutboxRelay(
        {"a": RabbitPublisher("amqp://x/", routing_key="q")}, url="postgresql://x/y", outbox="shop"
    )
    assert route.name == "outbox-relay:loafer_outbox/shop"
    assert route.provider.queue == "shop"


async def test_a_decoded_body_is_refused_not_forwarded() -> None:
    """A relay route given a translator (a config file without translator = false): the
    row is retried with an error naming the fix, never forwarded re-encoded."""
    with pytest.raises(TypeError, match="translator"):
        await Relay()({"decoded": True}, {"destination": "orders", "headers": {}})
