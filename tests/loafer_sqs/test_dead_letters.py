"""What an SQS REJECT sends to the dead-letter queue: the common dead-letter keys as
message attributes, while SQS's 10 attributes leave room."""

from __future__ import annotations

import logging

import pytest

from loafer_core.deadletters import DEAD_ATTEMPTS, DEAD_KEYS, DEAD_ORIGIN, DEAD_REASON
from loafer_core.provider import Delivery
from loafer_sqs._dead_letter import Reject, dead_letter_entry


def _delivery(attributes: int) -> Delivery:
    raw = {
        "Body": "{}",
        "MessageAttributes": {
            f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(attributes)
        },
    }
    return Delivery(raw=raw, body="{}", message_id="m-1", metadata={"headers": {}}, attempt=3)


def test_the_common_keys_are_attributes() -> None:
    entry = dead_letter_entry(0, Reject(_delivery(0), "bad"), fifo=False, origin="orders")
    attributes = entry["MessageAttributes"]
    assert set(DEAD_KEYS) <= set(attributes)
    assert attributes[DEAD_REASON]["StringValue"] == "bad"
    assert attributes[DEAD_ATTEMPTS]["StringValue"] == "3"
    assert attributes[DEAD_ORIGIN]["StringValue"] == "orders"


def test_no_room_is_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="loafer_sqs"):
        entry = dead_letter_entry(0, Reject(_delivery(8), "bad"), fifo=False, origin="q")
    assert len(entry["MessageAttributes"]) == 10
    [record] = caplog.records
    assert "no room for attributes" in record.getMessage()
