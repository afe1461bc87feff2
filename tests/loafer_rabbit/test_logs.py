"""No credential reaches a log record, ours or aio-pika's/aiormq's, at any level."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import traceback

import pytest

from loafer_core.errors import ConfigurationError
from loafer_core.outcome import ACCEPT
from loafer_rabbit import RabbitProvider, RabbitPublisher
from tests.loafer_rabbit.conftest import RabbitAdmin

pytestmark = pytest.mark.rabbit

KEY_SECRET = "kfp-s3cret-9Zq"
WRONG_PASSWORD = "wr0ng-pw-9Zq"
# RabbitMQ on plain TCP ignores key file options; aio-pika keeps them in the URL it logs.
QUERY = f"?keyfile_password={KEY_SECRET}&heartbeat=30"


def _shown(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


async def test_a_real_session_logs_no_secret(
    admin: RabbitAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the root: every logger's records
    name = await admin.declare()
    url = f"amqp://guest:guest@127.0.0.1:5672/{QUERY}"
    provider = RabbitProvider(name, url=url, poll_timeout=1.0)
    async with RabbitPublisher(url, routing_key=name) as publisher:
        await publisher.publish({"id": 1})
        await provider.start(2)
        async with asyncio.timeout(15):
            deliveries: list[object] = []
            while not deliveries:
                deliveries.extend(await provider.fetch(1))
        for delivery in deliveries:
            await provider.settle(delivery, ACCEPT)  # type: ignore[arg-type]
        await provider.close()
    for obj in (provider, publisher):
        assert KEY_SECRET not in repr(obj)
    text = _shown(caplog)
    assert "aiormq" in text and "aio_pika" in text  # the libraries did log at DEBUG
    assert KEY_SECRET not in text


async def test_a_refused_login_logs_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"amqp://guest:{WRONG_PASSWORD}@127.0.0.1:5672/{QUERY}"
    provider = RabbitProvider("q", url=url, connect_timeout=10)
    with pytest.raises(ConfigurationError) as info:
        await provider.start(1)
    await provider.close()
    publisher = RabbitPublisher(url, routing_key="q")
    with pytest.raises(ConfigurationError) as info2:
        await publisher.publish(b"x")
    await publisher.close()
    text = _shown(caplog)
    for error in (info.value, info2.value):
        text += "".join(traceback.format_exception(error))
    assert "aiormq" in text
    assert KEY_SECRET not in text and WRONG_PASSWORD not in text


def test_arguments_and_tracebacks_of_library_records_are_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    RabbitPublisher(f"amqp://u:{WRONG_PASSWORD}@h/{QUERY}")  # installs the filter
    log = logging.getLogger("aiormq.connection")
    try:
        raise RuntimeError(f"failed with {WRONG_PASSWORD}")
    except RuntimeError:
        log.exception("connecting to %s (%r)", f"amqp://x:y@h/{QUERY}", KEY_SECRET)
    log.debug("a lazily created child: %s", KEY_SECRET)
    logging.getLogger("aiormq.connection.marshall").warning("%s", KEY_SECRET)
    text = _shown(caplog)
    assert "RuntimeError" in text and "connecting to amqp://x:******@h/" in text
    assert KEY_SECRET not in text and WRONG_PASSWORD not in text


def test_the_filter_is_installed_on_first_use_only_and_once() -> None:
    code = (
        "import logging, loafer_rabbit\n"
        "names = ['aio_pika', 'aio_pika.robust_connection', 'aiormq.connection']\n"
        "print([len(logging.getLogger(n).filters) for n in names])\n"
        "loafer_rabbit.RabbitProvider('q'); loafer_rabbit.RabbitPublisher()\n"
        "loafer_rabbit.RabbitProvider('q', url='amqp://u:p4ss@h/')\n"
        "print([len(logging.getLogger(n).filters) for n in names])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[0, 0, 0]", "[1, 1, 1]"]
