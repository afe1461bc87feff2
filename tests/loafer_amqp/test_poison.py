"""A poison message on RabbitMQ's AMQP 1.0 plugin with a route's default settings: it
backs off and is logged once, with the repeats counted (it used to come back ~200 times
a second at 98% CPU)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from loafer_amqp import AMQPPublisher, AMQPRoute
from loafer_core import Manager
from tests.poison import POISON, Attempts, error_lines

pytestmark = pytest.mark.amqp


async def test_a_poison_message_backs_off_by_default(
    amqp_url: str, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    address = f"/amq/queue/{queue}"
    async with AMQPPublisher(amqp_url, address) as publisher:
        await publisher.publish(POISON)
    attempts = Attempts()

    async def handler(content: Any, metadata: Any) -> bool:
        raise AssertionError("never reached")

    route = AMQPRoute(address, url=amqp_url, handler=handler, translator=attempts)
    with caplog.at_level(logging.WARNING):
        async with Manager([route], shutdown_timeout=5) as manager:
            await manager.wait_started()
            await attempts.wait_for(3, timeout=30)
    # no attempt count on RabbitMQ 3.10's AMQP 1.0: the first delay (1 s) every time
    assert min(attempts.gaps) >= 0.9, attempts.gaps
    lines = error_lines(caplog.records)
    assert len(lines) == 1, lines
    assert "2 repeated error log lines were held back" in caplog.text
