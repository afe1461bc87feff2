"""Issue 11's proofs of ``loafer run --config`` and ``loafer check --config``, end to end
through the command (subprocesses) against the real brokers: one config file with a route
on each broker, ``--workers 3`` surviving a SIGKILLed worker, and ``check`` telling a good
config from each kind of bad one by exit code and message."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from loafer_core.testing import eventually
from tests.loafer_cli.projects import (
    bodies,
    children,
    expected,
    handled,
    handled_by,
    toml_array,
    wait_for_ids,
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

    async def reached() -> bool:
        return await _consumers(admin, queue) == count

    await eventually(reached, timeout=timeout, interval=0.1, what=f"{count} consumers")


@pytest.mark.rabbit
async def test_workers_3_from_a_config_survive_a_sigkilled_worker_mid_stream(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await admin.declare()
    project = write_project(tmp_path, ONE_RABBIT_ROUTE)
    env = {"QUEUE": queue, "RABBIT_URL": rabbit_url, "HANDLER_DELAY": "0.1"}
    service = Service(["--config", "loafer.toml", "--workers", "3"], cwd=project, env=env)
    parent = service.process.pid
    first, second = bodies("first", 600), bodies("second", 600)
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
        await service.until(
            lambda: len(children(parent)) == 3 and victim not in children(parent),
            60,
            "a third worker again, in place of the killed one",
        )
        [restarted] = children(parent) - workers
        # nothing lost: what the killed worker held was delivered again, to the others
        wait_for_ids(service, expected("first", 600), timeout=120)

        # the restarted worker serves; SIGTERM mid-stream: all three drain
        await _wait_consumers(admin, queue, 3, timeout=60)
        await admin.put_many(queue, [body.encode() for body in second])
        service.wait_for(f"by pid {restarted}")  # a handler line of the new worker
        service.wait_for("handlers: handled second-", count=60)
        assert service.stop() == 0, "\n".join(service.lines)
    finally:
        service.kill()
    by_pid = handled_by(service.lines)
    assert by_pid[victim], "the killed worker had handled nothing"
    assert {i for i in by_pid[restarted] if i.startswith("second-")}
    assert set(by_pid) <= workers | {restarted}
    drained = [line for line in service.lines if "loafer_cli: drained; exiting" in line]
    assert len(drained) == 3, "\n".join(service.lines)  # the three live workers drained
    assert "supervisor exiting with code 0 (3 workers, 1 restarts" in service.lines[-1]
    # a drain: every message a handler finished was acknowledged, every other one was
    # given back (none lost, none left unacknowledged)
    done = handled(service.lines)["second"]
    left = {json.loads(message.body)["id"] for message in await admin.drain(queue)}
    assert left, "the second batch was not mid-stream at SIGTERM"
    assert not done & left, sorted(done & left)[:10]
    assert done | left == expected("second", len(second))
    assert await _consumers(admin, queue) == 0


@pytest.mark.slow  # a 45 s handler drained past the command's default (40 s)
@pytest.mark.rabbit
async def test_workers_give_the_drain_the_shutdown_timeout_of_the_config(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str
) -> None:
    """The supervisor waits for the workers' own drain time ([manager] shutdown_timeout
    = 90) before it SIGKILLs them, not the command's default (30 + its 10 s margin): a
    45 s handler in flight at SIGTERM finishes and is acknowledged."""
    queue = await admin.declare()
    config = ONE_RABBIT_ROUTE.replace("shutdown_timeout = 10", "shutdown_timeout = 90")
    project = write_project(tmp_path, config)
    env = {"QUEUE": queue, "RABBIT_URL": rabbit_url, "HANDLER_DELAY": "45"}
    service = Service(["--config", "loafer.toml", "--workers", "2"], cwd=project, env=env)
    try:
        await _wait_consumers(admin, queue, 2, timeout=60)
        await admin.put(queue, bodies("slow", 1)[0].encode())
        service.wait_for("handlers: handling slow-0")
        assert service.stop(timeout=120) == 0, "\n".join(service.lines)
    finally:
        service.kill()
    assert handled(service.lines)["slow"] == {"slow-0"}, "\n".join(service.lines)
    assert not [line for line in service.lines if "SIGKILL" in line]
    assert await admin.count(queue) == 0


@pytest.mark.rabbit
@pytest.mark.amqp
@pytest.mark.sqs
async def test_check_passes_on_a_good_config_with_a_route_on_each_broker(
    tmp_path: Path,
    admin: RabbitAdmin,
    rabbit_url: str,
    amqp_url: str,
    sqs_endpoint: str,
    sqs: Any,
    make_queue: MakeQueue,
) -> None:
    project, env, _, _, sqs_url = await _four_broker_project(
        tmp_path, admin, rabbit_url, amqp_url, sqs_endpoint, make_queue
    )
    await send_bodies(sqs, sqs_url, bodies("sqs", 3))
    done = loafer("check", "--config", "loafer.toml", "--timeout", "20", cwd=project, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if " OK " in line]
    for name in ("orders", "invoices", "emails", "greetings"):
        assert [row for row in rows if f" {name} " in row], done.stdout
    assert "FAIL" not in done.stdout and "loafer: error" not in done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert await queue_counts(sqs, sqs_url) == (3, 0)  # nothing received


def _route(
    provider: str, queue: str = "${QUEUE}", handler: str = "handlers:handle", **keys: Any
) -> str:
    """One route, ``orders``, of ``provider`` with its connection options from the
    environment; ``keys`` are more route keys (``provider_options`` a dict of more
    options), as TOML."""
    options = {
        "rabbit": {"url": "${RABBIT_URL}"},
        "amqp": {"url": "${AMQP_URL}"},
        "sqs": {
            "endpoint_url": "${SQS_ENDPOINT}",
            "region_name": REGION,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "${SQS_SECRET}",
        },
        "zeromq": {},
    }[provider] | keys.pop("provider_options", {})
    lines = [
        "[[routes]]",
        'name = "orders"',
        f'provider = "{provider}"',
        f'queue = "{queue}"',
        f'handler = "{handler}"',
        *(f"{key} = {value}" for key, value in keys.items()),
        "",
        "[routes.provider_options]",
        *(f"{key} = {json.dumps(value)}" for key, value in options.items()),
    ]
    return "\n".join(lines) + "\n"


#: (id, config, exit code, text expected in the stderr line of each problem: the
#: ``loafer: error:`` line of a config error, or of a route that failed its check)
BAD_CONFIGS = [
    (
        "unknown-provider",
        _route("zeromq"),
        78,
        "loafer: error: loafer.toml: routes[0] ('orders'): provider: no provider named "
        "'zeromq' in the 'loafer.providers' entry point group; installed: "
        + ", ".join(sorted({ep.name for ep in entry_points(group="loafer.providers")})),
    ),
    (
        "missing-queue-rabbit",
        _route("rabbit", "${QUEUE}-missing"),
        1,
        "loafer: error: route 'orders': ",
    ),
    (
        "missing-queue-amqp",
        _route("amqp", "/amq/queue/${QUEUE}-missing"),
        1,
        "loafer: error: route 'orders': ",
    ),
    (
        "missing-queue-sqs",
        _route("sqs", "${QUEUE}-missing"),
        1,
        "loafer: error: route 'orders': ",
    ),
    (
        "capability-delayed-retry",
        _route(
            "rabbit",
            retry="{ initial = 1, maximum = 10 }",
            provider_options={"delayed_retry": False},
        ),
        1,
        "needs delayed retries",
    ),
    (
        "capability-attempts",
        _route("amqp", "/amq/queue/${QUEUE}", max_attempts=3),
        1,
        "max_attempts=3 needs a provider that counts delivery attempts",
    ),
    (
        "bad-route-key",
        _route("rabbit").replace("handler =", "hander ="),
        78,
        (  # two problems: two lines
            "loafer: error: loafer.toml: routes[0] ('orders'): handler: required key missing "
            "(expected an import path 'module:attribute')",
            "loafer: error: loafer.toml: routes[0] ('orders'): hander: unknown key (did you "
            "mean 'handler'?); allowed: error_handler, handler, handler_timeout, idempotency, "
            "max_attempts, max_concurrency, middleware, name, provider, provider_options, "
            "publish, publish_to, queue, retry, translator",
        ),
    ),
    (
        "bad-provider-option",
        _route("rabbit", provider_options={"prefetch": 10}),
        78,
        "loafer: error: loafer.toml: routes[0] ('orders'): provider_options.prefetch: "
        "unknown option of 'rabbit' (RabbitProvider) (did you mean 'prefetch_headroom'?); "
        "it takes: ",
    ),
    (
        "handler-no-module",
        _route("rabbit", handler="nowhere.handlers:handle"),
        78,
        "loafer: error: loafer.toml: routes[0] ('orders'): handler: cannot import "
        "'nowhere.handlers:handle': no module named 'nowhere' (is it installed, or in the "
        "directory you run from?)",
    ),
    (
        "handler-no-attribute",
        _route("rabbit", handler="handlers:handel"),
        78,
        "loafer: error: loafer.toml: routes[0] ('orders'): handler: cannot import "
        "'handlers:handel': 'handlers' has no attribute 'handel'",
    ),
    (
        "handler-none",
        _route("rabbit", handler="placeholders:NOTHING"),
        78,
        "loafer: error: loafer.toml: routes[0] ('orders'): handler: 'placeholders:NOTHING' "
        "is None, not a handler",
    ),
    (
        "translator-none",
        _route("rabbit", translator='"placeholders:NOTHING"'),
        78,
        "loafer: error: loafer.toml: routes[0] ('orders'): translator: "
        "'placeholders:NOTHING' is None, not a translator (write translator = false for "
        "no translator)",
    ),
    (
        "error-handler-none",
        _route("rabbit", error_handler='"placeholders:NOTHING"'),
        78,
        "loafer: error: loafer.toml: routes[0] ('orders'): error_handler: "
        "'placeholders:NOTHING' is None, not an error handler",
    ),
    (
        "handler-missing-dependency",
        _route("rabbit", handler="broken:handle"),
        78,
        "loafer: error: loafer.toml: routes[0] ('orders'): handler: cannot import "
        "'broken:handle': importing 'broken' failed: it imports 'not_installed_anywhere', "
        "which is not installed",
    ),
]


@pytest.mark.rabbit
@pytest.mark.amqp
@pytest.mark.sqs
@pytest.mark.parametrize(
    ("config", "code", "message"),
    [case[1:] for case in BAD_CONFIGS],
    ids=[case[0] for case in BAD_CONFIGS],
)
async def test_check_fails_on_a_bad_config_with_the_right_message(
    tmp_path: Path,
    admin: RabbitAdmin,
    rabbit_url: str,
    amqp_url: str,
    make_queue: MakeQueue,
    sqs_endpoint: str,
    config: str,
    code: int,
    message: str | tuple[str, ...],
) -> None:
    sqs = "sqs" in config
    queue = (await make_queue()).rsplit("/", 1)[-1] if sqs else await admin.declare()
    project = write_project(tmp_path, config)
    (project / "broken.py").write_text("import not_installed_anywhere\n")
    (project / "placeholders.py").write_text("NOTHING = None  # to be filled in later\n")
    env = {
        "QUEUE": queue,
        "RABBIT_URL": rabbit_url,
        "AMQP_URL": amqp_url,
        "SQS_ENDPOINT": sqs_endpoint,
        "SQS_SECRET": SECRET,
    }
    done = loafer("check", "--config", "loafer.toml", "--timeout", "20", cwd=project, env=env)
    assert done.returncode == code, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("loafer: error:")]
    messages = (message,) if isinstance(message, str) else message
    assert len(errors) == len(messages), done.stderr
    for error, expected_text in zip(errors, messages, strict=True):
        assert expected_text in error, done.stderr
    if code == 1:  # the route was checked: its row says FAIL
        assert "orders" in done.stdout and "FAIL" in done.stdout, done.stdout
    if "-missing" in config:
        assert f"{queue}-missing" in errors[0]  # the missing queue is named
    assert SECRET not in done.stdout + done.stderr


def test_run_reports_each_problem_of_a_config_file_on_its_own_line(tmp_path: Path) -> None:
    project = write_project(tmp_path, _route("rabbit").replace("handler =", "hander ="))
    env = {"QUEUE": "q", "RABBIT_URL": "amqp://127.0.0.1/"}
    done = loafer("run", "--config", "loafer.toml", cwd=project, env=env)
    assert done.returncode == 78, done.stderr
    assert done.stderr.splitlines() == [
        "loafer: error: loafer.toml: routes[0] ('orders'): handler: required key missing "
        "(expected an import path 'module:attribute')",
        "loafer: error: loafer.toml: routes[0] ('orders'): hander: unknown key (did you "
        "mean 'handler'?); allowed: error_handler, handler, handler_timeout, idempotency, "
        "max_attempts, max_concurrency, middleware, name, provider, provider_options, publish, "
        "publish_to, queue, retry, translator",
    ]
