"""PubSubSettings and PubSubPublisherSettings: built both ways, checked, secrets masked,
read by the config loader."""

import dataclasses
import sys
import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from loafer_cli.config import build_routes, load_config
from loafer_core.errors import ConfigurationError
from loafer_core.settings import SettingError, Timeouts
from loafer_pubsub import (
    Endpoint,
    PubSubProvider,
    PubSubPublisher,
    PubSubPublisherSettings,
    PubSubRoute,
    PubSubSettings,
    SubscriptionSetup,
)
from loafer_pubsub.settings import DEFAULT_TIMEOUTS


def test_flat_keywords_and_a_settings_object_build_equal_settings() -> None:
    flat = PubSubProvider(
        "orders-billing",
        project="shop",
        create=True,
        topic="orders",
        ack_deadline=20,
        message_ordering=True,
        max_delivery_attempts=7,
        subscription_options={"retainAckedMessages": True},
        dead_letter_topic="orders-dead",
        max_messages=50,
        poll_interval=0.5,
        emulator_host="127.0.0.1:8085",
        poll_timeout=2,
        publish_timeout=3,
        connect_timeout=4,
        close_timeout=5,
    )
    built = PubSubSettings(
        subscription="orders-billing",
        project="shop",
        create=True,
        setup=SubscriptionSetup(
            topic="orders",
            ack_deadline=20,
            message_ordering=True,
            max_delivery_attempts=7,
            options={"retainAckedMessages": True},
        ),
        dead_letter_topic="orders-dead",
        max_messages=50,
        poll_interval=0.5,
        endpoint=Endpoint(emulator_host="127.0.0.1:8085"),
        timeouts=Timeouts(connect=4, close=5, poll=2, publish=3, reconnect=1),
    )
    assert flat.settings == built
    assert PubSubProvider(built).lease_duration == 20
    publisher = PubSubPublisher("orders", project="shop", timeout=7, max_batch=10, linger=0)
    assert publisher.settings == PubSubPublisherSettings(
        topic="orders",
        project="shop",
        max_batch=10,
        linger=0,
        timeouts=dataclasses.replace(DEFAULT_TIMEOUTS, publish=7),
    )


def test_defaults() -> None:
    settings = PubSubSettings(subscription="sub", project="p")
    assert settings.setup.ack_deadline == 30
    assert settings.max_messages == 500
    assert settings.dead_letter_topic is None
    assert settings.timeouts == DEFAULT_TIMEOUTS
    assert PubSubSettings(subscription="sub", project="p", max_messages=5000).max_messages == 1000
    assert PubSubPublisherSettings(project="p").max_batch == 1000


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("project", "Not A Project", "a Google Cloud project id"),
        ("ack_deadline", 601, "whole seconds from 1 to 600"),
        ("ack_deadline", 1.5, "whole seconds from 1 to 600"),
        ("max_delivery_attempts", 4, "an int from 5 to 100"),
        ("dead_letter_topic", "projects/p/topics/t", "a topic name"),
        ("topic", "goog-topic", "a topic name"),
        ("emulator_host", "localhost", "host:port"),
        ("max_messages", 0, "an int >= 1"),
        ("poll_timeout", -1, "seconds"),
        ("schema", "orders-v1", "projects/<project>/schemas/<schema>"),
        ("schema_encoding", "AVRO", "'JSON' or 'BINARY'"),
    ],
)
def test_each_provider_check_names_the_flat_keyword(
    option: str, value: object, expected: str
) -> None:
    options: dict[str, object] = {"project": "p", option: value}
    with pytest.raises(SettingError) as caught:
        PubSubProvider("sub-name", **options)
    assert f"PubSubProvider({option}=...)" in str(caught.value)
    assert expected in str(caught.value)


def test_names_are_checked() -> None:
    with pytest.raises(SettingError, match=r"subscription=\.\.\."):
        PubSubProvider("ab", project="p")  # too short
    with pytest.raises(SettingError, match=r"topic=\.\.\."):
        PubSubPublisher("a b", project="p")
    with pytest.raises(ConfigurationError, match=r"unknown|unexpected|no option"):
        PubSubProvider("sub-name", project="p", url="http://x")


def test_field_types_are_real_types() -> None:
    for cls in (PubSubSettings, PubSubPublisherSettings, SubscriptionSetup, Endpoint):
        for field in dataclasses.fields(cls):
            assert not isinstance(field.type, str), (cls, field.name)
        typing.get_type_hints(cls)


def test_the_route_takes_the_flat_names() -> None:
    route = PubSubRoute("orders-sub", project="p", poll_timeout=3, handler=lambda c, m: True)
    assert route.provider.settings.timeouts.poll == 3
    assert route.name == "pubsub:p/orders-sub"
    with pytest.raises(SettingError, match=r"PubSubProvider\(ack_deadline=\.\.\.\)"):
        PubSubRoute("orders-sub", project="p", ack_deadline=0, handler=lambda c, m: True)


@pytest.fixture
def _fresh_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sys, "path", list(sys.path))  # build_routes adds the file's directory
    yield


@pytest.mark.usefixtures("_fresh_path")
def test_a_config_file_route_builds_its_provider(tmp_path: Path) -> None:
    path = tmp_path / "loafer.toml"
    path.write_text(
        textwrap.dedent(
            """
            [[routes]]
            name = "orders"
            provider = "pubsub"
            queue = "orders-billing"
            handler = "tests.loafer_cli.config_app:handle"
            [routes.provider_options]
            project = "shop"
            emulator_host = "127.0.0.1:8085"
            max_delivery_attempts = "many"
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError) as caught:
        build_routes(load_config(path, {}))
    assert "provider_options.max_delivery_attempts" in str(caught.value)
    path.write_text(path.read_text().replace('"many"', "9"), encoding="utf-8")
    (route,) = build_routes(load_config(path, {}))
    assert isinstance(route.provider, PubSubProvider)
    assert route.provider.settings.setup.max_delivery_attempts == 9
    assert route.provider.subscription == "orders-billing"
