"""``loafer publish``: messages from stdin onto each broker, then ``loafer run`` handles
them (round trips); confirms reported; a failed publish exits non-zero."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.loafer_cli.runner import Service, loafer
from tests.loafer_rabbit.conftest import RabbitAdmin
from tests.loafer_sqs.conftest import CREDENTIALS, REGION, MakeQueue, queue_counts

APP = textwrap.dedent(
    """
    import json
    import logging
    import os

    from loafer_core import Route

    log = logging.getLogger("app")


    async def handler(message, metadata):
        if isinstance(message, bytes | str):
            message = json.loads(message)
        log.info("handled %s", message["n"])


    def rabbit():
        from loafer_rabbit import RabbitProvider

        return [Route(RabbitProvider(os.environ["QUEUE"], url=os.environ["URL"]), handler)]


    def sqs():
        from loafer_sqs import SQSProvider

        provider = SQSProvider(
            os.environ["QUEUE"], endpoint_url=os.environ["URL"], region_name="us-east-1"
        )
        return [Route(provider, handler)]


    def amqp():
        from loafer_amqp import AMQPProvider

        provider = AMQPProvider(os.environ["URL"], "/amq/queue/" + os.environ["QUEUE"])
        return [Route(provider, handler)]
    """
)

COUNT = 25
LINES = "".join(json.dumps({"n": i}) + "\n" for i in range(COUNT)) + "\n"  # a blank line too


def _publish(args: list[str], env: dict[str, str] | None = None) -> Any:
    done = loafer("publish", *args, "-", stdin=LINES, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[:-1] == [f"{i + 1}: confirmed" for i in range(COUNT)]
    assert lines[-1] == f"{COUNT} confirmed, 0 failed"
    return done


def _run_until_handled(tmp_path: Path, attr: str, env: dict[str, str]) -> None:
    (tmp_path / "app.py").write_text(APP)
    service = Service([f"app:{attr}"], cwd=tmp_path, env=env)
    try:
        handled = service.wait_for("handled", count=COUNT, timeout=60)
        assert service.stop() == 0, "\n".join(service.lines)
    finally:
        service.kill()
    numbers = sorted(int(line.rsplit(" ", 1)[-1]) for line in handled)
    assert numbers == list(range(COUNT))


@pytest.mark.rabbit
async def test_publish_from_stdin_then_run_round_trips_on_rabbitmq(
    tmp_path: Path, admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await admin.declare()
    _publish(["rabbit", queue, "--url", rabbit_url])
    assert await admin.count(queue) == COUNT
    _run_until_handled(tmp_path, "rabbit", {"QUEUE": queue, "URL": rabbit_url})
    assert await admin.count(queue) == 0


@pytest.mark.rabbit
async def test_publish_one_body_with_headers_and_options(
    admin: RabbitAdmin, rabbit_url: str
) -> None:
    queue = await admin.declare()
    done = loafer(
        "publish", "rabbit", queue, '{"n": 1}', "--url", rabbit_url,
        "--header", "tenant=acme", "--header", "retries=3",
        "--option", "persistent=false",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1: confirmed", "1 confirmed, 0 failed"]
    [message] = await admin.drain(queue)
    assert json.loads(message.body) == {"n": 1}
    assert message.headers == {"tenant": "acme", "retries": 3}
    assert message.delivery_mode is not None and message.delivery_mode.value == 1


@pytest.mark.rabbit
async def test_a_publish_that_fails_is_reported_and_exits_1(rabbit_url: str) -> None:
    done = loafer(
        "publish", "rabbit", "loafer-cli-no-such-queue", "-", "--url", rabbit_url,
        stdin='{"n": 1}\n{"n": 2}\n',
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith("1: FAILED: PublishRejected")
    assert lines[1].startswith("2: FAILED: PublishRejected")
    assert lines[2] == "0 confirmed, 2 failed"


def test_an_unknown_publisher_or_option_exits_78() -> None:
    done = loafer("publish", "nosuch", "q", "x")
    assert done.returncode == 78
    assert "no publisher named 'nosuch'" in done.stderr
    installed = done.stderr.partition("installed: ")[2].strip().split(", ")
    assert {"amqp", "rabbit", "sns", "sqs"} <= set(installed), done.stderr
    done = loafer("publish", "rabbit", "q", "x", "--option", "bogus=1")
    assert done.returncode == 78
    assert "RabbitPublisher(bogus=...): unknown option; it takes: " in done.stderr
    done = loafer("publish", "rabbit", "q", "x", "--header", "novalue")
    assert done.returncode == 78
    assert "--header 'novalue': expected key=value" in done.stderr


@pytest.mark.sqs
async def test_publish_from_stdin_then_run_round_trips_on_sqs(
    tmp_path: Path, sqs_endpoint: str, sqs: Any, make_queue: MakeQueue
) -> None:
    url = await make_queue()
    name = url.rsplit("/", 1)[-1]
    env = {
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
    }
    _publish(["sqs", name, "--url", sqs_endpoint, "--option", f"region_name={REGION}"], env=env)
    assert await queue_counts(sqs, url) == (COUNT, 0)
    _run_until_handled(tmp_path, "sqs", {"QUEUE": name, "URL": sqs_endpoint, **env})
    assert await queue_counts(sqs, url) == (0, 0)


@pytest.mark.amqp
async def test_publish_from_stdin_then_run_round_trips_on_amqp_1_0(
    tmp_path: Path, admin: RabbitAdmin, amqp_url: str
) -> None:
    queue = await admin.declare()
    _publish(["amqp", f"/amq/queue/{queue}", "--url", amqp_url])
    assert await admin.count(queue) == COUNT
    _run_until_handled(tmp_path, "amqp", {"QUEUE": queue, "URL": amqp_url})
    assert await admin.count(queue) == 0


@pytest.mark.rabbit
async def test_publish_with_a_delay_arrives_after_it(admin: RabbitAdmin, rabbit_url: str) -> None:
    queue = await admin.declare()
    admin.track(f"{queue}.delay.1000")
    done = loafer("publish", "rabbit", queue, '{"n": 1}', "--url", rabbit_url, "--delay", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1: confirmed", "1 confirmed, 0 failed"]
    assert await admin.count(f"{queue}.delay.1000") in (0, 1)
    await admin.wait_count(queue, 1)


def test_a_delay_the_publisher_refuses_exits_78() -> None:
    done = loafer("publish", "sns", "topic", "x", "--url", "http://127.0.0.1:9", "--delay", "5")
    assert done.returncode == 78, done.stdout + done.stderr
    assert "publisher 'sns' declares no delayed publish" in done.stderr
    done = loafer("publish", "sqs", "q", "x", "--url", "http://127.0.0.1:9", "--delay", "901")
    assert done.returncode == 78, done.stdout + done.stderr
    assert "beyond the broker's limit of 900s" in done.stderr
