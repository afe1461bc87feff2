"""Issue 11's proofs of ``loafer run --config`` and ``loafer check --config``, end to end
through the command (subprocesses) against the real brokers: one config file with a route
on each broker, ``--workers 3`` surviving a SIGKILLed worker, and ``check`` telling a good
config from each kind of bad one by exit code and message."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.loafer_cli.projects import (
    bodies,
    children,
    expected,
    handled,
    handled_by,
    toml_array,
    wait_for_ids,
    wait_until,
    write_project,
)
from tests.loafer_cli.runner import Service, loafer
from tests.loafer_rabbit.conftest import RabbitAdmin
from tests.loafer_sqs.conftest import REGION, MakeQueue, queue_counts, send_bodies

COUNT = 40
PREFIXES = ("rabbit", "amqp", "sqs", "memory")
#: a credential only the environment knows: it must never be printed
SECRET = "loafer-proof-secret-7d1c"

FOUR_BROKERS = textwrap.dedent(
    """
    [manager]
    shutdown_timeout = 10

    [[routes]]
    name = "orders"
    provider = "rabbit"
    queue = "${RABBIT_QUEUE}"
    handler = "handlers:handle"

    [routes.provider_options]
    url = "${RABBIT_URL}"

    [[routes]]
    name = "invoices"
    provider = "amqp"
    queue = "/amq/queue/${AMQP_QUEUE}"
    handler = "handlers:handle"

    [routes.provider_options]
    url = "${AMQP_URL}"

    [[routes]]
    name = "emails"
    provider = "sqs"
    queue = "${SQS_QUEUE}"
    handler = "handlers:handle"

    [routes.provider_options]
    endpoint_url = "${SQS_ENDPOINT}"
    region_name = "${SQS_REGION:-us-east-1}"
    aws_access_key_id = "${SQS_KEY_ID}"
    aws_secret_access_key = "${SQS_SECRET}"

    [[routes]]
    name = "greetings"
    provider = "memory"
    queue = "greetings"
    handler = "handlers:handle"
    translator = "loafer_core:TextTranslator"
    publish = PUBLISH
    """
).replace("PUBLISH", toml_array(bodies("memory", COUNT)))


async def _four_broker_project(
    tmp_path: Path,
    admin: RabbitAdmin,
    rabbit_url: str,
    amqp_url: str,
    sqs_endpoint: str,
    make_queue: MakeQueue,
) -> tuple[Path, dict[str, str], str, str, str]:
    """The project, its environment, and the RabbitMQ, AMQP 1.0 (a RabbitMQ queue) and
    SQS queues its routes consume (all three empty)."""
    rabbit_queue = await admin.declare()
    amqp_queue = await admin.declare()
    sqs_url = await make_queue()
    env = {
        "RABBIT_QUEUE": rabbit_queue,
        "RABBIT_URL": rabbit_url,
        "AMQP_QUEUE": amqp_queue,
        "AMQP_URL": amqp_url,
        "SQS_QUEUE": sqs_url,
        "SQS_ENDPOINT": sqs_endpoint,
        "SQS_REGION": REGION,
        "SQS_KEY_ID": "testing",
        "SQS_SECRET": SECRET,
    }
    return write_project(tmp_path, FOUR_BROKERS), env, rabbit_queue, amqp_queue, sqs_url


@pytest.mark.rabbit
@pytest.mark.amqp
@pytest.mark.sqs
async def test_run_a_config_with_a_route_on_each_broker_handles_all_and_drains(
    tmp_path: Path,
    admin: RabbitAdmin,
    rabbit_url: str,
    amqp_url: str,
    sqs_endpoint: str,
    sqs: Any,
    make_queue: MakeQueue,
) -> None:
    project, env, rabbit_queue, amqp_queue, sqs_url = await _four_broker_project(
        tmp_path, admin, rabbit_url, amqp_url, sqs_endpoint, make_queue
    )
    await admin.put_many(rabbit_queue, [body.encode() for body in bodies("rabbit", COUNT)])
    sent = loafer(
        "publish", "amqp", f"/amq/queue/{amqp_queue}", "-", "--url", amqp_url,
        stdin="\n".join(bodies("amqp", COUNT)) + "\n",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    await send_bodies(sqs, sqs_url, bodies("sqs", COUNT))
    assert await admin.count(rabbit_queue) == COUNT
    assert await admin.count(amqp_queue) == COUNT
    assert await queue_counts(sqs, sqs_url) == (COUNT, 0)

    service = Service(["--config", "loafer.toml"], cwd=project, env=env)
    try:
        service.wait_for("running 4 route(s)")
        # every id of every route (SQS on moto may hand one out twice: distinct ids)
        wait_for_ids(service, set().union(*(expected(p, COUNT) for p in PREFIXES)), timeout=90)
        assert service.stop() == 0, "\n".join(service.lines)
    finally:
        service.kill()
    seen = handled(service.lines)
    for prefix in PREFIXES:
        assert seen[prefix] == expected(prefix, COUNT), prefix
    assert any("drained; exiting" in line for line in service.lines)
    assert await admin.count(rabbit_queue) == 0
    assert await admin.count(amqp_queue) == 0
    assert await queue_counts(sqs, sqs_url) == (0, 0)
    assert not [line for line in service.lines if SECRET in line]


ONE_RABBIT_ROUTE = textwrap.dedent(
    """
    [manager]
    shutdown_timeout = 10

    [[routes]]
    name = "work"
    provider = "rabbit"
    queue = "${QUEUE}"
    handler = "handlers:handle"
    max_concurrency = 4

    [routes.provider_options]
    url = "${RABBIT_URL}"
    """
)


async def _consumers(admin: RabbitAdmin, queue: str) -> int:
    assert admin.connection is not None
    async with admin.connection.channel() as channel:
        declared = await channel.declare_queue(queue, passive=True, robust=False)
        return int(declared.declaration_result.consumer_count or 0)


async def _wait_consumers(admin: RabbitAdmin, queue: str, count: int, timeout: float) -> None:
    """Poll the broker until ``queue`` has ``count`` consumers (every worker subscribed)."""
    async with asyncio.timeout(timeout):
        while True:
            if await _consumers(admin, queue) == count:
                return
            await asyncio.sleep(0.1)  # polling the broker: nothing to await


@pytest.mark.rabbit
async def test_workers_3_from_a_config_survive_a_sigkilled_worker_mid_stream(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await admin.declare()
    project = write_project(tmp_path, ONE_RABBIT_ROUTE)
    env = {"QUEUE": queue, "RABBIT_URL": rabbit_url, "HANDLER_DELAY": "0.1"}
    service = Service(["--config", "loafer.toml", "--workers", "3"], cwd=project, env=env)
    parent = service.process.pid
    first, second = bodies("first", 600), bodies("second", 300)
    try:
        service.wait_for("worker 2 started")
        await _wait_consumers(admin, queue, 3, timeout=60)
        workers = children(parent)
        assert len(workers) == 3, workers
        await admin.put_many(queue, [body.encode() for body in first])

        # mid-stream: some handled, most not; kill a worker that is busy
        service.wait_for("handlers: handled ", count=60)
        busy = set(handled_by(service.lines)) & workers
        assert busy, service.lines
        victim = min(busy)
        os.kill(victim, signal.SIGKILL)
        assert await admin.count(queue) > 0  # the stream is still going

        service.wait_for(f"(pid {victim}) died unexpectedly")
        service.wait_for("restarting in")
        wait_until(
            lambda: len(children(parent)) == 3 and victim not in children(parent),
            "a third worker again, in place of the killed one",
            timeout=60,
        )
        [restarted] = children(parent) - workers
        await _wait_consumers(admin, queue, 3, timeout=60)
        await admin.put_many(queue, [body.encode() for body in second])

        wait_for_ids(service, expected("first", 600) | expected("second", 300), timeout=120)
        await admin.wait_count(queue, 0, timeout=30)
        assert service.stop() == 0, "\n".join(service.lines)
    finally:
        service.kill()
    by_pid = handled_by(service.lines)
    assert by_pid[victim], "the killed worker had handled nothing"
    assert by_pid[restarted], "the restarted worker handled nothing"
    assert set(by_pid) <= workers | {restarted}
    drained = [line for line in service.lines if "loafer_cli: drained; exiting" in line]
    assert len(drained) == 3, "\n".join(service.lines)  # the three live workers drained
    assert "supervisor exiting with code 0 (3 workers, 1 restarts" in service.lines[-1]
    assert await admin.count(queue) == 0
    assert await _consumers(admin, queue) == 0
