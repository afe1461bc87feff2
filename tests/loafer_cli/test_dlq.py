"""``loafer dlq list|show|replay|purge`` on a real Redis route (the command in a
subprocess, loading ``app:routes`` as ``loafer check`` does)."""

from __future__ import annotations

import asyncio
import json
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio

from loafer_cli.dlq import parse_duration
from loafer_core.errors import ConfigurationError, RejectMessage
from loafer_core.manager import Manager
from loafer_core.route import Route
from loafer_core.testing import eventually
from loafer_redis import RedisProvider
from tests.loafer_cli.runner import loafer
from tests.loafer_redis.conftest import keys_of

pytestmark = pytest.mark.redis

APP = textwrap.dedent(
    """
    import os

    from loafer_core import Route
    from loafer_redis import RedisProvider


    async def handler(message, metadata):
        return True


    routes = [Route(RedisProvider(os.environ["STREAM"], url=os.environ["REDIS_URL"]), handler,
                    name="orders")]
    """
)


async def _reject(url: str, stream: str, n: int) -> None:
    client = redis.asyncio.Redis.from_url(url)
    try:
        await client.xgroup_create(stream, "loafer", id="0", mkstream=True)
        for i in range(n):
            await client.xadd(stream, {"body": json.dumps({"i": i})})
    finally:
        await client.aclose()

    async def handler(content: dict[str, int], metadata: object) -> None:
        raise RejectMessage("odd" if content["i"] % 2 else "even")

    provider = RedisProvider(stream, url=url, block=0.5)
    store = provider.dead_letter_store()
    async with Manager([Route(provider, handler)]), store:

        async def all_dead() -> bool:
            return await store.count() == n

        await eventually(all_dead, timeout=20, what=f"{n} dead letters")


async def _stream_length(url: str, stream: str) -> int:
    client = redis.asyncio.Redis.from_url(url)
    try:
        return int(await client.xlen(stream))
    finally:
        await client.aclose()


@pytest.fixture
def project(tmp_path: Path, redis_url: str) -> Iterator[tuple[Path, dict[str, str]]]:
    stream = f"loafer-dlq-cli-{uuid.uuid4().hex[:10]}"
    (tmp_path / "app.py").write_text(APP)
    asyncio.run(_reject(redis_url, stream, 4))
    yield tmp_path, {"STREAM": stream, "REDIS_URL": redis_url}

    async def clean() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        await client.delete(*keys_of(stream))
        await client.aclose()

    asyncio.run(clean())


def test_list_show_replay_purge(project: tuple[Path, dict[str, str]], redis_url: str) -> None:
    cwd, env = project
    listed = loafer("dlq", "list", "app:routes", cwd=cwd, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "orders" in listed.stdout and " 4 " in listed.stdout and "exactly-once" in listed.stdout

    shown = loafer("dlq", "show", "app:routes", "--json", "--limit", "3", cwd=cwd, env=env)
    assert shown.returncode == 0, shown.stderr
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert len(rows) == 3 and rows[0]["route"] == "orders"
    assert {r["reason"] for r in rows} <= {"odd", "even"} and rows[0]["attempts"] == 1
    assert rows[0]["origin"] == env["STREAM"] and rows[0]["first_failure"]

    dry = loafer("dlq", "replay", "app:routes", "--dry-run", cwd=cwd, env=env)
    assert dry.returncode == 0 and "4 would be replayed" in dry.stdout, dry.stdout + dry.stderr
    before = asyncio.run(_stream_length(redis_url, env["STREAM"]))

    evens = loafer("dlq", "replay", "app:routes", "--reason", "even", cwd=cwd, env=env)
    assert evens.returncode == 0 and "orders: 2 replayed" in evens.stdout, evens.stderr
    assert asyncio.run(_stream_length(redis_url, env["STREAM"])) == before + 2

    asked = loafer("dlq", "purge", "app:routes", cwd=cwd, env=env, stdin="n\n")
    assert asked.returncode == 1 and "nothing purged" in asked.stderr
    purged = loafer("dlq", "purge", "app:routes", "--yes", cwd=cwd, env=env)
    assert purged.returncode == 0 and "orders: 2 purged" in purged.stdout, purged.stderr
    again = loafer("dlq", "list", "app:routes", cwd=cwd, env=env)
    assert " 0 " in again.stdout


def test_errors_are_said(project: tuple[Path, dict[str, str]]) -> None:
    cwd, env = project
    done = loafer("dlq", "show", "app:routes", "--route", "nope", cwd=cwd, env=env)
    assert done.returncode == 78 and "--route nope: no such route" in done.stderr
    done = loafer("dlq", "replay", "app:routes", "--older-than", "soon", cwd=cwd, env=env)
    assert done.returncode == 78 and "--older-than 'soon'" in done.stderr


def test_parse_duration() -> None:
    assert parse_duration("90") == 90 and parse_duration("15m") == 900
    assert parse_duration("2h") == 7200 and parse_duration("7d") == 7 * 86400
    with pytest.raises(ConfigurationError):
        parse_duration("-1s")
