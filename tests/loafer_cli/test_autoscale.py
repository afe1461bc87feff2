"""``loafer autoscale``: a KEDA ScaledObject or an HPA from a config, one trigger per
route on its backlog gauge, no secret of the config in it; and the same config run as
three separate ``loafer run`` processes (three pods) on one RabbitMQ queue and on one
SQS queue: the work shared, every message handled, none twice."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from loafer_core.testing import eventually
from tests.loafer_cli.projects import bodies, expected, handled, handled_by, write_project
from tests.loafer_cli.runner import Service, loafer
from tests.loafer_rabbit.conftest import RabbitAdmin
from tests.loafer_sqs.conftest import REGION, MakeQueue, queue_counts, send_bodies

SECRET = "autoscale-secret-51f3"

TWO_ROUTES = textwrap.dedent(
    f"""
    [[routes]]
    name = "orders"
    provider = "rabbit"
    queue = "orders"
    handler = "handlers:handle"

    [routes.provider_options]
    url = "amqp://shop:{SECRET}@rabbit.internal:5672/"

    [[routes]]
    name = "emails"
    provider = "memory"
    queue = "emails"
    handler = "handlers:handle"
    """
)


def test_keda_scaled_object_has_a_trigger_per_route_and_no_secret(tmp_path: Path) -> None:
    project = write_project(tmp_path, TWO_ROUTES)
    result = loafer(
        "autoscale",
        "--config",
        "loafer.toml",
        "-d",
        "shop",
        "--target",
        "50",
        "--max",
        "20",
        cwd=project,
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "rabbit.internal" not in result.stdout
    [doc] = list(yaml.safe_load_all(result.stdout))
    assert doc["kind"] == "ScaledObject" and doc["metadata"]["name"] == "shop"
    spec = doc["spec"]
    assert spec["scaleTargetRef"] == {"name": "shop"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 20)
    queries = {t["name"]: t["metadata"]["query"] for t in spec["triggers"]}
    assert queries == {
        "orders-backlog": 'max(loafer_queue_backlog{route="orders"})',
        "emails-backlog": 'max(loafer_queue_backlog{route="emails"})',
    }
    assert {t["metadata"]["threshold"] for t in spec["triggers"]} == {"50"}


def test_hpa_has_an_external_metric_per_route(tmp_path: Path) -> None:
    project = write_project(tmp_path, TWO_ROUTES)
    result = loafer("autoscale", "--config", "loafer.toml", "--kind", "hpa", cwd=project)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = yaml.safe_load(result.stdout)
    assert doc["kind"] == "HorizontalPodAutoscaler"
    routes = [
        m["external"]["metric"]["selector"]["matchLabels"]["route"] for m in doc["spec"]["metrics"]
    ]
    assert routes == ["orders", "emails"]
    assert SECRET not in result.stdout


def test_wrong_bounds_are_a_clear_error(tmp_path: Path) -> None:
    project = write_project(tmp_path, TWO_ROUTES)
    result = loafer("autoscale", "--config", "loafer.toml", "--min", "5", "--max", "2", cwd=project)
    assert result.returncode == 78
    assert "--min 5 / --max 2: expected 0 <= min <= max" in result.stderr


RABBIT_ROUTE = textwrap.dedent(
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

SQS_ROUTE = textwrap.dedent(
    """
    [manager]
    shutdown_timeout = 10

    [[routes]]
    name = "work"
    provider = "sqs"
    queue = "${QUEUE}"
    handler = "handlers:handle"
    max_concurrency = 4

    [routes.provider_options]
    endpoint_url = "${SQS_ENDPOINT}"
    region_name = "${SQS_REGION}"
    aws_access_key_id = "testing"
    aws_secret_access_key = "testing"
    """
)

COUNT = 300


#: the handlers, logging each delivery's attempt too (a redelivery is told by it)
HANDLERS = textwrap.dedent(
    """
    import asyncio
    import json
    import logging
    import os

    log = logging.getLogger("handlers")


    async def handle(message, metadata):
        if isinstance(message, bytes | str):
            message = json.loads(message)
        await asyncio.sleep(0.02)
        log.info(
            "handled %s by pid %d attempt %s", message["id"], os.getpid(), metadata.get("attempt")
        )
    """
)


def _three_pods(project: Path, env: dict[str, str]) -> list[Service]:
    (project / "handlers.py").write_text(HANDLERS)
    return [Service(["--config", "loafer.toml"], cwd=project, env=env) for _ in range(3)]


async def _all_handled(pods: list[Service]) -> None:
    def done() -> bool:
        return len(handled([x for pod in pods for x in pod.lines])["job"]) == COUNT

    await eventually(done, timeout=120, interval=0.1, what="every message handled")


def _shared_and_once(pods: list[Service]) -> None:
    """Each pod handled a share; every message was handled; a message handled more than
    once was redelivered (its later handlings have attempt >= 2: the broker gave it again,
    not two consumers at once)."""
    lines = [line for pod in pods for line in pod.lines]
    by_pid = handled_by(lines)
    assert len(by_pid) == 3 and all(by_pid.values()), {p: len(i) for p, i in by_pid.items()}
    assert handled(lines)["job"] == expected("job", COUNT)
    attempts: dict[str, list[int]] = {}
    for line in lines:
        if "handlers: handled " in line:
            words = line.split("handlers: handled ", 1)[1].split()
            attempts.setdefault(words[0], []).append(int(words[5]))
    twice = {i: sorted(a) for i, a in attempts.items() if len(a) > 1}
    assert all(a[0] == 1 and all(n >= 2 for n in a[1:]) for a in twice.values()), twice


@pytest.mark.rabbit
async def test_three_processes_share_one_rabbitmq_queue(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await admin.declare()
    project = write_project(tmp_path, RABBIT_ROUTE)
    env = {"QUEUE": queue, "RABBIT_URL": rabbit_url}
    pods = _three_pods(project, env)
    try:
        for pod in pods:
            pod.wait_for("running 1 route(s)", 60)
        await admin.put_many(queue, [b.encode() for b in bodies("job", COUNT)])
        await _all_handled(pods)
        for pod in pods:
            assert pod.stop() == 0, "\n".join(pod.lines[-20:])
    finally:
        for pod in pods:
            pod.kill()
    _shared_and_once(pods)
    assert await admin.count(queue) == 0


@pytest.mark.sqs
async def test_three_processes_share_one_sqs_queue(
    tmp_path: Path, sqs: Any, sqs_endpoint: str, make_queue: MakeQueue
) -> None:
    url = await make_queue(visibility=30)
    project = write_project(tmp_path, SQS_ROUTE)
    env = {"QUEUE": url, "SQS_ENDPOINT": sqs_endpoint, "SQS_REGION": REGION}
    pods = _three_pods(project, env)
    try:
        for pod in pods:
            pod.wait_for("running 1 route(s)", 60)
        await send_bodies(sqs, url, bodies("job", COUNT))
        await _all_handled(pods)
        for pod in pods:
            assert pod.stop() == 0, "\n".join(pod.lines[-20:])
    finally:
        for pod in pods:
            pod.kill()
    _shared_and_once(pods)
    assert await queue_counts(sqs, url) == (0, 0)
