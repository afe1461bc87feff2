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
    await admin.client.xadd(stream, {"other": b"no body field"})  # its fields: handled
    await admin.put(stream, big)  # 1 MB, valid
    await admin.put(stream, b'{"plain": true}')  # no headers at all
    errors: list[type[BaseException]] = []
    handled: list[Any] = []
    finished = asyncio.Event()

    def check() -> None:
        if len(errors) == 2 and len(handled) == 3:
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
    assert sorted(handled) == ["big", "other", "plain"]
    assert all(issubclass(e, ValueError) for e in errors), errors
    assert await admin.pending(stream) == []


async def test_entries_written_by_other_clients_reach_the_handler_as_their_fields(
    redis_url: str, admin: RedisAdmin
) -> None:
    """``XADD orders * order 1 sku x`` (no ``body`` field, as redis-py, a Node or Go client
    or redis-cli write): the handler gets the fields as a dict, with the default
    translator; loafer's own body-field entries still decode as JSON."""
    stream = await admin.stream()
    await admin.client.execute_command("XADD", stream, "*", "order", "1", "sku", "x")
    await admin.client.xadd(stream, {"order": "2", "blob": b"\xff\x00"})
    await admin.put(stream, b'{"order": 3}')
    got: list[tuple[Any, Any]] = []
    done = asyncio.Event()

    async def handler(content: Any, metadata: Any) -> bool:
        got.append((content, metadata["headers"]))
        if len(got) == 3:
            done.set()
        return True

    async with Manager([RedisRoute(stream, url=redis_url, handler=handler)]):
        await asyncio.wait_for(done.wait(), 20)
    assert [content for content, _ in got] == [
        {"order": "1", "sku": "x"},
        {"order": "2", "blob": b"\xff\x00"},  # not UTF-8: bytes
        {"order": 3},
    ]
    assert got[0][1] == {"order": "1", "sku": "x"}  # the fields are the headers too
    assert await admin.pending(stream) == []


async def test_body_field_picks_the_single_field_format_or_none_takes_every_field(
    redis_url: str, admin: RedisAdmin
) -> None:
    stream = await admin.stream(group=None)
    await admin.client.xadd(stream, {"payload": b'{"n": 1}', "source": "api"})
    await admin.client.xadd(stream, {"body": "not json", "source": "legacy"})
    await admin.client.xgroup_create(stream, "single", id="0")
    await admin.client.xgroup_create(stream, "fields", id="0")
    got: dict[str, list[Any]] = {"single": [], "fields": []}
    done = asyncio.Event()

    def collect(group: str) -> Any:
        async def handler(content: Any, metadata: Any) -> bool:
            got[group].append(content)
            if sum(map(len, got.values())) == 4:
                done.set()
            return True

        return handler

    async def error_handler(exc_type: Any, exc: Any, raw: Any) -> bool:
        raise AssertionError(f"no entry should fail: {exc!r} on {raw!r}")

    routes = [
        RedisRoute(
            stream,
            url=redis_url,
            group="single",
            body_field="payload",
            handler=collect("single"),
            error_handler=error_handler,
        ),
        RedisRoute(
            stream, url=redis_url, group="fields", body_field=None, handler=collect("fields")
        ),
    ]
    async with Manager(routes):
        await asyncio.wait_for(done.wait(), 20)
    # body_field="payload": that field decoded; the entry without it as its fields
    assert got["single"] == [{"n": 1}, {"body": "not json", "source": "legacy"}]
    # body_field=None: every entry as its fields, a body field included
    assert got["fields"] == [
        {"payload": '{"n": 1}', "source": "api"},
        {"body": "not json", "source": "legacy"},
    ]
    with pytest.raises(ConfigurationError, match="body_field"):
        RedisProvider(stream, body_field="")
