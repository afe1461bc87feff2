"""SQS delayed publish: what is refused before anything is sent (no broker needed)."""

from __future__ import annotations

import pytest

from loafer_core.errors import ConfigurationError
from loafer_sqs import SNSPublisher, SQSPublisher

OPTIONS = {"region_name": "us-east-1", "endpoint_url": "http://127.0.0.1:9"}


async def test_a_fifo_queue_refuses_a_per_message_delay() -> None:
    publisher = SQSPublisher("orders.fifo", **OPTIONS)
    with pytest.raises(ConfigurationError, match="FIFO queue takes no per-message delay"):
        await publisher.publish(b"x", group_id="g", delay=5)
    await publisher.close()


async def test_a_delay_beyond_15_minutes_is_refused() -> None:
    publisher = SQSPublisher("orders", **OPTIONS)
    with pytest.raises(ConfigurationError, match="beyond the broker's limit of 900s"):
        await publisher.publish(b"x", delay=901)
    await publisher.close()


async def test_sns_refuses_any_delay() -> None:
    publisher = SNSPublisher("topic", **OPTIONS)
    assert publisher.delay_support.value == "none"
    with pytest.raises(ConfigurationError, match="SNS delivers at once"):
        await publisher.publish(b"x", delay=1)
    await publisher.close()
