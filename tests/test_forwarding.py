"""Forwarding across brokers, proved against the real ones: SQS -> RabbitMQ, RabbitMQ ->
AMQP 1.0, AMQP 1.0 -> SQS, RabbitMQ -> Pub/Sub and Pub/Sub -> RabbitMQ, 2,000 messages
each, through a forwarding service (tests/forward_worker.py) SIGKILLed (a) after a
publish was sent and before its confirm, then (b) after a confirm and before the source
settlement, then run to the end: every id arrives at the target at least once; the
duplicates are counted and printed. With the Redis idempotency store, the message
redelivered after (b) is skipped. Then the target dropping its connections, and refusing
messages (no queue bound), mid-run: the source messages are retried and all arrive.

moto's SQS server slows down with its backlog, so the source is fed while the target is
drained, a bounded window ahead (no more than WINDOW messages unforwarded).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from loafer_core import ACCEPT, Manager, Outcome, Route
from loafer_core.forward import Publish
from loafer_core.middleware import Process
from loafer_core.outcome import OutcomeKind
from loafer_core.provider import Delivery
from loafer_rabbit import RabbitProvider, RabbitPublisher
from tests._process import ROOT, Child, Spawn, python, python_env
from tests.forward_worker import ID, make_provider, make_publisher
from tests.loafer_rabbit.conftest import _run_ctl, rabbitmqctl_available, retry_tiers

pytestmark = [pytest.mark.rabbit, pytest.mark.amqp, pytest.mark.sqs]

N = 2000
KILL_AT = 300  # the 300th publish (a), the 300th confirmed message (b)
WINDOW = 300  # messages fed ahead of the target; 100 with moto (slow with a backlog)
RESULTS = Path(os.environ.get("LOAFER_FORWARD_RESULTS", "/tmp/loafer-forwarding-results.jsonl"))


def _local_rabbitmqctl() -> bool:
    """rabbitmqctl talks to the broker under test (not to an address given from outside)."""
    return rabbitmqctl_available() and not (
        os.environ.get("LOAFER_TEST_RABBIT_URL") or os.environ.get("LOAFER_TEST_AMQP_URL")
    )


PUBSUB_PROJECT = "loafer-test"


async def _pubsub(host: str, method: str, path: str, body: Any) -> Any:
    """One call of the Pub/Sub emulator's REST API (set-up and inspection)."""
    import aiohttp

    url = f"http://{host}/v1/projects/{PUBSUB_PROJECT}/{path}"
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as r:
        return await r.json(content_type=None) or {}


