"""The CLI with Pub/Sub: ``loafer providers`` lists it, ``loafer publish pubsub`` waits
for the confirms, ``loafer check`` and ``loafer asyncapi`` read a config file's Pub/Sub
route (the googlepubsub server, the document valid against AsyncAPI 3.0's schema)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.loafer_cli.runner import loafer
from tests.loafer_cli.test_asyncapi import errors_of, schema, validator

from .conftest import PROJECT, PubSubAdmin, data

pytestmark = pytest.mark.pubsub

__all__ = ["schema", "validator"]  # the fixtures, used here

HANDLERS = "def handle(message, metadata):\n    return True\n"


def config(tmp_path: Path, subscription: str, host: str, extra: str = "") -> Path:
    (tmp_path / "handlers.py").write_text(HANDLERS)
    path = tmp_path / "loafer.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [[routes]]
            name = "orders"
            provider = "pubsub"
            queue = "{subscription}"
            handler = "handlers:handle"
            max_attempts = 5

            [routes.provider_options]
            project = "{PROJECT}"
            emulator_host = "{host}"
            """
        )
        + extra
    )
    return path


def test_providers_lists_pubsub_with_its_capabilities() -> None:
    done = loafer("providers")
    assert done.returncode == 0, done.stderr
    [row] = [line for line in done.stdout.splitlines() if line.startswith("│ pubsub ")]
    assert "│ yes " in row
    assert "delayed_retry (native)" in row and "max_retry_delay=600s" in row


async def test_publish_waits_for_the_confirms(admin: PubSubAdmin, pubsub_emulator: str) -> None:
    queue = await admin.queue(dead_letters=False)
    done = loafer(
        "publish",
        "pubsub",
        queue,
        "-o",
        f"project={PROJECT}",
        "-o",
        f"emulator_host={pubsub_emulator}",
        "-H",
        "tenant=acme",
        stdin='{"n": 1}\n{"n": 2}\n',
    )
    assert done.returncode == 0, done.stderr
    got = await admin.pull(queue)
    assert sorted(data(m) for m in got) == [b'{"n": 1}', b'{"n": 2}']
    assert all(m["message"]["attributes"] == {"tenant": "acme"} for m in got)
    failed = loafer(
        "publish",
        "pubsub",
        f"{queue}-missing",
        '{"n": 3}',
        "-o",
        f"project={PROJECT}",
        "-o",
        f"emulator_host={pubsub_emulator}",
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr


async def test_check_reads_the_subscription_and_consumes_nothing(
    admin: PubSubAdmin, pubsub_emulator: str, tmp_path: Path
) -> None:
    queue = await admin.queue()
    await admin.put(queue, b'{"left": "alone"}')
    path = config(tmp_path, queue, pubsub_emulator)
    done = loafer("check", "--config", str(path), "--timeout", "15", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "orders" in done.stdout and "OK" in done.stdout
    [left] = await admin.pull(queue)
    assert left["deliveryAttempt"] == 1  # never delivered before
    missing = config(tmp_path, f"{queue}-missing", pubsub_emulator)
    bad = loafer("check", "--config", str(missing), "--timeout", "15", cwd=tmp_path)
    assert bad.returncode != 0
    assert "gcloud pubsub subscriptions create" in bad.stdout + bad.stderr


def test_asyncapi_writes_the_googlepubsub_binding_and_server(
    tmp_path: Path, validator: object
) -> None:
    config(tmp_path, "orders-billing", "127.0.0.1:8085")
    done = loafer("asyncapi", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert errors_of(validator, doc) == []
    channel = doc["channels"]["orders"]
    assert channel["address"] == "orders-billing"
    assert channel["x-loafer-provider"] == "pubsub"
    # the googlepubsub channel binding requires a topic schema (schemaSettings): none
    assert "bindings" not in channel
    [operation] = [o for o in doc["operations"].values() if o["action"] == "receive"]
    assert operation["x-loafer-pubsub"] == {"subscription": "orders-billing", "topic": None}
    (server,) = doc["servers"].values()
    assert server["protocol"] == "googlepubsub"
    assert server["host"] == "127.0.0.1:8085"


def test_asyncapi_writes_the_channel_binding_of_a_topic_with_a_schema(
    tmp_path: Path, validator: object
) -> None:
    name = f"projects/{PROJECT}/schemas/orders-v1"
    extra = f'schema = "{name}"\nschema_encoding = "BINARY"\n'
    config(tmp_path, "orders-billing", "127.0.0.1:8085", extra)
    done = loafer("asyncapi", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert errors_of(validator, doc) == []
    binding = doc["channels"]["orders"]["bindings"]["googlepubsub"]
    assert binding == {
        "schemaSettings": {"encoding": "BINARY", "name": name},
        "bindingVersion": "0.2.0",
    }
