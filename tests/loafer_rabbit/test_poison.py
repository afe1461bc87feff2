"""A poison message on RabbitMQ with a route's default settings: it backs off and is
logged once, with the repeats counted (it used to come back ~200 times a second)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from loafer_core import Manager
from loafer_rabbit import RabbitRoute
from tests.loafer_rabbit.conftest import RabbitAdmin
from tests.poison import POISON, Attempts, error_lines

pytestmark = pytest.mark.rabbit


async def test_a_poison_message_backs_off_by_default(
    admin: RabbitAdmin, rabbit_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = await admin.declare()
    attempts = Attempts()

    async def handler(content: Any, metadata: Any) -> bool:
        raise AssertionError("never reached")

    route = RabbitRoute(name, url=rabbit_url, handler=handler, translator=attempts)
    provider = route.provider
    admin.track(provider.retry_queue, provider.dead_letter_queue)
    await admin.put(name, POISON)
    with caplog.at_level(logging.WARNING):
        async with Manager([route], shutdown_timeout=5) as manager:
            await manager.wait_started()
            await attempts.wait_for(3, timeout=30)
    # 1 s, then 2 s (the attempt is counted by the x-loafer-attempt header)
    assert attempts.gaps[0] >= 0.9 and attempts.gaps[1] >= 1.9, attempts.gaps
    lines = error_lines(caplog.records)
    assert len(lines) == 1, lines
    assert "2 repeated error log lines were held back" in caplog.text
