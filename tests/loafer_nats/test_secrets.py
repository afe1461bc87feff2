"""No password or token in any log record (DEBUG included), exception or repr."""

from __future__ import annotations

import logging

import pytest

from loafer_core.errors import ConfigurationError, LoaferError
from loafer_nats import NATSProvider, NATSPublisher, NATSRoute, mask_url
from loafer_nats.errors import scrub, secrets_of

from .conftest import NatsAdmin

pytestmark = pytest.mark.nats

PASSWORD = "pa55/w?rd#secret"
TOKEN = "t0ken-s3cr3t-value"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://user:pw-secret@host:4222", "nats://user:******@host:4222"),
        ("nats://tok-secret@host:4222", "nats://******@host:4222"),
        ("nats://host:4222", "nats://host:4222"),
        ("tls://u:p%40ss@h", "tls://u:******@h"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_scrub_masks_urls_and_known_secrets() -> None:
    secrets = secrets_of("nats://u:abc%2Fdef@h", {"token": "tok-value"})
    text = "failed nats://u:abc%2Fdef@h:4222 with abc/def and tok-value"
    clean = scrub(text, secrets)
    assert "abc" not in clean and "tok-value" not in clean


def test_reprs_and_construction_errors_hide_secrets() -> None:
    url = f"nats://user:{PASSWORD.replace('/', '%2F').replace('?', '%3F').replace('#', '%23')}@h"
    provider = NATSProvider("s", url=url, connection_options={"token": TOKEN})
    route = NATSRoute("s", url=url, handler=lambda c, m: True)
    publisher = NATSPublisher("x", url=url)
    for text in (repr(provider), provider.url, repr(publisher), repr(route), provider.describe()):
        assert "pa55" not in text and TOKEN not in text
    with pytest.raises(ConfigurationError) as caught:
        NATSProvider("s", url=f"nats://user:{PASSWORD}@h")  # unencoded '/', '?', '#'
    assert "pa55" not in str(caught.value)


async def test_failed_connections_log_and_raise_no_secret(
    caplog: pytest.LogCaptureFixture, admin: NatsAdmin
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = f"nats://user:{TOKEN}@127.0.0.1:1"
    provider = NATSProvider("s", url=bad, connect_timeout=1.0)
    with pytest.raises(LoaferError) as caught:
        await provider.start(1)
    await provider.close()
    publisher = NATSPublisher("x", url=f"nats://{TOKEN}@127.0.0.1:1", connect_timeout=1.0)
    with pytest.raises(LoaferError) as caught2:
        await publisher.publish(b"{}")
    await publisher.close()
    # and a working connection with credentials the (auth-less) server ignores, at DEBUG
    stream = await admin.stream()
    host = admin.url.partition("://")[2]
    good = NATSProvider(
        stream,
        url=f"nats://user:{TOKEN}@{host}",
        consumer="work",
        poll_timeout=0.5,
        connection_options={"token": TOKEN + "-opt"},
    )
    await good.start(1)
    assert await good.fetch(1) == []
    await good.close()
    texts = [str(caught.value), str(caught2.value)]
    texts += [r.getMessage() for r in caplog.records]
    texts += [r.exc_text or "" for r in caplog.records]
    assert caplog.records, "nothing was logged: the test would prove nothing"
    for text in texts:
        assert TOKEN not in text, text
