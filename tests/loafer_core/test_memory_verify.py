"""MemoryProvider.verify: the queue exists in its broker; nothing is taken."""

from __future__ import annotations

import pytest

from loafer_core.errors import ConfigurationError
from loafer_core.memory import MemoryBroker, MemoryProvider
from loafer_core.provider import Verifiable

pytestmark = pytest.mark.memory


async def test_verify_takes_nothing_from_a_declared_queue() -> None:
    broker = MemoryBroker()
    broker.declare("q")
    broker.publish_many("q", [b"a", b"b"])
    provider = MemoryProvider(broker, "q")
    assert isinstance(provider, Verifiable)
    await provider.verify()
    assert broker.depth("q") == 2
    assert broker.in_flight("q") == 0


async def test_verify_of_a_missing_queue_names_it() -> None:
    provider = MemoryProvider(MemoryBroker(), "nowhere")
    with pytest.raises(ConfigurationError, match="'nowhere'"):
        await provider.verify()
