"""RedisRoute, the public names, the entry points, and bad input through a whole route."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from loafer_core import Manager
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import ACCEPT
from loafer_core.plugins import load_provider
from loafer_redis import RedisProvider, RedisPublisher, RedisRoute
from tests.loafer_redis.conftest import RedisAdmin

pytestmark = pytest.mark.redis


def test_public_names_and_entry_points() -> None:
    import importlib.metadata as metadata

    assert load_provider("redis") is RedisProvider
    publishers = {ep.name: ep for ep in metadata.entry_points(group="loafer.publishers")}
    assert publishers["redis"].load() is RedisPublisher


def test_route_splits_provider_and_route_options() -> None:
    async def handler(content: Any, metadata: Any) -> None:
        return None

    route = RedisRoute(
        "orders",
        url="redis://127.0.0.1:6379/0",
        group="billing",
        handler=handler,
        max_concurrency=7,
        lease=5,
        create=True,
    )
    assert isinstance(route.provider, RedisProvider)
    assert route.provider.group == "billing"
    assert route.provider.lease_duration == 5
    assert route.max_concurrency == 7
    assert route.name == "redis:orders:billing"
    with pytest.raises(ConfigurationError):
        RedisRoute("orders", handler=handler, no_such_option=1)


async def test_bad_input_reaches_the_error_handler_and_the_route_runs_on(
    redis_url: str, admin: RedisAdmin
) -> None:
    stream = await admin.stream()
    big = b'{"big": "' + b"z" * 1_000_000 + b'"}'
    await admin.put(stream, b"not json at all")
    await admin.put(stream, b"\xff\xfe")
    await admin.client.xadd(stream, {"other": b"no body field"})
    await admin.put(stream, big)  # 1 MB, valid
    await admin.put(stream, b'{"plain": true}')  # no headers at all
    errors: list[type[BaseException]] = []
    handled: list[Any] = []
    finished = asyncio.Event()

    def check() -> None:
        if len(errors) == 3 and len(handled) == 2:
            finished.set()

    async def handler(content: Any, metadata: Any) -> bool:
        handled.append(next(iter(content)))
        check()
        return True

    async def error_handler(exc_type: Any, exc: Any, raw: Any) -> Any:
        errors.append(exc_type)
        check()
        return ACCEPT

    route = RedisRoute(stream, url=redis_url, handler=handler, error_handler=error_handler)
    async with Manager([route]):
        async with asyncio.timeout(20):
            await finished.wait()
    assert sorted(handled) == ["big", "plain"]
    assert all(issubclass(e, ValueError) for e in errors), errors
    assert await admin.pending(stream) == []
