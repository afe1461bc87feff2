"""No credential given in the URL reaches a log record (any logger, at DEBUG), an
exception's text (with its causes) or a repr, for AMQPProvider and AMQPPublisher: a
real session with a user of its own, and a refused login."""

from __future__ import annotations

import asyncio
import logging
import traceback
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from loafer_amqp import AMQPProvider, AMQPPublisher
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import ACCEPT
from tests.loafer_amqp.conftest import Broker, rabbitmqctl

pytestmark = pytest.mark.amqp

SECRET = "amqp-s3cret-Zq9"
WRONG = "amqp-wr0ng-Zq9"


def _shown(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)


def _told(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))  # with its causes and contexts


@pytest.fixture
def user(amqp_url: str) -> Iterator[str]:
    """A user of this test's own, password SECRET, allowed on the default vhost."""
    name = f"loafer-secret-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_user", name, SECRET)
    try:
        rabbitmqctl("set_permissions", "-p", "/", name, ".*", ".*", ".*")
        yield name
    finally:
        rabbitmqctl("delete_user", name)


async def test_a_real_session_shows_the_password_nowhere(
    amqp_url: str,
    user: str,
    broker: Broker,
    queue: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)  # the root: every logger's records
    url = f"amqp://{user}:{SECRET}@{urlsplit(amqp_url).netloc.rsplit('@', 1)[-1]}"
    address = f"/amq/queue/{queue}"
    provider = AMQPProvider(url, address)
    publisher = AMQPPublisher(url, address)
    try:
        await publisher.publish({"id": 1})
        await provider.start(2)
        async with asyncio.timeout(15):
            deliveries: list[object] = []
            while not deliveries:
                deliveries.extend(await provider.fetch(1))
        for delivery in deliveries:
            await provider.settle(delivery, ACCEPT)  # type: ignore[arg-type]
    finally:
        await provider.close()
        await publisher.close()
    assert await broker.depth(queue) == 0  # the session did work, as that user
    loggers = {record.name for record in caplog.records}
    assert {"proton", "loafer_amqp"} <= loggers  # the library and ours did log
    shown = [repr(provider), repr(publisher), provider.describe(), _shown(caplog)]
    out, err = capfd.readouterr()
    shown += [out, err]
    assert f"{user}:******@" in repr(provider) and f"{user}:******@" in repr(publisher)
    for text in shown:
        assert SECRET not in text


async def test_a_refused_login_shows_the_password_nowhere(
    amqp_url: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"amqp://guest:{WRONG}@{urlsplit(amqp_url).netloc.rsplit('@', 1)[-1]}"
    provider = AMQPProvider(url, "/amq/queue/x", connect_timeout=10)
    publisher = AMQPPublisher(url, "/amq/queue/x", connect_timeout=10)
    try:
        with pytest.raises(ConfigurationError) as refused:
            await provider.start(1)
        with pytest.raises(ConfigurationError) as refused_too:
            await publisher.publish(b"x")
    finally:
        await provider.close()
        await publisher.close()
    assert "authentication" in str(refused.value).lower()
    shown = [
        _told(refused.value),
        _told(refused_too.value),
        repr(provider),
        repr(publisher),
        _shown(caplog),
        *capfd.readouterr(),
    ]
    for text in shown:
        assert WRONG not in text
