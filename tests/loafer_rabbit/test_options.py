"""Plugin registration and connection options (no broker traffic needed)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from typing import Any

import aio_pika
import pytest

from loafer_core.errors import ConfigurationError
from loafer_core.plugins import load_provider
from loafer_rabbit import RabbitProvider, RabbitPublisher, mask_url

pytestmark = pytest.mark.rabbit


def test_entry_point_loads_the_provider() -> None:
    assert load_provider("rabbit") is RabbitProvider


def test_importing_loafer_core_does_not_import_aio_pika() -> None:
    code = "import sys, loafer_core; print('aio_pika' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_mask_url() -> None:
    assert mask_url("amqp://u:p%40ss@h:5672/v") == "amqp://u:******@h:5672/v"
    assert "secret" not in mask_url("amqps://u:x@h/v?keyfile_password=secret")
    assert mask_url("amqp://h/") == "amqp://h/"


async def test_tls_options_are_passed_through(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    async def fake_connect(self: aio_pika.RobustConnection, timeout: Any = None) -> None:
        seen["url"] = str(self.url)
        seen.update(self.kwargs)
        raise ConnectionRefusedError("stop here")

    monkeypatch.setattr(aio_pika.RobustConnection, "connect", fake_connect)
    context = ssl.create_default_context()
    provider = RabbitProvider(
        "q",
        url="amqps://user:pw@broker.example:5671/prod?cafile=/etc/ca.pem",
        ssl_context=context,
        connection_options={"heartbeat": 30},
        connection_name="orders-consumer",
    )
    with pytest.raises(Exception, match="cannot connect"):
        await provider.start(4)
    await provider.close()
    assert seen["url"].startswith("amqps://user:pw@broker.example:5671/prod?cafile=")
    assert "heartbeat=30" in seen["url"]
    assert seen["context"] is context
    assert seen["client_properties"] == {"connection_name": "orders-consumer"}


def test_publisher_repr_masks_password() -> None:
    assert "hunter2" not in repr(RabbitPublisher("amqp://u:hunter2@h/"))


def test_capacity_must_be_positive() -> None:
    provider = RabbitProvider("q")
    with pytest.raises(ConfigurationError, match="capacity"):
        asyncio.run(provider.start(0))
