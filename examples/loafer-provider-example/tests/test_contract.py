"""The SQLite example passes the whole loafer-core conformance kit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import pytest
from loafer_sqlite_example import SQLiteProvider, store

from loafer_core.provider import Capabilities, Provider
from loafer_core.testing import ProviderContract


class TestSQLiteContract(ProviderContract):
    capabilities: ClassVar[Capabilities] = SQLiteProvider.capabilities
    timeout: ClassVar[float] = 30.0
    redelivery_timeout: ClassVar[float] = 5.0
    #: a short lease, so the lease tests take a second or two
    lease: ClassVar[float] = 1.0
    #: below the lease: what a closed provider held must not be left to the lease
    given_back_within: ClassVar[float] = 0.8
    #: settlements are single transactions, nothing arrives late: a short watch will do
    duplicate_window: ClassVar[float] = 0.5

    path: Path

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.path = tmp_path / "queues.db"

    async def make_provider(self, queue: str) -> Provider:
        return SQLiteProvider(queue, path=str(self.path), lease=self.lease, wait=0.5)

    async def create_queue(self, queue: str) -> None:
        store.create_queue(self.path, queue)

    async def delete_queue(self, queue: str) -> None:
        store.delete_queue(self.path, queue)

    async def put(self, queue: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        store.put(self.path, queue, body, headers)

    async def put_many(self, queue: str, bodies: Sequence[bytes]) -> None:
        store.put_many(self.path, queue, bodies)

    async def dead_letters(self, queue: str) -> list[bytes] | None:
        return [dead.body for dead in store.dead_letters(self.path, queue)]
