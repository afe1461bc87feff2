"""NATSSettings and NATSPublisherSettings: built both ways, checked, secrets masked, read
by the config loader, and a provider built from one against the real server."""

import asyncio
import dataclasses
import ssl
import sys
import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loafer_cli.config import build_routes, load_config
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import ACCEPT
from loafer_core.settings import Connection, SettingError, Timeouts
from loafer_nats import (
    ConsumerSetup,
    DeadLetters,
    NATSProvider,
    NATSPublisher,
    NATSPublisherSettings,
    NATSRoute,
    NATSSettings,
    StreamSetup,
)
from loafer_nats.settings import DEFAULT_TIMEOUTS

from .conftest import NatsAdmin

PASSWORD = "s3cret-pw"
TOKEN = "t0ken-value"


def test_flat_keywords_and_a_settings_object_build_equal_settings() -> None:
    tls = ssl.create_default_context()
    flat = NATSProvider(
        "ORDERS",
        url="tls://app:pw@h:4222",
        consumer="billing",
        create=True,
        subjects=["orders.>"],
        stream_options={"max_msgs": 10},
        ack_wait=7,
        max_deliver=4,
        filter_subject="orders.new",
        consumer_options={"max_ack_pending": 5},
        dead_letter_subject="dead.orders",
        dead_letter_stream="ORDERS-DEAD",
        poll_timeout=2,
        publish_timeout=3,
        connect_timeout=4,
        close_timeout=5,
        reconnect_wait=6,
        connection_name="me",
        tls=tls,
        connection_options={"token": TOKEN},
    )
    built = NATSSettings(
        stream="ORDERS",
        consumer="billing",
        create=True,
        stream_setup=StreamSetup(subjects=("orders.>",), options={"max_msgs": 10}),
        consumer_setup=ConsumerSetup(
            ack_wait=7, max_deliver=4, filter_subject="orders.new", options={"max_ack_pending": 5}
        ),
        dead_letters=DeadLetters(subject="dead.orders", stream="ORDERS-DEAD"),
        connection=Connection(
            url="tls://app:pw@h:4222", name="me", tls=tls, options={"token": TOKEN}
        ),
        timeouts=Timeouts(connect=4, close=5, poll=2, publish=3, reconnect=6),
    )
    assert flat.settings == built
    provider = NATSProvider(built)
    assert (provider.stream, provider.consumer, provider.dead_letter_subject) == (
        "ORDERS",
        "billing",
        "dead.orders",
    )
    assert provider.lease_duration == 7

    publisher = NATSPublisher("orders.new", url="nats://h:1", stream="ORDERS", timeout=2)
    assert publisher.settings == NATSPublisherSettings(
        subject="orders.new",
        stream="ORDERS",
        connection=Connection(url="nats://h:1", name="loafer:publisher"),
        timeouts=dataclasses.replace(DEFAULT_TIMEOUTS, publish=2),
    )
    assert NATSPublisher(publisher.settings).timeout == 2


def test_defaults_are_today_s() -> None:
    settings = NATSProvider("s").settings
    assert settings.consumer_name == "loafer-s"
    assert settings.connection.url == "nats://127.0.0.1:4222"
    assert settings.timeouts == Timeouts(
        connect=10.0, close=10.0, poll=5.0, publish=10.0, reconnect=1.0
    )
    assert settings.consumer_setup.ack_wait == 30.0
    assert settings.consumer_setup.max_deliver is None
    publisher = NATSPublisher()
    assert publisher.pipeline == 1000 and publisher.timeout == 10.0
    assert publisher.type_header == "type"
    assert publisher.settings.connection.name == "loafer:publisher"


@pytest.mark.parametrize(
    ("options", "named", "expected"),
    [
        ({"stream": "a.b"}, "stream", "a stream name"),
        ({"consumer": "a b"}, "consumer", "a consumer name"),
        ({"subjects": "a.b"}, "subjects", "a list of subjects"),
        ({"ack_wait": 0}, "ack_wait", "seconds > 0"),
        ({"max_deliver": 0}, "max_deliver", "an int >= 1 or None"),
        ({"poll_timeout": -1}, "poll_timeout", "seconds > 0"),
        ({"publish_timeout": "10"}, "publish_timeout", "seconds > 0"),
        ({"connect_timeout": float("nan")}, "connect_timeout", "seconds > 0"),
        ({"close_timeout": True}, "close_timeout", "seconds > 0"),
        ({"reconnect_wait": 0}, "reconnect_wait", "seconds > 0"),
        ({"connection_name": ""}, "connection_name", "a non-empty string"),
    ],
)
def test_each_provider_check_names_the_flat_keyword(
    options: dict[str, Any], named: str, expected: str
) -> None:
    options = {"stream": "s", **options}
    stream = options.pop("stream")
    with pytest.raises(
        SettingError, match=rf"^NATSProvider\({named}=\.\.\.\): expected {expected}"
    ):
        NATSProvider(stream, **options)


