"""AMQPRoute under a Manager on RabbitMQ's AMQP 1.0 plugin: the credit bound, bad input,
options; plus the translator and URL masking (no broker needed for those)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from loafer_amqp import AMQPProvider, AMQPPublisher, AMQPRoute, AMQPTranslator
from loafer_amqp._bridge import ConnectionSettings, mask_url
from loafer_core import Manager
from loafer_core.errors import ConfigurationError, TranslationError
from loafer_core.outcome import ACCEPT, Outcome

from .conftest import Broker, rabbitmqctl

pytestmark = pytest.mark.amqp


async def test_credit_bound_with_blocking_handlers(
    amqp_url: str, broker: Broker, queue: str
) -> None:
    """max_concurrency=5 and handlers that block: never more than 5 unsettled, counted on
    our side (handlers running, deliveries the reactor holds) and at the broker."""
    total, limit = 40, 5
    address = f"/amq/queue/{queue}"
    async with AMQPPublisher(amqp_url, address) as publisher:
        await asyncio.gather(*(publisher.publish({"i": i}) for i in range(total)))
    running = peak = 0
    full = asyncio.Event()
    gate = asyncio.Event()
    done: set[int] = set()
    all_done = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == limit:
            full.set()
        try:
            await gate.wait()
        finally:
            running -= 1
        done.add(content["i"])
        if len(done) == total:
            all_done.set()
        return True

    route = AMQPRoute(address, url=amqp_url, handler=handler, max_concurrency=limit)
    async with Manager([route]) as manager:
        await manager.wait_started()
        await asyncio.wait_for(full.wait(), 15)
        client = route.provider._client
        assert client is not None
        for _ in range(5):  # a second's worth of chances for an extra delivery to arrive
            await asyncio.sleep(0.2)
            assert running == limit
            assert len(client._unsettled) == limit  # the reactor holds exactly 5 ...
            assert await broker.depth(queue) == total - limit  # ... and so does the broker
        assert manager._dispatchers[0].unsettled == limit
        gate.set()
        await asyncio.wait_for(all_done.wait(), 30)
    assert peak == limit
    await broker.wait_depth(queue, 0)


def broker_unacked(queue: str) -> int:
    """The broker's own count of deliveries of ``queue`` awaiting an outcome (~1 s)."""
    out = rabbitmqctl(
        "list_queues", "name", "messages_unacknowledged", "-q", "--no-table-headers", timeout=30
    )
    for line in out.splitlines():
        name, _, count = line.strip().rpartition("\t")
        if name == queue:
            return int(count)
    raise AssertionError(f"queue {queue} not listed by rabbitmqctl: {out!r}")


async def publish_numbered(amqp_url: str, address: str, total: int) -> None:
    async with AMQPPublisher(amqp_url, address) as publisher:
        for start in range(0, total, 1000):
            await publisher.publish_many({"i": i} for i in range(start, min(start + 1000, total)))


async def test_broker_never_holds_more_than_the_capacity_with_a_backlog(
    amqp_url: str, broker: Broker, queue: str
) -> None:
    """Thousands queued, max_concurrency=10, handlers taking 10 ms: RabbitMQ 3.10 counts
    at most 10 unacknowledged at any poll (it counted thousands when credit was topped up
    as deliveries settled), and no delivery ever arrives beyond the credit."""
    total, limit = 5000, 10
    address = f"/amq/queue/{queue}"
    await publish_numbered(amqp_url, address, total)
    done = 0
    all_done = asyncio.Event()
    held_peak = 0
    route: AMQPRoute | None = None

    async def handler(content: Any, metadata: Any) -> bool:
        nonlocal done, held_peak
        assert route is not None and route.provider._client is not None
        held_peak = max(held_peak, len(route.provider._client._unsettled))
        await asyncio.sleep(0.01)  # the work
        done += 1
        if done == total:
            all_done.set()
        return True

    route = AMQPRoute(address, url=amqp_url, handler=handler, max_concurrency=limit)
    seen: list[int] = []
    async with Manager([route]) as manager:
        await manager.wait_started()
        for _ in range(4):  # at most ~1,000 msg/s: the backlog lasts 5 s, each poll ~1 s
            if all_done.is_set():
                break
            seen.append(await asyncio.to_thread(broker_unacked, queue))
        busy_polls = len(seen)
        await asyncio.wait_for(all_done.wait(), 60)
        beyond = route.provider.deliveries_beyond_credit
    assert busy_polls >= 2, "the backlog was gone before the broker could be polled"
    assert max(seen) <= limit, f"unacknowledged at the broker: {seen}"
    assert held_peak <= limit
    assert beyond == 0
    await broker.wait_depth(queue, 0)


