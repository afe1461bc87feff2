"""No SASL password in any log record (DEBUG included), exception or repr."""

from __future__ import annotations

import logging
import traceback

import pytest

from loafer_core.errors import ConfigurationError, LoaferError
from loafer_kafka import KafkaProvider, KafkaPublisher, KafkaRoute
from loafer_kafka.errors import mask_url, scrub

pytestmark = pytest.mark.kafka

SECRET = "kafka-s3cret-passw0rd"
URL = f"kafka://loafer:{SECRET}@127.0.0.1:9/"


def test_mask_url_and_scrub() -> None:
    assert mask_url(URL) == "kafka://loafer:******@127.0.0.1:9/"
    assert SECRET not in scrub(f"failed {URL},127.0.0.2:9093 there")


def test_reprs_and_construction_errors_hide_the_password() -> None:
    provider = KafkaProvider("orders", url=URL)
    route = KafkaRoute("orders", url=URL, handler=lambda c, m: True)
    publisher = KafkaPublisher("orders", url=URL)
    texts = [repr(provider.settings), repr(provider), repr(route), repr(publisher)]
    texts += [repr(provider.description()), repr(publisher.description())]
    for text in texts:
        assert SECRET not in text, text
    with pytest.raises(ConfigurationError) as caught:
        KafkaProvider("orders", url=f"amqp://loafer:{SECRET}@h/")
    assert SECRET not in str(caught.value) and "kafka://" in str(caught.value)


async def test_a_failed_start_and_publish_log_and_raise_no_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = KafkaProvider("orders", url=URL, connect_timeout=2)
    with pytest.raises(LoaferError) as caught:
        await provider.start(1)
    await provider.close()
    publisher = KafkaPublisher("orders", url=URL, connect_timeout=2, timeout=2)
    with pytest.raises(LoaferError) as caught2:
        await publisher.publish(b"{}")
    await publisher.close()
    texts = ["".join(traceback.format_exception(e)) for e in (caught.value, caught2.value)]
    texts += [r.getMessage() for r in caplog.records]
    texts += [r.exc_text or "" for r in caplog.records]
    assert caplog.records, "nothing was logged: the test would prove nothing"
    for text in texts:
        assert SECRET not in text, text
