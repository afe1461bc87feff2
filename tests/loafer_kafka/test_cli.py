"""The CLI with Kafka: ``loafer providers`` lists it, ``loafer publish kafka`` waits for
the acknowledgements, ``loafer check`` and ``loafer asyncapi`` read a config file's Kafka
route (the kafka server and bindings, the document valid against AsyncAPI 3.0's
schema)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.loafer_cli.runner import loafer
from tests.loafer_cli.test_asyncapi import errors_of, schema, validator

from .conftest import KafkaAdmin, lag

pytestmark = pytest.mark.kafka

__all__ = ["schema", "validator"]  # the fixtures, used here

HANDLERS = "def handle(message, metadata):\n    return True\n"


def config(tmp_path: Path, topic: str, url: str) -> Path:
    (tmp_path / "handlers.py").write_text(HANDLERS)
    path = tmp_path / "loafer.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [[routes]]
            name = "orders"
            provider = "kafka"
            queue = "{topic}"
            handler = "handlers:handle"
            max_attempts = 5

            [routes.provider_options]
            url = "{url}"
            group_id = "billing"
            dead_letter_topic = "{{topic}}.dead"
            idempotent = false
            """
        )
    )
    return path


def test_providers_lists_kafka_with_its_capabilities() -> None:
    done = loafer("providers")
    assert done.returncode == 0, done.stderr
    [row] = [line for line in done.stdout.splitlines() if line.startswith("│ kafka ")]
    assert "│ yes " in row
    assert "delayed_retry (emulated)" in row and "ordering_keys (native)" in row


async def test_publish_waits_for_the_acknowledgements(admin: KafkaAdmin, kafka_url: str) -> None:
    topic = await admin.topic(partitions=1)
    done = loafer(
        "publish",
        "kafka",
        topic,
        "-o",
        f"url={kafka_url}",
        "-o",
        "idempotent=false",
        "-H",
        "tenant=acme",
        stdin='{"n": 1}\n{"n": 2}\n',
    )
    assert done.returncode == 0, done.stderr
    got = await admin.read(topic)
    assert [r.value for r in got] == [b'{"n": 1}', b'{"n": 2}']
    assert all(dict(r.headers) == {"tenant": b"acme"} for r in got)


async def test_check_reads_the_topics_and_consumes_nothing(
    admin: KafkaAdmin, kafka_url: str, tmp_path: Path
) -> None:
    topic = await admin.topic(partitions=1)
    await admin.topic(f"{topic}.dead", partitions=1)
    await admin.put(topic, b'{"left": "alone"}')
    path = config(tmp_path, topic, kafka_url)
    done = loafer("check", "--config", str(path), "--timeout", "15", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "orders" in done.stdout and "OK" in done.stdout
    assert await lag(kafka_url, topic, "billing") == 1  # nothing committed
    missing = config(tmp_path, f"{topic}-missing", kafka_url)
    bad = loafer("check", "--config", str(missing), "--timeout", "15", cwd=tmp_path)
    assert bad.returncode != 0
    assert "pass create=True" in bad.stdout + bad.stderr


def test_asyncapi_writes_the_kafka_bindings_and_server(tmp_path: Path, validator: object) -> None:
    config(tmp_path, "orders", "kafka://127.0.0.1:9092")
    done = loafer("asyncapi", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert errors_of(validator, doc) == []
    channel = doc["channels"]["orders"]
    assert channel["address"] == "orders"
    assert channel["x-loafer-provider"] == "kafka"
    assert channel["bindings"]["kafka"]["topic"] == "orders"
    [operation] = [o for o in doc["operations"].values() if o["action"] == "receive"]
    assert operation["bindings"]["kafka"]["groupId"]["enum"] == ["billing"]
    assert operation["x-loafer-kafka"] == {"group": "billing", "dead_letter_topic": "orders.dead"}
    (server,) = doc["servers"].values()
    assert server["protocol"] == "kafka"
    assert server["host"] == "127.0.0.1:9092"
