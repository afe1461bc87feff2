"""Fixtures for the ``loafer`` command's tests (the brokers' URLs, ``sqs`` and
``make_queue`` come from tests/_brokers.py)."""

from collections.abc import AsyncIterator

import pytest

from tests.loafer_rabbit.conftest import RabbitAdmin, open_admin


@pytest.fixture
async def admin(rabbit_url: str) -> AsyncIterator[RabbitAdmin]:
    """RabbitMQ's admin client (as in tests/loafer_rabbit)."""
    async with open_admin(rabbit_url) as helper:
        yield helper
