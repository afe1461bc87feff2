"""No password in any log line (at DEBUG), exception or repr."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio

from loafer_core import Manager
from loafer_core.errors import ConfigurationError, LoaferError
from loafer_redis import RedisProvider, RedisPublisher, RedisRoute, mask_url
from tests.loafer_redis.conftest import RedisAdmin

pytestmark = pytest.mark.redis

PASSWORD = "s3cr3t-" + uuid.uuid4().hex


def with_credentials(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}:{parts.port or 6379}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.fixture
async def secret_url(redis_url: str) -> AsyncIterator[str]:
    """A URL with a user and password that Redis accepts (an ACL user made for the test)."""
    user = f"loafer-test-{uuid.uuid4().hex[:8]}"
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        try:
            await client.acl_setuser(
                user,
                enabled=True,
                passwords=[f"+{PASSWORD}"],
                keys=["*"],
                channels=["*"],
                commands=["+@all"],
            )
        except redis.exceptions.ResponseError as exc:
            pytest.skip(f"cannot create an ACL user on this Redis: {exc}")
        yield with_credentials(redis_url, user, PASSWORD)
    finally:
        try:
            await client.acl_deluser(user)
        finally:
            await client.aclose()


def test_mask_url() -> None:
    assert mask_url("redis://u:pw@host:6379/0") == "redis://u:******@host:6379/0"
    assert mask_url("redis://:pw@host/0") == "redis://:******@host/0"
    assert mask_url("rediss://host/0?password=pw") == "rediss://host/0?password=******"
    assert "p#w" not in mask_url("redis://u:p#w@host/0")


async def test_no_password_anywhere_while_it_runs(
    secret_url: str, admin: RedisAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stream = await admin.stream()
    done = asyncio.Event()
    seen: list[Any] = []

    async def handler(content: Any, metadata: Any) -> bool:
        seen.append(content)
        if len(seen) == 3:
            done.set()
        return content.get("ok", True)

    route = RedisRoute(stream, url=secret_url, handler=handler, lease=2)
    texts = [repr(route.provider), route.provider.describe(), str(route.provider.url)]
    async with RedisPublisher(stream, url=secret_url) as publisher:
        texts.append(repr(publisher))
        await publisher.publish({"ok": True})
        await publisher.publish({"ok": False})
        await publisher.publish(b"not json")
    async with Manager([route]):
        async with asyncio.timeout(20):
            await done.wait()
    texts.extend(record.getMessage() for record in caplog.records)
    texts.append(caplog.text)
    assert any("redis" in t for t in texts)
    for text in texts:
        assert PASSWORD not in text


async def test_refused_credentials_are_a_configuration_error_without_the_password(
    redis_url: str, admin: RedisAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stream = await admin.stream()
    url = with_credentials(redis_url, "nobody-" + uuid.uuid4().hex[:6], PASSWORD)
    provider = RedisProvider(stream, url=url)
    errors: list[LoaferError] = []
    with pytest.raises(ConfigurationError) as caught:
        await provider.start(5)
    errors.append(caught.value)
    with pytest.raises(ConfigurationError) as caught:
        await provider.verify()
    errors.append(caught.value)
    with pytest.raises(ConfigurationError) as caught:
        await RedisPublisher(stream, url=url).publish(b"x")
    errors.append(caught.value)
    for error in errors:
        assert PASSWORD not in str(error) and PASSWORD not in repr(error)
        assert "refused" in str(error)
        assert error.__cause__ is None or PASSWORD not in str(error.__cause__)
    assert PASSWORD not in caplog.text


async def test_an_unreachable_redis_is_a_provider_error_without_the_password() -> None:
    url = f"redis://user:{PASSWORD}@127.0.0.1:1/0"
    with pytest.raises(LoaferError) as caught:
        await RedisProvider("s", url=url, connect_timeout=1).verify()
    assert PASSWORD not in str(caught.value)
    assert not isinstance(caught.value, ConfigurationError)
