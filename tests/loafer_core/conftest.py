from __future__ import annotations

import pytest

from loafer_core.memory import HISTORY, MemoryBroker, MemoryProvider


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "loafer_core" in item.nodeid.split("/")[1:2]:
            item.add_marker(pytest.mark.memory)


@pytest.fixture
def broker() -> MemoryBroker:
    b = MemoryBroker(history=HISTORY)
    b.declare("q")
    return b


@pytest.fixture
def provider(broker: MemoryBroker) -> MemoryProvider:
    return MemoryProvider(broker, "q", wait=0.2)
