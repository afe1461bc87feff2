"""Fixtures for the SQS plugin's tests: a moto server started by the test session.

``LOAFER_TEST_SQS_ENDPOINT`` points the tests at another endpoint (LocalStack, another
moto server). Credentials and region are dummies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from loafer_core.testing import eventually
from tests.brokers import resolve

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

_server: Any = None


def _start_moto() -> str | None:
    global _server
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        return None
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    _server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    _server.start()
    host, port = _server.get_host_and_port()
    return f"http://{host}:{port}"


def _container() -> str:  # pragma: no cover - needs a Docker engine
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = DockerContainer("motoserver/moto:latest").with_exposed_ports(5000)
    container.start()
    wait_for_logs(container, "Running on", timeout=120)
    host = container.get_container_host_ip()
    return f"http://{host}:{container.get_exposed_port(5000)}"


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """The SQS endpoint URL: LOAFER_TEST_SQS_ENDPOINT, else moto's server in this process
    (the local service: moto is in the test extra), else moto's container."""
    endpoint = resolve(
        env_var="LOAFER_TEST_SQS_ENDPOINT",
        local=_start_moto,
        container=_container,
        what="SQS endpoint (moto)",
    )
    yield endpoint
    if _server is not None:
        _server.stop()


@pytest.fixture
def client_options(sqs_endpoint: str) -> dict[str, Any]:
    """Options for SQSProvider/SQSPublisher pointing at the test endpoint."""
    return {"endpoint_url": sqs_endpoint, "region_name": REGION, **CREDENTIALS}


@pytest.fixture
def aws_env(sqs_endpoint: str) -> dict[str, str]:
    """Environment variables for a subprocess using the standard AWS chain."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": sqs_endpoint,
    }


@pytest.fixture
async def sqs(client_options: dict[str, Any]) -> AsyncIterator[Any]:
    """A plain aiobotocore SQS client for setting up and inspecting queues."""
    from aiobotocore.session import get_session

    async with get_session().create_client("sqs", **client_options) as client:
        yield client


@pytest.fixture
async def sns(client_options: dict[str, Any]) -> AsyncIterator[Any]:
    """A plain aiobotocore SNS client."""
    from aiobotocore.session import get_session

    async with get_session().create_client("sns", **client_options) as client:
        yield client


MakeQueue = Callable[..., Awaitable[str]]


@pytest.fixture
async def make_queue(sqs: Any) -> AsyncIterator[MakeQueue]:
    """``await make_queue(visibility=2, dlq=False, max_receives=3, fifo=False)`` -> URL.

    Unique names; deleted (with their dead-letter queues) at the end of the test.
    """
    created: list[str] = []

    async def make(
        *,
        visibility: int = 30,
        dlq: bool = False,
        max_receives: int = 5,
        fifo: bool = False,
        prefix: str = "loafer-sqs",
    ) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        suffix = ".fifo" if fifo else ""
        attributes: dict[str, str] = {"VisibilityTimeout": str(visibility)}
        if fifo:
            attributes["FifoQueue"] = "true"
        if dlq:
            dead = await sqs.create_queue(
                QueueName=f"{name}-dlq{suffix}",
                Attributes={"FifoQueue": "true"} if fifo else {},
            )
            created.append(dead["QueueUrl"])
            arn = (
                await sqs.get_queue_attributes(
                    QueueUrl=dead["QueueUrl"], AttributeNames=["QueueArn"]
                )
            )["Attributes"]["QueueArn"]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arn, "maxReceiveCount": max_receives}
            )
        response = await sqs.create_queue(QueueName=f"{name}{suffix}", Attributes=attributes)
        created.append(response["QueueUrl"])
        return str(response["QueueUrl"])

    yield make
    for url in reversed(created):
        with contextlib.suppress(Exception):
            await sqs.delete_queue(QueueUrl=url)


async def send_bodies(sqs: Any, url: str, bodies: list[str], **extra: Any) -> None:
    """Send ``bodies`` with SendMessageBatch, 10 at a time."""
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        entries = [{"Id": str(i), "MessageBody": b, **extra} for i, b in enumerate(chunk)]
        response = await sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not response.get("Failed"), response


async def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    attrs = (
        await sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


class CallCounter:
    """Counts SQS API calls at the HTTP level (``before-send``) and batch entry sizes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, request: Any, **kwargs: Any) -> None:
        target = request.headers.get("X-Amz-Target", b"")
        if isinstance(target, bytes):
            target = target.decode()
        operation = str(target).rsplit(".", 1)[-1] or "?"
        entries = 0
        body = request.body
        if body:
            try:
                payload = json.loads(body)
            except (ValueError, TypeError):
                payload = {}
            if isinstance(payload, dict):
                entries = len(payload.get("Entries", []) or [])
        self.calls.append((operation, entries))

    def count(self, operation: str | None = None) -> int:
        return sum(1 for op, _ in self.calls if operation is None or op == operation)

    def largest_batch(self) -> int:
        return max((n for _, n in self.calls), default=0)

    def session(self) -> Any:
        """An aiobotocore session whose clients report to this counter."""
        from aiobotocore.session import get_session

        session = get_session()
        session.register("before-send.sqs", self)
        return session


async def wait_for_counts(sqs: Any, url: str, expected: tuple[int, int], timeout: float) -> None:
    """Poll the queue's counters until they read ``expected`` (moto cannot notify us)."""

    async def reached() -> bool:
        return await queue_counts(sqs, url) == expected

    await eventually(reached, timeout=timeout, interval=0.1, what=f"queue counts {expected}")