class Queues:
    """Creates unique queues on the brokers, deletes them at the end."""

    def __init__(
        self, rabbit: str, amqp: str, sqs: dict[str, Any], request: pytest.FixtureRequest
    ) -> None:
        self.rabbit, self.amqp, self.sqs = rabbit, amqp, sqs
        self.request = request
        self.rabbit_queues: list[str] = []
        self.sqs_urls: list[str] = []
        self.pubsub: list[tuple[str, str]] = []

    async def make(self, kind: str) -> dict[str, Any]:
        name = f"loafer-fwd-{kind}-{uuid.uuid4().hex[:10]}"
        if kind == "pubsub":  # a topic and its subscription of the same name
            host = self.request.getfixturevalue("pubsub_emulator")
            await _pubsub(host, "PUT", f"topics/{name}", {})
            topic = f"projects/{PUBSUB_PROJECT}/topics/{name}"
            await _pubsub(
                host, "PUT", f"subscriptions/{name}", {"topic": topic, "ackDeadlineSeconds": 3}
            )
            self.pubsub.append((host, name))
            return {"kind": kind, "queue": name, "project": PUBSUB_PROJECT, "host": host}
        if kind in ("rabbit", "amqp"):
            connection = await aio_pika.connect(self.rabbit)
            try:
                channel = await connection.channel()
                await channel.declare_queue(name, durable=True)
            finally:
                await connection.close()
            self.rabbit_queues.append(name)
            url = self.rabbit if kind == "rabbit" else self.amqp
            return {"kind": kind, "queue": name, "url": url}
        from aiobotocore.session import get_session

        async with get_session().create_client("sqs", **self.sqs) as client:
            response = await client.create_queue(
                QueueName=name, Attributes={"VisibilityTimeout": "3"}
            )
        self.sqs_urls.append(response["QueueUrl"])
        return {"kind": "sqs", "queue": response["QueueUrl"], "client": self.sqs}

    async def depth(self, spec: dict[str, Any]) -> int:
        """Messages in the queue, ready or (SQS) in flight (Pub/Sub: ready ones, pulled
        and nacked back at once: the REST API has no count)."""
        if spec["kind"] == "pubsub":
            path = f"subscriptions/{spec['queue']}"
            got = await _pubsub(
                spec["host"],
                "POST",
                f"{path}:pull",
                {"maxMessages": 1000, "returnImmediately": True},
            )
            ids = [m["ackId"] for m in got.get("receivedMessages") or []]
            if ids:
                body = {"ackIds": ids, "ackDeadlineSeconds": 0}
                await _pubsub(spec["host"], "POST", f"{path}:modifyAckDeadline", body)
            return len(ids)
        if spec["kind"] == "sqs":
            from aiobotocore.session import get_session

            async with get_session().create_client("sqs", **self.sqs) as client:
                attributes = (
                    await client.get_queue_attributes(
                        QueueUrl=spec["queue"], AttributeNames=["All"]
                    )
                )["Attributes"]
            return sum(
                int(attributes[name])
                for name in (
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                )
            )
        # RabbitMQ: the queue and its retry queues (a RETRY(delay) waits in one of them,
        # out of the queue's count); with the local rabbitmqctl, the messages a consumer
        # holds unacknowledged too (the AMQP 1.0 provider holds a delayed retry itself)
        names = [spec["queue"], *retry_tiers(f"{spec['queue']}.retry")]
        if _local_rabbitmqctl():
            listed = await asyncio.to_thread(
                _run_ctl, "list_queues", "name", "messages", "-q", "--no-table-headers"
            )
            wanted = set(names)
            return sum(
                int(count)
                for name, _, count in (line.rpartition("\t") for line in listed.splitlines())
                if name in wanted
            )
        connection = await aio_pika.connect(self.rabbit)
        total = 0
        try:
            for name in names:
                channel = await connection.channel()
                try:
                    queue = await channel.declare_queue(name, passive=True)
                except aio_pika.exceptions.ChannelClosed:  # not declared (404)
                    continue
                total += int(queue.declaration_result.message_count or 0)
                await channel.close()
        finally:
            await connection.close()
        return total

    async def cleanup(self) -> None:
        for host, name in self.pubsub:
            for path in (f"subscriptions/{name}", f"topics/{name}"):
                with contextlib.suppress(Exception):
                    await _pubsub(host, "DELETE", path, None)
        if self.rabbit_queues:
            connection = await aio_pika.connect(self.rabbit)
            try:
                channel = await connection.channel()
                for name in self.rabbit_queues:
                    for each in (name, *retry_tiers(f"{name}.retry")):
                        if channel.is_closed:  # a delete refused closes the channel
                            channel = await connection.channel()
                        with contextlib.suppress(Exception):
                            await channel.queue_delete(each)
            finally:
                await connection.close()
        if self.sqs_urls:
            from aiobotocore.session import get_session

            async with get_session().create_client("sqs", **self.sqs) as client:
                for url in self.sqs_urls:
                    with contextlib.suppress(Exception):
                        await client.delete_queue(QueueUrl=url)


@pytest.fixture
async def queues(
    rabbit_url: str,
    amqp_url: str,
    client_options: dict[str, Any],
    request: pytest.FixtureRequest,
) -> AsyncIterator[Queues]:
    helper = Queues(rabbit_url, amqp_url, client_options, request)
    try:
        yield helper
    finally:
        await helper.cleanup()


