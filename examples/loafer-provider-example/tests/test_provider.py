"""What the kit does not cover: set-up errors, verify, publish and backlog."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from loafer_sqlite_example import SQLiteProvider, create_queue, dead_letters, put

from loafer_core import ConfigurationError
from loafer_core.plugins import load_provider


def test_the_entry_point_names_the_provider() -> None:
    assert load_provider("sqlite-example") is SQLiteProvider


def test_a_missing_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    provider = SQLiteProvider("jobs", path=str(path))
    with pytest.raises(ConfigurationError, match="no database file"):
        asyncio.run(provider.start(1))
    assert not path.exists()
    asyncio.run(provider.close())  # close follows a failed start


def test_a_missing_queue_says_how_to_create_it(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    create_queue(path, "other")
    provider = SQLiteProvider("jobs", path=str(path))
    with pytest.raises(ConfigurationError, match=r"create_queue\(.*'jobs'\)"):
        asyncio.run(provider.verify())
    with pytest.raises(ConfigurationError, match="no queue 'jobs'"):
        asyncio.run(provider.start(1))


@pytest.mark.parametrize(
    ("options", "named"),
    [({"lease": 0}, "lease"), ({"wait": -1}, "wait"), ({"lease": True}, "lease")],
)
def test_wrong_settings_are_refused(options: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigurationError, match=f"SQLiteProvider\\({named}="):
        SQLiteProvider("jobs", path="q.db", **options)  # type: ignore[arg-type]


def test_publish_backlog_and_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    create_queue(path, "jobs")

    async def main() -> None:
        provider = SQLiteProvider("jobs", path=str(path), wait=0)
        await provider.start(1)
        try:
            await provider.publish("hello", headers={"k": "v"})
            await provider.publish(b"later", delay=60)
            assert await provider.backlog() == 1
            [delivery] = await provider.fetch(10)
            assert (delivery.body, delivery.metadata["headers"]) == (b"hello", {"k": "v"})
            from loafer_core import REJECT

            await provider.settle(delivery, REJECT("bad"))
        finally:
            await provider.close()

    asyncio.run(main())
    [dead] = dead_letters(path, "jobs")
    assert (dead.body, dead.reason, dead.attempts) == (b"hello", "bad", 1)
    put(path, "jobs", b"more")