async def test_deliveries_beyond_the_credit_are_counted_and_warned_about(
    amqp_url: str,
    broker: Broker,
    queue: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guard against a broker that sends beyond the credit, on the real thing:
    topping credit up one delivery at a time as they settle (what the provider must not
    do) makes RabbitMQ 3.10 over-deliver; the guard counts it and warns once."""
    from loafer_amqp.provider import _ReceiverClient

    def top_up_as_they_settle(self: _ReceiverClient) -> None:
        link = self._receiver
        if self._closing or link is None or not self.all_links_attached():
            return
        want = self.capacity - len(self._unsettled) - link.credit  # the provider's old way
        if want > 0:
            link.flow(want)

    monkeypatch.setattr(_ReceiverClient, "replenish", top_up_as_they_settle)
    caplog.set_level(logging.WARNING, logger="loafer_amqp")
    total, limit = 2000, 10
    address = f"/amq/queue/{queue}"
    beyond = 0
    done = 0
    all_done = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        nonlocal done
        await asyncio.sleep(0.005)
        done += 1
        if done == total:
            all_done.set()
        return True

    # RabbitMQ's miscount is a race (a top-up arriving while deliveries are in flight
    # inside the broker): on a loaded machine a round can pass without it, so up to three
    for _ in range(3):
        await publish_numbered(amqp_url, address, total)
        done = 0
        all_done.clear()
        route = AMQPRoute(address, url=amqp_url, handler=handler, max_concurrency=limit)
        async with Manager([route]):
            await asyncio.wait_for(all_done.wait(), 60)
            beyond = route.provider.deliveries_beyond_credit
        await broker.wait_depth(queue, 0)
        if beyond:
            break
    assert beyond > 0, "RabbitMQ did not over-deliver in three rounds"
    warnings = [r for r in caplog.records if "beyond the credit" in r.getMessage()]
    assert len(warnings) == 1  # bounded: at most one a minute


async def test_bad_input_reaches_the_error_handler_and_good_input_the_handler(
    amqp_url: str, broker: Broker, queue: str
) -> None:
    address = f"/amq/queue/{queue}"
    big = b"y" * (5 * 1024 * 1024)
    async with AMQPPublisher(amqp_url, address) as publisher:
        await publisher.publish(b"\xff\xfe not utf-8 \xc3\x28")  # bad: not UTF-8
        await publisher.publish(b"\x00\x01\x02binary")  # bad: binary
        await publisher.publish(b'{"unterminated": ')  # bad: invalid JSON
        await publisher.publish(big)  # bad: 5 MB, not JSON
        await publisher.publish(b"")  # bad: empty
        await publisher.publish({"amqp": "map"}, body_section="value")  # good: AMQP map
        await publisher.publish([1, 2, 3], body_section="sequence")  # good: AMQP sequence
        await publisher.publish('{"json": "in a string value"}', body_section="value")  # good
        await publisher.publish(b'{"good": true}')  # good
    errors: list[tuple[type[BaseException], Any]] = []
    handled: list[Any] = []
    finished = asyncio.Event()

    def check() -> None:
        if len(errors) == 5 and len(handled) == 4:
            finished.set()

    async def handler(content: Any, metadata: Any) -> bool:
        handled.append(content)
        check()
        return True

    async def error_handler(exc_type: Any, exc: Any, message: Any) -> Outcome:
        errors.append((exc_type, message))
        check()
        return ACCEPT

    route = AMQPRoute(
        address, url=amqp_url, handler=handler, error_handler=error_handler, max_concurrency=3
    )
    async with Manager([route]):
        await asyncio.wait_for(finished.wait(), 30)
    assert sorted(map(repr, handled)) == sorted(
        map(repr, [{"amqp": "map"}, [1, 2, 3], {"json": "in a string value"}, {"good": True}])
    )
    assert all(issubclass(t, ValueError) for t, _ in errors), errors
    assert any(m == big for _, m in errors)  # the error handler sees the raw body
    await broker.wait_depth(queue, 0)
    assert await broker.depth(f"{queue}.dlq") == 0


def test_route_splits_provider_and_route_options() -> None:
    route = AMQPRoute(
        "/amq/queue/orders",
        url="amqp://guest:pw@127.0.0.1:5672",
        handler=lambda content, metadata: True,
        broker="rabbitmq",
        max_concurrency=7,
        fetch_wait=2.0,
    )
    assert isinstance(route.provider, AMQPProvider)
    assert route.provider.address == "/amq/queue/orders"
    assert route.provider.broker == "rabbitmq"
    assert route.max_concurrency == 7
    assert route.name == "amqp:/amq/queue/orders"
    assert "pw" not in repr(route.provider)
    with pytest.raises(ConfigurationError, match="unknown option"):
        AMQPRoute("/amq/queue/x", handler=lambda c, m: True, provider_options={"nope": 1})
    with pytest.raises(ConfigurationError, match="both"):
        AMQPRoute(
            "/amq/queue/x",
            handler=lambda c, m: True,
            broker="generic",
            provider_options={"broker": "rabbitmq"},
        )


def test_translator() -> None:
    t = AMQPTranslator()
    assert t.translate(b'{"a": 1}') == {"content": {"a": 1}, "metadata": {}}
    assert t.translate('{"a": 2}')["content"] == {"a": 2}
    assert t.translate({"m": [1]})["content"] == {"m": [1]}
    assert t.translate([1, 2])["content"] == [1, 2]
    for bad in (None, b"\xff", b"nope", "nope"):
        with pytest.raises(TranslationError):
            t.translate(bad)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://u:secret@h:5672", "amqp://u:******@h:5672"),
        ("amqps://u@h", "amqps://u@h"),
        ("amqp://h:5672", "amqp://h:5672"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_settings_hide_the_password() -> None:
    settings = ConnectionSettings.from_url("amqp://me:p%40ss@broker:5673")
    assert settings.user == "me"
    assert settings.password == "p@ss"
    assert settings.port == 5673
    assert "p@ss" not in repr(settings)
    assert settings.display_url == "amqp://me:******@broker:5673"
    assert settings.safe_url == "amqp://broker:5673"
    assert settings.mechanisms() == "PLAIN"
    assert ConnectionSettings.from_url("amqp://broker").mechanisms() == "ANONYMOUS"


def test_tls_options_are_checked_up_front() -> None:
    assert AMQPProvider("amqps://h", "q", ssl_verify=False)._connection.ssl_domain() is not None
    with pytest.raises(ConfigurationError, match="TLS"):
        AMQPProvider("amqps://h", "q", ssl_ca="/nonexistent/ca.pem")
    with pytest.raises(ConfigurationError, match="amqps"):
        AMQPProvider("amqp://h", "q", ssl_ca="/nonexistent/ca.pem")
    with pytest.raises(ConfigurationError, match="ssl_key"):
        AMQPProvider("amqps://h", "q", ssl_cert="/c.pem")


def test_registered_as_the_amqp_entry_point() -> None:
    from loafer_core.plugins import load_provider

    assert load_provider("amqp") is AMQPProvider


def test_importing_loafer_core_does_not_import_proton() -> None:
    import subprocess
    import sys

    code = "import sys, loafer_core; assert 'proton' not in sys.modules, 'proton imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_stop_fetching_releases_the_buffer_at_once(
    amqp_url: str, broker: Broker, queue: str
) -> None:
    """Drainable: as a drain begins, buffered deliveries go back to the queue at once and
    no more credit is granted; the one being handled stays with us."""
    await broker.put_many(queue, [f'{{"i": {i}}}'.encode() for i in range(8)])
    provider = AMQPProvider(url=amqp_url, address=f"/amq/queue/{queue}")
    await provider.start(5)
    try:
        held: list[Any] = []
        async with asyncio.timeout(10):
            while len(held) < 1:
                held.extend(await provider.fetch(1))
            while len(provider._buffer) < 4:  # noqa: ASYNC110 - the credit of 5 brings 4 more
                await asyncio.sleep(0.02)
        assert await broker.wait_depth(queue, 3) == 3
        await provider.stop_fetching()
        # 3 never sent + 4 released; the held one is still ours
        assert await broker.wait_depth(queue, 7) == 7
        await provider.settle(held[0], ACCEPT)
        await asyncio.sleep(0.3)  # no credit: nothing more may arrive meanwhile
        assert await broker.depth(queue) == 7 and not provider._buffer
        # a later fetch grants credit again
        async with asyncio.timeout(10):
            again: list[Any] = []
            while not again:
                again.extend(await provider.fetch(5))
        for d in again:
            await provider.settle(d, ACCEPT)
    finally:
        await provider.close()