@pytest.mark.parametrize(
    ("options", "named", "expected"),
    [
        ({"pipeline": 0}, "pipeline", "an int >= 1"),
        ({"timeout": 0}, "timeout", "seconds > 0"),
        ({"reconnect_wait": -1}, "reconnect_wait", "seconds > 0"),
    ],
)
def test_each_publisher_check_names_the_flat_keyword(
    options: dict[str, Any], named: str, expected: str
) -> None:
    with pytest.raises(
        SettingError, match=rf"^NATSPublisher\({named}=\.\.\.\): expected {expected}"
    ):
        NATSPublisher("x", **options)


def test_unknown_and_doubled_options_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"pol_timeout.*did you mean 'poll_timeout'"):
        NATSProvider("s", pol_timeout=1)
    with pytest.raises(ConfigurationError, match="give one or the other"):
        NATSProvider(NATSSettings(stream="s"), consumer="c")
    with pytest.raises(ConfigurationError, match="given twice"):
        NATSProvider("s", stream="t")
    with pytest.raises(ConfigurationError, match="'timeouts' given with"):
        NATSProvider("s", timeouts=Timeouts(), poll_timeout=1)


def test_secrets_are_absent_from_reprs_and_errors() -> None:
    url = f"nats://user:{PASSWORD}@h:4222"
    settings = NATSSettings(
        stream="s", connection=Connection(url=url, options={"password": PASSWORD, "token": TOKEN})
    )
    publisher = NATSPublisherSettings(connection=Connection(url=f"nats://{TOKEN}@h"))
    for text in (repr(settings), str(settings), repr(publisher), repr(NATSProvider(settings))):
        assert PASSWORD not in text and TOKEN not in text, text
    # a URL that would be read wrongly: refused, never quoted
    bad = f"nats://user:{PASSWORD}/x@h"
    for build in (
        lambda: NATSSettings(stream="s", connection=Connection(url=bad)),
        lambda: NATSPublisherSettings(connection=Connection(url=bad)),
        lambda: NATSProvider("s", url=bad),
        lambda: NATSPublisher("x", url=bad),
    ):
        with pytest.raises(ConfigurationError, match=r"url=\.\.\.") as caught:
            build()
        assert PASSWORD not in str(caught.value)


def test_field_types_are_real_types() -> None:
    for cls in (NATSSettings, NATSPublisherSettings, StreamSetup, ConsumerSetup, DeadLetters):
        for field in dataclasses.fields(cls):
            assert not isinstance(field.type, str), (cls, field.name)
        typing.get_type_hints(cls)


def test_the_route_takes_the_flat_names() -> None:
    route = NATSRoute("ORDERS", consumer="c", reconnect_wait=3, handler=lambda c, m: True)
    assert route.provider.settings.timeouts.reconnect == 3
    with pytest.raises(SettingError, match=r"NATSProvider\(ack_wait=\.\.\.\)"):
        NATSRoute("ORDERS", ack_wait=-1, handler=lambda c, m: True)


@pytest.fixture
def _fresh_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sys, "path", list(sys.path))  # build_routes adds the file's directory
    yield


@pytest.mark.usefixtures("_fresh_path")
def test_a_config_file_option_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loafer.toml"
    path.write_text(
        textwrap.dedent(
            """
            [[routes]]
            name = "orders"
            provider = "nats"
            queue = "ORDERS"
            handler = "tests.loafer_cli.config_app:handle"
            [routes.provider_options]
            url = "nats://127.0.0.1:1"
            max_deliver = "many"
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError) as caught:
        build_routes(load_config(path, {}))
    assert "provider_options.max_deliver: expected int | None, got 'many'" in str(caught.value)
    path.write_text(path.read_text().replace('"many"', "3"), encoding="utf-8")
    (route,) = build_routes(load_config(path, {}))
    assert isinstance(route.provider, NATSProvider)
    assert route.provider.settings.consumer_setup.max_deliver == 3


@pytest.mark.nats
async def test_settings_objects_against_the_real_server(admin: NatsAdmin) -> None:
    stream = await admin.stream()
    connection = Connection(url=admin.url)
    provider = NATSProvider(
        NATSSettings(
            stream=stream,
            consumer="work",
            connection=connection,
            timeouts=dataclasses.replace(DEFAULT_TIMEOUTS, poll=1.0),
        )
    )
    publisher = NATSPublisher(NATSPublisherSettings(subject=f"{stream}.in", connection=connection))
    await provider.start(5)
    try:
        async with publisher:
            await publisher.publish({"n": 1})
        deliveries: list[Any] = []
        async with asyncio.timeout(10):
            while not deliveries:
                deliveries.extend(await provider.fetch(5))
        [delivery] = deliveries
        assert delivery.body == b'{"n": 1}'
        await provider.settle(delivery, ACCEPT)
    finally:
        await provider.close()
    await admin.wait_consumer(stream, num_pending=0, num_ack_pending=0)
