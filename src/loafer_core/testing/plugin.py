"""pytest plugin of loafer-core (registered through the ``pytest11`` entry point).

Fixtures: ``memory_broker``, a fresh :class:`~loafer_core.memory.MemoryBroker` per test.
"""

from __future__ import annotations

import pytest

from loafer_core.memory import HISTORY, MemoryBroker


@pytest.fixture
def memory_broker() -> MemoryBroker:
    """A fresh embedded broker that keeps its settlements (see ``MemoryBroker.settlements``)."""
    return MemoryBroker(history=HISTORY)
