"""PubSubProvider on the emulator, beyond the kit: set-up errors and ``create``, what a
dead letter carries, the subscription's own dead-letter policy, ordering keys, and an
extension racing a release."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import pytest

from loafer_core import Manager
from loafer_core.deadletters import (
    DEAD_ATTEMPTS,
    DEAD_FIRST_FAILURE,
    DEAD_LAST_FAILURE,
    DEAD_ORIGIN,
    DEAD_REASON,
)
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import ACCEPT, REJECT, RELEASE
from loafer_core.provider import Delivery
from loafer_core.testing import eventually
from loafer_pubsub import (
    ORIGINAL_MESSAGE_ID_ATTRIBUTE,
    REJECT_REASON_ATTRIBUTE,
    REJECTED_FROM_ATTRIBUTE,
    PubSubProvider,
    PubSubRoute,
)

from .conftest import PROJECT, PubSubAdmin, attributes, data, unique

pytestmark = pytest.mark.pubsub


def provider(host: str, subscription: str, **options: object) -> PubSubProvider:
    return PubSubProvider(
        subscription, project=PROJECT, emulator_host=host, poll_timeout=1, **options
    )


async def fetch_one(p: PubSubProvider, timeout: float = 10) -> Delivery:
    async with asyncio.timeout(timeout):
        while True:
            got = await p.fetch(1)
            if got:
                return got[0]


async def test_a_missing_subscription_says_how_to_create_it(pubsub_emulator: str) -> None:
    name = unique()
    p = provider(pubsub_emulator, name)
    with pytest.raises(ConfigurationError, match="gcloud pubsub subscriptions create") as caught:
        await p.start(1)
    assert "create=True" in str(caught.value)
    with pytest.raises(ConfigurationError, match="not found"):
        await p.start(1)  # the same again: nothing half-open
    await p.close()
    with pytest.raises(ConfigurationError, match="not found"):
        await provider(pubsub_emulator, name).verify()
    with pytest.raises(ConfigurationError, match="give topic"):
        await provider(pubsub_emulator, name, create=True).start(1)


async def test_a_missing_dead_letter_topic_is_said_at_start(
    admin: PubSubAdmin, pubsub_emulator: str
) -> None:
    queue = await admin.queue(dead_letters=False)
    p = provider(pubsub_emulator, queue, dead_letter_topic=unique("no-such-topic"))
    with pytest.raises(ConfigurationError, match="not found"):
        await p.start(1)
    await p.close()


async def test_create_makes_the_topic_the_subscription_and_the_dead_letters(
    admin: PubSubAdmin, pubsub_emulator: str
) -> None:
    name = unique()
    for path in (f"topics/{name}", f"topics/{name}-dead", f"subscriptions/{name}-dead"):
        admin.created.append(path)
    admin.created.append(f"subscriptions/{name}")
    p = provider(
        pubsub_emulator,
        name,
        create=True,
        topic=name,
        ack_deadline=15,
        message_ordering=True,
        dead_letter_topic=f"{name}-dead",
        max_delivery_attempts=6,
    )
    await p.start(5)
    try:
        assert p.lease_duration == 15
        assert p.capabilities.attempt_count and p.capabilities.dead_letter
        info = await admin.call("GET", f"subscriptions/{name}")
        assert info["enableMessageOrdering"] is True
        assert info["deadLetterPolicy"]["maxDeliveryAttempts"] == 6
        await admin.put(name, b'{"made": 1}', {"k": "v"})
        d = await fetch_one(p)
        assert d.body == b'{"made": 1}' and d.metadata["headers"] == {"k": "v"}
        assert d.attempt == 1 and d.metadata["topic"] == name
        await p.settle(d, REJECT("no good"))
        [dead] = await eventually(
            lambda: admin.pull(f"{name}-dead"), timeout=10, what="the dead letter"
        )
        assert data(dead) == b'{"made": 1}'
    finally:
        await p.close()
    # a second start finds what the first made
    again = provider(pubsub_emulator, name, create=True, topic=name)
    await again.start(1)
    await again.close()


async def test_a_dead_letter_carries_the_reason_origin_and_attributes(
    admin: PubSubAdmin, pubsub_emulator: str
) -> None:
    queue = await admin.queue()
    message_id = await admin.put(queue, b"bad", {"tenant": "acme"})
    p = provider(pubsub_emulator, queue, dead_letter_topic=f"{queue}-dead")
    await p.start(1)
    try:
        d = await fetch_one(p)
        await p.settle(d, REJECT("invalid order\nline two"))
        await p.settle(d, REJECT("again"))  # a settle sent twice publishes once
    finally:
        await p.close()
    [dead] = await eventually(lambda: admin.pull(f"{queue}-dead"), timeout=10, what="dead")
    assert data(dead) == b"bad"
    dead_attributes = attributes(dead)
    failed = {k: dead_attributes.pop(k) for k in (DEAD_FIRST_FAILURE, DEAD_LAST_FAILURE)}
    assert failed[DEAD_FIRST_FAILURE] == failed[DEAD_LAST_FAILURE]  # dead-lettered once
    assert datetime.fromisoformat(failed[DEAD_LAST_FAILURE]).tzinfo is not None
    assert dead_attributes == {
        "tenant": "acme",
        REJECT_REASON_ATTRIBUTE: "invalid order line two",
        REJECTED_FROM_ATTRIBUTE: f"projects/{PROJECT}/subscriptions/{queue}",
        ORIGINAL_MESSAGE_ID_ATTRIBUTE: message_id,
        DEAD_REASON: "invalid order line two",  # the keys every broker's dead letters carry
        DEAD_ATTEMPTS: "1",
        DEAD_ORIGIN: queue,
    }
    assert await admin.pull(queue) == []  # acknowledged
    assert await admin.pull(f"{queue}-dead") == []  # once


async def test_the_subscription_s_policy_forwards_a_message_released_too_often(
    admin: PubSubAdmin, pubsub_emulator: str
) -> None:
    # an unordered subscription: the emulator's ordered ones fail (500) when forwarding
    queue = await admin.queue(max_delivery_attempts=5)
    await admin.put(queue, b"again and again")
    p = provider(pubsub_emulator, queue)  # the dead-letter topic read from the policy
    await p.start(1)
    try:
        assert p.capabilities.dead_letter and p.capabilities.attempt_count
        attempts = []
        for _ in range(5):
            d = await fetch_one(p)
            attempts.append(d.attempt)
            await p.settle(d, RELEASE)
        assert attempts == [1, 2, 3, 4, 5]
    finally:
        await p.close()
    # the emulator forwards when the subscription is next pulled
    assert await admin.pull(queue) == []
    [dead] = await eventually(lambda: admin.pull(f"{queue}-dead"), timeout=10, what="forwarded")
    assert data(dead) == b"again and again"
    assert attributes(dead)["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"


async def test_ordering_keys_reach_the_deliveries_and_are_handled_in_order(
    admin: PubSubAdmin, pubsub_emulator: str
) -> None:
    queue = await admin.queue(ordering=True)
    for i in range(10):
        await admin.put(queue, f'{{"k": "a", "i": {i}}}'.encode(), key="a")
        await admin.put(queue, f'{{"k": "b", "i": {i}}}'.encode(), key="b")
    seen: dict[str, list[int]] = {"a": [], "b": []}
    done = asyncio.Event()

    async def handler(content: dict[str, object], metadata: dict[str, object]) -> bool:
        assert metadata["ordering_key"] == content["k"]
        seen[str(content["k"])].append(int(str(content["i"])))
        await asyncio.sleep(0.01)
        if sum(len(v) for v in seen.values()) == 20:
            done.set()
        return True

    route = PubSubRoute(
        queue, project=PROJECT, emulator_host=pubsub_emulator, handler=handler, max_concurrency=10
    )
    async with Manager([route]):
        async with asyncio.timeout(20):
            await done.wait()
    assert seen == {"a": list(range(10)), "b": list(range(10))}


async def test_an_extension_racing_a_release_does_not_hide_the_message_again(
    admin: PubSubAdmin, pubsub_emulator: str
) -> None:
    queue = await admin.queue(dead_letters=False, ack_deadline=60)
    await admin.put(queue, b"race")
    p = provider(pubsub_emulator, queue)
    await p.start(1)
    try:
        d = await fetch_one(p)
        await asyncio.gather(p.extend_leases([d], 60), p.settle(d, RELEASE))
        started = time.monotonic()
        again = await fetch_one(p, timeout=10)  # not after the 60 s extension
        assert again.body == b"race" and time.monotonic() - started < 5
        await p.extend_leases([d], 60)  # the released delivery's: ignored
        await p.settle(again, ACCEPT)
    finally:
        await p.close()


async def test_the_provider_never_holds_more_than_the_capacity(
    admin: PubSubAdmin, pubsub_emulator: str
) -> None:
    """Pulls take what is free (a small fetch: more than it asked, the rest buffered for
    the next one), never more than the capacity out and buffered together."""
    queue = await admin.queue(dead_letters=False, ack_deadline=60)
    await admin.put_many(queue, [b'{"n": %d}' % i for i in range(50)])
    p = provider(pubsub_emulator, queue)
    await p.start(10)
    try:
        first: list[Delivery] = []
        async with asyncio.timeout(10):
            while len(first) < 10:
                first.extend(await p.fetch(10 - len(first)))
        for d in first[:6]:
            await p.settle(d, ACCEPT)  # 4 out now, 6 free
        second = await p.fetch(2)
        assert len(second) == 2
        # 4 out + 2 handed out + what the pull took beyond them: 10 leased at most
        left = await admin.pull(queue, ack=False)
        assert len(left) == 50 - 6 - 10, len(left)
        third = await p.fetch(10)  # the buffered ones first
        assert len(third) == 4
    finally:
        await p.close()
    # close gives back only what it held unhanded (none now): the 10 handed out and not
    # settled stay leased (the dispatcher RELEASEs those before close)
    assert len(await admin.pull(queue, ack=False)) == 34