class Pump:
    """Feeds the source (``WINDOW`` ahead of what reached the target) and drains the
    target, counting each id's arrivals."""

    def __init__(self, source: dict[str, Any], target: dict[str, Any]) -> None:
        self.source, self.target = source, target
        self.window = 100 if "sqs" in (source["kind"], target["kind"]) else WINDOW
        self.counts: collections.Counter[str] = collections.Counter()
        self.fed = 0
        self.last_arrival = time.monotonic()
        self._progress = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Pump:
        self._tasks = [
            asyncio.create_task(self._feed(), name="feed"),
            asyncio.create_task(self._drain(), name="drain"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                raise result

    def check(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _feed(self) -> None:
        publisher = make_publisher(self.source)
        async with publisher:
            while self.fed < N:
                while self.fed - len(self.counts) >= self.window:
                    self._progress.clear()
                    await self._progress.wait()
                chunk = range(self.fed, min(N, self.fed + 50))
                await asyncio.gather(
                    *(publisher.publish({"id": i}, headers={ID: str(i)}) for i in chunk)
                )
                self.fed = chunk[-1] + 1

    async def _drain(self) -> None:
        provider = make_provider(self.target)
        await provider.start(100)
        try:
            while True:
                deliveries = await provider.fetch(100)
                for delivery in deliveries:
                    self.counts[str(delivery.metadata["headers"][ID])] += 1
                    await provider.settle(delivery, ACCEPT)
                if deliveries:
                    self.last_arrival = time.monotonic()
                    self._progress.set()
        finally:
            await asyncio.shield(provider.close())

    async def wait_for(
        self,
        condition: Any,
        timeout: float,
        what: str,
        state: Any = None,
        *,
        stall: float | None = None,
    ) -> None:
        """Poll ``condition`` until true; fail after ``timeout`` seconds, or sooner when
        ``stall`` is given and nothing arrived at the target for that long (moto under
        load can be slow without being stuck: progress is what tells the two apart)."""
        began = time.monotonic()
        why = f"not within {timeout}s"
        try:
            async with asyncio.timeout(timeout):
                while not await condition():
                    self.check()
                    quiet = time.monotonic() - max(self.last_arrival, began)
                    if stall is not None and quiet > stall:
                        why = f"nothing arrived for {stall}s"
                        raise TimeoutError
                    await asyncio.sleep(0.5)  # polling the brokers' queue depths
        except TimeoutError:
            missing = sorted(set(map(str, range(N))) - set(self.counts), key=int)
            raise AssertionError(
                f"{what}: {why} ({round(time.monotonic() - began)}s); {len(self.counts)} ids "
                f"arrived, missing {missing[:20]}{'...' if len(missing) > 20 else ''}, last "
                f"arrival {time.monotonic() - self.last_arrival:.1f}s ago, fed {self.fed}"
                + ("" if state is None else f", {await state()}")
            ) from None
        self.check()


def run_child(spawn: Spawn, config: dict[str, Any]) -> Child:
    """``tests/forward_worker.py`` with ``config``, in a child process."""
    command = python("-m", "tests.forward_worker", json.dumps(config))
    return spawn(command, cwd=ROOT, env=python_env(), name="forward_worker")


def statuses(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def prove(
    queues: Queues,
    spawn: Spawn,
    tmp_path: Path,
    source_kind: str,
    target_kind: str,
    *,
    redis: str | None = None,
) -> dict[str, Any]:
    """Run the three phases; return the figures (asserting what must hold)."""
    began = time.monotonic()
    source = await queues.make(source_kind)
    target = await queues.make(target_kind)
    status = tmp_path / "status.jsonl"
    base: dict[str, Any] = {"source": source, "target": target, "status": str(status)}
    if redis:
        base.update(redis=redis, prefix=f"loafer-fwd-{uuid.uuid4().hex[:10]}:")
    if target_kind == "sqs":
        base["a_wait"] = 0.03  # the SQS publisher lingers 20 ms to fill a batch
    async with Pump(source, target) as pump:
        for point in ("a", "b"):
            killed = run_child(spawn, {**base, "kill": {"point": point, "at": KILL_AT}})

            def exited(child: Child = killed) -> bool:
                pump.check()
                return child.returncode is not None

            await killed.until(exited, 180, f"the worker killed at ({point})", interval=0.5)
            assert killed.returncode == -signal.SIGKILL, killed.describe()
        child = run_child(spawn, base)
        try:

            async def finished() -> bool:
                return (
                    len(pump.counts) == N
                    and time.monotonic() - pump.last_arrival > 1.5
                    and await queues.depth(source) == 0
                )

            async def depths() -> str:
                return (
                    f"source depth {await queues.depth(source)}, target depth "
                    f"{await queues.depth(target)}, worker exit code {child.returncode}"
                )

            await pump.wait_for(finished, 600, "every id at the target", depths, stall=90)
            assert await child.aterminate(60) == 0, child.describe()
        finally:
            child.close()

        async def target_empty() -> bool:
            return await queues.depth(target) == 0

        await pump.wait_for(target_empty, 60, "the target drained")
    records = statuses(status)
    kills = {r["point"]: r for r in records if r["point"] in ("a", "b")}
    ended = [r for r in records if r["point"] == "exit"]
    assert set(kills) == {"a", "b"} and len(ended) == 1, records
    counts = pump.counts
    assert set(counts) == {str(i) for i in range(N)}  # none lost
    assert await queues.depth(source) == 0  # every source message settled
    figures = {
        "pair": f"{source_kind}->{target_kind}",
        "idempotency": bool(redis),
        "messages": N,
        "arrivals": sum(counts.values()),
        "duplicates": sum(counts.values()) - N,
        "ids_duplicated": sum(1 for c in counts.values() if c > 1),
        "killed_a": kills["a"],
        "arrivals_of_a": counts[kills["a"]["id"]],
        "killed_b": kills["b"],
        "arrivals_of_b": counts[kills["b"]["id"]],
        "skipped_after_restart": ended[0]["skipped"],
        "seconds": round(time.monotonic() - began, 1),
    }
    print("forwarding proof:", json.dumps(figures))
    record(figures)
    return figures


def record(figures: dict[str, Any]) -> None:
    """Append the figures to RESULTS (for the report)."""
    with RESULTS.open("a") as out:
        out.write(json.dumps(figures) + "\n")


@pytest.mark.parametrize(
    ("source_kind", "target_kind"),
    [
        # moto is slow: 41 s to 89 s seen here (shared 2-core machine); the others ~25 s, ~10 s
        pytest.param("sqs", "rabbit", id="sqs-to-rabbit", marks=pytest.mark.slow),
        pytest.param("rabbit", "amqp", id="rabbit-to-amqp"),
        # serial: beside other tests on 3 xdist workers this proof twice found 3 and 9
        # consecutive ids missing at the target (source and target empty, the worker
        # still up), and passed every time alone: under investigation (issue 20's note)
        pytest.param("amqp", "sqs", id="amqp-to-sqs", marks=[pytest.mark.slow, pytest.mark.serial]),
        pytest.param("rabbit", "pubsub", id="rabbit-to-pubsub", marks=pytest.mark.pubsub),
        pytest.param("pubsub", "rabbit", id="pubsub-to-rabbit", marks=pytest.mark.pubsub),
    ],
)
async def test_every_id_arrives_across_kills(
    queues: Queues, spawn: Spawn, tmp_path: Path, source_kind: str, target_kind: str
) -> None:
    figures = await prove(queues, spawn, tmp_path, source_kind, target_kind)
    # killed after the confirm, before the settle: redelivered, so forwarded again
    assert figures["arrivals_of_b"] >= 2
    assert figures["arrivals_of_a"] >= 1


@pytest.mark.redis
async def test_idempotency_skips_the_duplicate_of_a_kill_after_confirm(
    queues: Queues,
    spawn: Spawn,
    tmp_path: Path,
    redis_url: str,
) -> None:
    figures = await prove(queues, spawn, tmp_path, "rabbit", "amqp", redis=redis_url)
    # its key was marked before the kill: the redelivery is skipped, not forwarded again
    assert figures["arrivals_of_b"] == 1
    assert figures["skipped_after_restart"] >= 1


# -- the target dropping its connections, or refusing, mid-run ------------------------------


class Proxy:
    """A TCP proxy to RabbitMQ that can drop every connection and refuse new ones."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def drop(self) -> None:
        """Close the listener (connections refused) and abort every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def stop(self) -> None:
        await self.drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._transports.update({writer.transport, up_writer.transport})
        for pipe in (self._pipe(reader, up_writer), self._pipe(up_reader, writer)):
            task = asyncio.create_task(pipe)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


async def _feed_rabbit(url: str, queue: str, count: int) -> None:
    async with RabbitPublisher(url, routing_key=queue) as publisher:
        for start in range(0, count, 200):
            await asyncio.gather(
                *(
                    publisher.publish({"id": i}, headers={ID: str(i)})
                    for i in range(start, min(count, start + 200))
                )
            )


def _retry_counter(
    counts: collections.Counter[OutcomeKind], retries: int = 0, enough: asyncio.Event | None = None
) -> Any:
    """Middleware counting outcomes; sets ``enough`` once ``retries`` RETRYs were seen."""

    async def middleware(delivery: Delivery, route: Route, call_next: Process) -> Outcome:
        outcome = await call_next(delivery)
        counts[outcome.kind] += 1
        if enough is not None and counts[OutcomeKind.RETRY] >= retries:
            enough.set()
        return outcome

    return middleware


async def test_the_target_dropping_its_connections_mid_run_loses_nothing(
    queues: Queues,
    rabbit_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RabbitMQ -> RabbitMQ through a proxy that drops the target's connections (and
    refuses new ones for a while) after 500 messages arrived."""
    from urllib.parse import urlsplit

    source = await queues.make("rabbit")
    target_queue = await queues.make("rabbit")
    parts = urlsplit(rabbit_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5672))
    await proxy.start()
    proxied = rabbit_url.replace(
        parts.netloc, f"{parts.username}:{parts.password}@127.0.0.1:{proxy.port}"
    )
    await _feed_rabbit(rabbit_url, source["queue"], N)
    outcomes: collections.Counter[OutcomeKind] = collections.Counter()
    retried = asyncio.Event()
    publisher = RabbitPublisher(proxied, routing_key=target_queue["queue"], timeout=5)
    route = Route(
        RabbitProvider(source["queue"], url=rabbit_url),
        lambda content, metadata: Publish(content, headers={ID: str(content["id"])}),
        publish_to=publisher,
        middleware=[_retry_counter(outcomes, 20, retried)],
        max_concurrency=20,
        retry=None,
    )
    pump = Pump(source, target_queue)
    pump.fed = N  # fed already
    try:
        async with Manager([route]), pump:

            async def half_way() -> bool:
                return len(pump.counts) >= 500

            await pump.wait_for(half_way, 60, "500 forwarded")
            await proxy.drop()
            await asyncio.wait_for(retried.wait(), 30)  # the source messages are retried
            await proxy.start()  # the target is back, on the same port

            async def done() -> bool:
                return len(pump.counts) == N and await queues.depth(source) == 0

            await pump.wait_for(done, 120, "every id at the target")
    finally:
        await proxy.stop()
    assert set(pump.counts) == {str(i) for i in range(N)}
    assert outcomes[OutcomeKind.RETRY] >= 20 and outcomes[OutcomeKind.ACCEPT] >= N
    print(
        "connection dropped: retries",
        outcomes[OutcomeKind.RETRY],
        "duplicates",
        sum(pump.counts.values()) - N,
    )


async def test_a_target_refusing_messages_retries_them_until_it_takes_them(
    queues: Queues,
    rabbit_url: str,
) -> None:
    """Publishing (mandatory) to a queue that does not exist yet: returned, so RETRY; once
    the queue is declared, every message arrives."""
    source = await queues.make("rabbit")
    missing = f"loafer-fwd-later-{uuid.uuid4().hex[:10]}"
    await _feed_rabbit(rabbit_url, source["queue"], 200)
    outcomes: collections.Counter[OutcomeKind] = collections.Counter()
    enough = asyncio.Event()
    route = Route(
        RabbitProvider(source["queue"], url=rabbit_url),
        lambda content, metadata: Publish(content, headers={ID: str(content["id"])}),
        publish_to=RabbitPublisher(rabbit_url, routing_key=missing),
        middleware=[_retry_counter(outcomes, 200, enough)],
        retry=None,
    )
    async with Manager([route]):
        await asyncio.wait_for(enough.wait(), 30)
        assert outcomes[OutcomeKind.ACCEPT] == 0
        target = {"kind": "rabbit", "queue": missing, "url": rabbit_url}
        connection = await aio_pika.connect(rabbit_url)
        try:
            channel = await connection.channel()
            await channel.declare_queue(missing, durable=True)
        finally:
            await connection.close()
        queues.rabbit_queues.append(missing)
        pump = Pump(source, target)
        pump.fed = N
        async with pump:

            async def done() -> bool:
                return len(pump.counts) == 200 and await queues.depth(source) == 0

            await pump.wait_for(done, 60, "every message at the target")
    assert set(pump.counts) == {str(i) for i in range(200)}
    assert outcomes[OutcomeKind.ACCEPT] >= 200


# -- the documented example -----------------------------------------------------------------


async def test_the_example_forwards_sqs_to_rabbit(
    queues: Queues,
    spawn: Spawn,
    rabbit_url: str,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """examples/forward_sqs_to_rabbit.py, run as documented against moto and RabbitMQ."""
    source = await queues.make("sqs")
    target = await queues.make("rabbit")
    orders = [{"id": i, "items": [f"sku-{i}"]} for i in range(20)]
    async with make_publisher(source) as publisher:
        await asyncio.gather(*(publisher.publish(order) for order in orders))
    env = {
        **aws_env,
        "ORDERS_QUEUE": source["queue"],
        "RABBIT_URL": rabbit_url,
        "RABBIT_QUEUE": target["queue"],
    }
    child = spawn(
        python(ROOT / "examples" / "forward_sqs_to_rabbit.py"), cwd=ROOT, env=python_env(env)
    )

    async def forwarded() -> bool:
        return await queues.depth(target) >= len(orders) and not await queues.depth(source)

    await child.until(forwarded, 60, "every order forwarded", interval=0.3)
    assert await child.aterminate(30) == 0, child.describe()
    connection = await aio_pika.connect(rabbit_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(target["queue"], passive=True)
        received = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            received.append((json.loads(message.body), message.headers, message.message_id))
    finally:
        await connection.close()
    assert sorted(received, key=lambda r: r[0]["order"]) == [
        ({"order": i, "items": [f"sku-{i}"]}, {"order-id": str(i)}, f"order-{i}") for i in range(20)
    ]
    assert "manager stopped cleanly" in child.output
