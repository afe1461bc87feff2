"""RedisSettings and RedisPublisherSettings: built both ways, checked, secrets kept out,
read by the config loader, and a provider built from one against a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import textwrap
import typing
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from loafer_cli.config import build_manager, build_routes, load_config
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import ACCEPT
from loafer_core.settings import Connection, SettingError, Settings, flat_names
from loafer_redis import (
    ConsumerGroup,
    DeadLetters,
    DelayedRetries,
    RedisProvider,
    RedisPublisher,
    RedisPublisherSettings,
    RedisRoute,
    RedisSettings,
    RedisTimeouts,
    Trimming,
)
from tests.loafer_redis.conftest import RedisAdmin

TOKEN = "t0ken-5ecret"  # a lone redis://token@host is a password
PASSWORD = "pw-5ecret"


def test_the_provider_settings_built_both_ways_are_equal() -> None:
    url = f"redis://{TOKEN}@127.0.0.1:6379/0"
    flat = RedisProvider(
        "orders",
        url=url,
        connection_options={"client_name": "x"},
        connect_timeout=3,
        close_timeout=4,
        block=0.5,
        socket_timeout=6,
        group="billing",
        create=True,
        group_start="$",
        consumer="worker",
        lease=60,
        reclaim_interval=2,
        forget_consumers_after=None,
        delayed_retry=False,
        delayed_key="orders:later",
        dead_letter="orders:rejected",
        dead_letter_maxlen=100,
        body_field="payload",
        max_connections=4,
    )
    built = RedisSettings(
        stream="orders",
        connection=Connection(url=url, options={"client_name": "x"}),
        timeouts=RedisTimeouts(connect=3, close=4, poll=0.5, call=6),
        group=ConsumerGroup(
            name="billing",
            create=True,
            start="$",
            consumer="worker",
            lease=60,
            reclaim_interval=2,
            forget_after=None,
        ),
        retries=DelayedRetries(enabled=False, key="orders:later"),
        dead_letters=DeadLetters(stream="orders:rejected", maxlen=100),
        body_field="payload",
        max_connections=4,
    )
    assert flat.settings == built
    provider = RedisProvider(built)
    assert provider.settings is built
    assert (provider.stream, provider.group, provider.lease_duration) == ("orders", "billing", 60)
    assert provider.delayed_key == "orders:later"
    assert provider.dead_letter_stream == "orders:rejected"
    assert provider.body_field == "payload"
    assert TOKEN not in provider.url
    # the defaults are today's
    assert RedisProvider("s").settings == RedisSettings(stream="s")
    assert RedisProvider(stream="s").settings == RedisSettings(stream="s")
    default = RedisProvider("s")
    assert default.delayed_key == "s:loafer:delayed"
    assert default.dead_letter_stream == "s:dead"
    assert default.url == "redis://127.0.0.1:6379/0"


def test_the_publisher_settings_built_both_ways_are_equal() -> None:
    flat = RedisPublisher(
        "orders",
        url=f"redis://:{PASSWORD}@127.0.0.1:6379/1",
        maxlen=10,
        approximate=False,
        body_field="payload",
        pipeline=50,
        socket_timeout=2,
        connect_timeout=3,
        max_connections=2,
        type_header=None,
    )
    built = RedisPublisherSettings(
        stream="orders",
        connection=Connection(url=f"redis://:{PASSWORD}@127.0.0.1:6379/1"),
        timeouts=RedisTimeouts(call=2, connect=3),
        trimming=Trimming(maxlen=10, approximate=False),
        body_field="payload",
        pipeline=50,
        max_connections=2,
        type_header=None,
    )
    assert flat.settings == built
    publisher = RedisPublisher(built)
    assert publisher.command(b"x")[:6] == ("XADD", "orders", "MAXLEN", "=", 10, "*")
    assert RedisPublisher("s").settings == RedisPublisherSettings(stream="s")


def test_settings_and_options_together_are_refused() -> None:
    settings = RedisSettings(stream="orders")
    with pytest.raises(ConfigurationError, match=r"RedisProvider: given a RedisSettings and"):
        RedisProvider(settings, lease=5)
    with pytest.raises(ConfigurationError, match="'stream' given twice"):
        RedisProvider("orders", stream="other")
    with pytest.raises(ConfigurationError, match="RedisPublisher: given a RedisPublisherSettings"):
        RedisPublisher(RedisPublisherSettings(stream="s"), maxlen=5)


@pytest.mark.parametrize(
    ("owner", "option", "value", "expected"),
    [
        (RedisProvider, "stream", "", "a non-empty string"),
        (RedisProvider, "group", "", "a non-empty string"),
        (RedisProvider, "consumer", 7, "a non-empty string"),
        (RedisProvider, "group_start", "later", "'0', '$' or an entry id"),
        (RedisProvider, "lease", 0.05, "a number >= 0.1"),
        (RedisProvider, "reclaim_interval", 0, "a number >= 0.01"),
        (RedisProvider, "forget_consumers_after", -1, "a number >= 0.01, 0 or None"),
        (RedisProvider, "block", float("inf"), "a number >= 0.01"),
        (RedisProvider, "socket_timeout", "10", "a number >= 0.1"),
        (RedisProvider, "connect_timeout", True, "a number >= 0.1"),
        (RedisProvider, "close_timeout", 0, "a number >= 0.1"),
        (RedisProvider, "dead_letter", "", "True, False or a stream name"),
        (RedisProvider, "dead_letter_maxlen", 0, "an int >= 1 or None"),
        (RedisProvider, "body_field", "", "a non-empty string or None"),
        (RedisProvider, "max_connections", 1, "an int >= 2"),
        (RedisProvider, "url", "http://localhost", "a redis://, rediss:// or unix:// URL"),
        (RedisPublisher, "stream", "", "a non-empty string"),
        (RedisPublisher, "maxlen", 0, "an int >= 1 or None"),
        (RedisPublisher, "pipeline", 0, "an int >= 1"),
        (RedisPublisher, "socket_timeout", 0, "a number >= 0.1"),
        (RedisPublisher, "connect_timeout", -1, "a number >= 0.1"),
        (RedisPublisher, "type_header", "", "a non-empty string or None"),
        (RedisPublisher, "type_header", "body", "a field other than the body field"),
        (RedisPublisher, "url", "amqp://x", "a redis://, rediss:// or unix:// URL"),
    ],
)
def test_each_check_refuses_a_wrong_value_naming_the_flat_option(
    owner: type[Any], option: str, value: Any, expected: str
) -> None:
    options = {"stream": "s", option: value}
    with pytest.raises(SettingError) as caught:
        owner(**options)
    message = str(caught.value)
    assert message.startswith(f"{owner.__name__}({option}=...): expected {expected}"), message


def test_the_old_tolerances_are_kept() -> None:
    """What today's constructor took still builds: 0 forgets at every read, an empty
    delayed key is the default one, a stream id starts a created group."""
    provider = RedisProvider("s", forget_consumers_after=0, delayed_key="", group_start="5-0")
    assert provider.settings.group.forget_after == 0
    assert provider.delayed_key == "s:loafer:delayed"
    assert RedisProvider("s", dead_letter=False).dead_letter_stream is None
    assert RedisProvider("s", body_field=None).body_field is None


def test_a_connection_with_what_redis_does_not_use_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"does not use Connection\.tls"):
        RedisSettings(stream="s", connection=Connection(url="redis://h", tls=object()))
    with pytest.raises(ConfigurationError, match=r"does not use Connection\.name.*client_name"):
        RedisPublisherSettings(stream="s", connection=Connection(url="redis://h", name="x"))


def test_secrets_are_absent_from_reprs_and_errors() -> None:
    urls = [
        f"redis://{TOKEN}@127.0.0.1:6379/0",
        f"redis://user:{PASSWORD}@127.0.0.1:6379/0",
        f"rediss://127.0.0.1:6379/0?password={PASSWORD}",
    ]
    for url in urls:
        settings = RedisSettings(stream="s", connection=Connection(url=url))
        publisher = RedisPublisherSettings(stream="s", connection=Connection(url=url))
        for text in (repr(settings), repr(publisher), repr(RedisProvider(settings))):
            assert TOKEN not in text and PASSWORD not in text, text
    wrong = [  # refused URLs that hold a secret: never shown
        f"http://{TOKEN}@127.0.0.1",
        f"redis://user:{PASSWORD}#x@127.0.0.1",
        f"redis://{TOKEN}@127.0.0.1/0#frag",
    ]
    for url in wrong:
        for build in (
            partial(RedisProvider, "s", url=url),
            partial(RedisPublisher, "s", url=url),
            partial(RedisSettings, stream="s", connection=Connection(url=url)),
        ):
            with pytest.raises(ConfigurationError) as caught:
                build()
            text = f"{caught.value} {caught.value!r}"
            assert TOKEN not in text and PASSWORD not in text, text
            assert "url=" in text


def test_the_settings_types_are_real_and_every_flat_name_is_kept() -> None:
    for settings_type in (RedisSettings, RedisPublisherSettings):
        stack: list[type[Any]] = [settings_type]
        while stack:
            cls = stack.pop()
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                assert not isinstance(f.type, str), f"{cls.__name__}.{f.name}"
                assert hints[f.name] == f.type
                if isinstance(f.type, type) and issubclass(f.type, Settings):
                    stack.append(f.type)
    assert RedisProvider.settings_type is RedisSettings
    assert RedisPublisher.settings_type is RedisPublisherSettings
    assert set(flat_names(RedisSettings)) >= {
        "stream", "url", "group", "create", "group_start", "consumer", "lease",
        "reclaim_interval", "forget_consumers_after", "block", "delayed_retry",
        "delayed_key", "dead_letter", "dead_letter_maxlen", "body_field", "socket_timeout",
        "connect_timeout", "close_timeout", "max_connections", "connection_options",
    }  # fmt: skip
    assert set(flat_names(RedisPublisherSettings)) >= {
        "stream", "url", "maxlen", "approximate", "body_field", "pipeline", "socket_timeout",
        "connect_timeout", "max_connections", "connection_options", "type_header",
    }  # fmt: skip


def test_the_route_builds_its_provider_from_the_flat_names() -> None:
    async def handler(content: Any, metadata: Any) -> None:
        return None

    route = RedisRoute("orders", handler=handler, group="billing", lease=5, block=0.5)
    assert isinstance(route.provider, RedisProvider)
    assert route.provider.settings == RedisSettings(
        stream="orders",
        group=ConsumerGroup(name="billing", lease=5),
        timeouts=RedisTimeouts(poll=0.5),
    )
    assert route.name == "redis:orders:billing"


# -- config files ------------------------------------------------------------------------

APP = "tests.loafer_cli.config_app"


def write(directory: Path, text: str) -> Path:
    path = directory / "loafer.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


ROUTE = f"""
[[routes]]
name = "orders"
provider = "redis"
queue = "orders"
handler = "{APP}:handle"
[routes.provider_options]
"""


def test_a_config_file_builds_the_provider_from_its_settings(tmp_path: Path) -> None:
    text = ROUTE + 'group = "billing"\nlease = 5\ndead_letter = false\nblock = "${BLOCK}"\n'
    (route,) = build_routes(load_config(write(tmp_path, text), {"BLOCK": "0.5"}))
    assert isinstance(route.provider, RedisProvider)
    assert route.provider.settings == RedisSettings(
        stream="orders",
        group=ConsumerGroup(name="billing", lease=5),
        dead_letters=DeadLetters(stream=False),
        timeouts=RedisTimeouts(poll=0.5),
    )


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ('lease = "long"', "provider_options.lease: expected float, got 'long'"),
        ("create = 1", "provider_options.create: expected bool, got 1"),
        ("group = 5", "provider_options.group: expected str, got 5"),
        ("dead_letter_maxlen = 0.5", "provider_options.dead_letter_maxlen: expected "),
        ("lease = 0", "provider_options.lease: expected a number >= 0.1, got 0"),
    ],
)
def test_a_config_file_with_a_wrong_provider_option_is_refused(
    tmp_path: Path, option: str, expected: str
) -> None:
    path = write(tmp_path, ROUTE + option + "\n")
    with pytest.raises(ConfigurationError) as caught:
        build_routes(load_config(path, {}))
    assert expected in str(caught.value)


def test_a_config_file_with_a_wrong_publisher_option_is_refused(tmp_path: Path) -> None:
    text = f"""
    [publishers.audit]
    publisher = "redis"
    target = "audit"
    url = "redis://{TOKEN}@127.0.0.1:1/0"
    options = {{ maxlen = "many" }}

    [[routes]]
    name = "orders"
    provider = "memory"
    queue = "orders"
    handler = "{APP}:handle"
    publish_to = "audit"
    """
    with pytest.raises(ConfigurationError) as caught:
        build_manager(load_config(write(tmp_path, text), {}))
    message = str(caught.value)
    assert "publishers.audit.options.maxlen: expected" in message and "'many'" in message
    assert TOKEN not in message
    manager = build_manager(
        load_config(write(tmp_path, text.replace('"many"', "10")), {})
    )  # the right type: built
    (publisher,) = manager.routes[0].publish_to.publishers.values()  # type: ignore[union-attr]
    assert isinstance(publisher, RedisPublisher)
    assert publisher.settings.trimming == Trimming(maxlen=10)


# -- against Redis -----------------------------------------------------------------------


@pytest.mark.redis
async def test_a_provider_and_a_publisher_built_from_settings_round_trip(
    redis_url: str, admin: RedisAdmin
) -> None:
    stream = await admin.stream()
    connection = Connection(url=redis_url)
    publisher = RedisPublisher(RedisPublisherSettings(stream=stream, connection=connection))
    provider = RedisProvider(
        RedisSettings(
            stream=stream,
            connection=connection,
            timeouts=RedisTimeouts(poll=0.2),
            group=ConsumerGroup(lease=5),
        )
    )
    async with publisher:
        await publisher.publish(b'{"n": 1}', headers={"h": "v"})
    await provider.start(4)
    try:
        got: list[Any] = []
        async with asyncio.timeout(10):
            while not got:
                got.extend(await provider.fetch(4))
        [delivery] = got
        assert delivery.body == b'{"n": 1}'
        assert delivery.metadata["headers"] == {"h": "v"}
        await provider.settle(delivery, ACCEPT)
    finally:
        await provider.close()
    assert await admin.pending(stream) == []
