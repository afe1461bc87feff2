"""AMQPSettings / AMQPPublisherSettings: built from a settings object or flat keywords,
each check, secrets kept out of reprs and errors, config files, a real round trip."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loafer_amqp import (
    TLS,
    AMQPConnection,
    AMQPProvider,
    AMQPPublisher,
    AMQPPublisherSettings,
    AMQPRoute,
    AMQPSettings,
)
from loafer_cli.config import build_routes, load_config
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import ACCEPT
from loafer_core.settings import Connection, SettingError, Timeouts, flat_names

from .conftest import Broker
from .test_provider import fetch_n

URL = "amqp://guest:guest@127.0.0.1:1"  # nothing listens there: nothing connects below

#: Every flat keyword AMQPProvider takes, none at its default.
PROVIDER_FLAT: dict[str, Any] = {
    "url": "amqps://app:pw-Zq9@broker.example:5671",
    "address": "/amq/queue/orders",
    "broker": "generic",
    "user": "other",
    "password": "pw2-Zq9",
    "sasl_mechanisms": "PLAIN",
    "virtual_host": "vhost:prod",
    "heartbeat": 30.0,
    "ssl_ca": None,
    "ssl_cert": None,
    "ssl_key": None,
    "ssl_key_password": "kp-Zq9",
    "ssl_verify": False,
    "connect_timeout": 5.0,
    "close_timeout": 3.0,
    "fetch_wait": 2.0,
    "batch_window": 0.5,
    "max_retry_delay": 60.0,
    "reconnect_max_delay": 4.0,
}

PROVIDER_NESTED = AMQPSettings(
    address="/amq/queue/orders",
    connection=Connection(url="amqps://app:pw-Zq9@broker.example:5671"),
    amqp=AMQPConnection(
        user="other",
        password="pw2-Zq9",
        sasl_mechanisms="PLAIN",
        virtual_host="vhost:prod",
        heartbeat=30.0,
    ),
    tls=TLS(key_password="kp-Zq9", verify=False),
    timeouts=Timeouts(connect=5.0, close=3.0, poll=2.0, reconnect=4.0),
    broker="generic",
    batch_window=0.5,
    max_retry_delay=60.0,
)

PUBLISHER_FLAT: dict[str, Any] = {
    **{k: v for k, v in PROVIDER_FLAT.items() if k in flat_names(AMQPPublisherSettings)},
    "durable": False,
    "timeout": None,
    "type_header": "x-type",
}


def test_the_flat_names_are_todays_keywords() -> None:
    fields = {"connection", "amqp", "tls", "timeouts"}
    assert set(flat_names(AMQPSettings)) - fields == set(PROVIDER_FLAT)
    assert set(flat_names(AMQPPublisherSettings)) - fields == set(PUBLISHER_FLAT)
    assert len(PROVIDER_FLAT) == 19 and len(PUBLISHER_FLAT) == 18
    assert AMQPSettings.primary == AMQPPublisherSettings.primary == "address"


def test_both_ways_build_equal_settings() -> None:
    flat = AMQPProvider(**PROVIDER_FLAT)
    nested = AMQPProvider(PROVIDER_NESTED)
    assert flat.settings == nested.settings == PROVIDER_NESTED
    assert nested.settings is PROVIDER_NESTED
    url, address = PROVIDER_FLAT["url"], PROVIDER_FLAT["address"]
    others = {k: v for k, v in PROVIDER_FLAT.items() if k not in ("url", "address")}
    assert AMQPProvider(url, address, **others).settings == PROVIDER_NESTED  # positional
    assert repr(flat) == repr(nested)
    assert (flat.address, flat.broker) == ("/amq/queue/orders", "generic")

    publisher = AMQPPublisher(**PUBLISHER_FLAT)
    assert publisher.settings == AMQPPublisherSettings(
        address="/amq/queue/orders",
        connection=PROVIDER_NESTED.connection,
        amqp=PROVIDER_NESTED.amqp,
        tls=PROVIDER_NESTED.tls,
        timeouts=Timeouts(connect=5.0, close=3.0, reconnect=4.0),
        durable=False,
        timeout=None,
        type_header="x-type",
    )
    assert (publisher.durable, publisher.type_header) == (False, "x-type")


def test_the_defaults_are_todays() -> None:
    provider = AMQPProvider(URL, "/amq/queue/q").settings
    assert provider.timeouts.connect == 15.0 and provider.timeouts.close == 10.0
    assert provider.timeouts.poll == 20.0 and provider.timeouts.reconnect == 10.0
    assert (provider.broker, provider.batch_window, provider.max_retry_delay) == (
        "auto",
        0.0,
        900.0,
    )
    assert provider.amqp == AMQPConnection(heartbeat=60.0) and provider.tls == TLS(verify=True)
    publisher = AMQPPublisher(URL, "/amq/queue/q").settings
    assert (publisher.durable, publisher.timeout, publisher.type_header) == (True, 60.0, "type")
    assert publisher.timeouts == Timeouts(connect=15.0, close=10.0, reconnect=10.0)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("address", "", "a non-empty string"),
        ("url", "", "a non-empty string"),
        ("broker", "artemis", "'auto', 'rabbitmq' or 'generic'"),
        ("heartbeat", -5, "seconds >= 0 or None"),
        ("heartbeat", "60", "seconds >= 0 or None"),
        ("heartbeat", True, "seconds >= 0 or None"),
        ("user", 3, "a string or None"),
        ("sasl_mechanisms", 1, "a string or None"),
        ("virtual_host", 1, "a string or None"),
        ("ssl_ca", 1, "a string or None"),
        ("ssl_verify", "no", "True or False"),
        ("connect_timeout", 0, "seconds > 0"),
        ("close_timeout", float("nan"), "seconds > 0"),
        ("fetch_wait", 0, "seconds > 0"),
        ("batch_window", -1, "seconds >= 0"),
        ("batch_window", 30, "seconds <= fetch_wait (20.0)"),
        ("max_retry_delay", float("inf"), "seconds > 0"),
        ("reconnect_max_delay", -1, "seconds > 0"),
    ],
)
def test_each_provider_check_names_the_flat_keyword(key: str, value: Any, expected: str) -> None:
    options = {"url": URL, "address": "/amq/queue/q", key: value}
    with pytest.raises(SettingError) as caught:
        AMQPProvider(**options)
    assert str(caught.value) == f"AMQPProvider({key}=...): expected {expected}, got {value!r}"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("timeout", 0, "seconds > 0 or None"),
        ("timeout", "60", "seconds > 0 or None"),
        ("durable", 1, "True or False"),
        ("type_header", "", "a non-empty string or None"),
        ("connect_timeout", -1, "seconds > 0"),
        ("heartbeat", float("inf"), "seconds >= 0 or None"),
    ],
)
def test_each_publisher_check_names_the_flat_keyword(key: str, value: Any, expected: str) -> None:
    with pytest.raises(SettingError) as caught:
        AMQPPublisher(URL, "/amq/queue/q", **{key: value})
    assert str(caught.value) == f"AMQPPublisher({key}=...): expected {expected}, got {value!r}"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"url": "http://h"}, "amqp:// or amqps://"),
        ({"url": "amqp://h/q"}, "address"),
        ({"url": "amqp://h", "ssl_ca": "/ca.pem"}, "need an amqps:// URL"),
        ({"url": "amqps://h", "ssl_cert": "/c.pem"}, "needs its key"),
        ({"url": "amqps://h", "ssl_ca": "/nonexistent/ca.pem"}, "TLS set-up failed"),
        ({"address": "/amq/queue/q"}, r"AMQPProvider\(url=\.\.\.\): required"),
        ({"url": URL, "fetch_wiat": 1}, "did you mean 'fetch_wait'"),
        ({"connection": Connection(url=URL, options={"x": 1})}, "connection.options"),
    ],
)
def test_cross_field_and_url_mistakes(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        AMQPProvider(**{"address": "/amq/queue/q", **options})


def test_a_settings_object_goes_alone() -> None:
    settings = AMQPSettings(address="/amq/queue/q", connection=Connection(url=URL))
    with pytest.raises(ConfigurationError, match="fetch_wait given with a settings object"):
        AMQPProvider(settings, fetch_wait=3)
    with pytest.raises(ConfigurationError, match="address given with a settings object"):
        AMQPProvider(settings, "/amq/queue/other")
    with pytest.raises(ConfigurationError, match="expected AMQPPublisherSettings or a URL"):
        AMQPPublisher(settings)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="'url' given twice"):
        AMQPProvider(URL, "/amq/queue/q", url=URL)
    changed = AMQPProvider(settings.replace(batch_window=1.0))
    assert changed.settings.batch_window == 1.0
    with pytest.raises(SettingError, match=r"AMQPSettings\(batch_window=\.\.\.\)"):
        settings.replace(batch_window=-1.0)


def test_secrets_are_in_no_repr_and_no_error() -> None:
    provider = AMQPProvider(**PROVIDER_FLAT)
    for shown in (repr(provider.settings), repr(provider), repr(AMQPPublisher(**PUBLISHER_FLAT))):
        assert "Zq9" not in shown
    assert "app:******@broker.example" in repr(provider.settings)
    for key in ("password", "ssl_key_password"):
        with pytest.raises(SettingError) as caught:
            AMQPProvider(URL, "/amq/queue/q", **{key: ["pw-Zq9"]})
        assert "Zq9" not in str(caught.value) and "not shown" in str(caught.value)
        assert str(caught.value).startswith(f"AMQPProvider({key}=...)")
    with pytest.raises(ConfigurationError) as url_error:
        AMQPProvider("amqp://guest:pw-Zq9@h/q", "/amq/queue/q")
    assert "Zq9" not in str(url_error.value)


def test_the_route_takes_a_connection_piece_too() -> None:
    route = AMQPRoute(
        "/amq/queue/orders",
        handler=lambda content, metadata: True,
        connection=Connection(url="amqp://u:pw-Zq9@broker:5673"),
        fetch_wait=2.0,
    )
    assert route.provider.settings.connection.url == "amqp://u:pw-Zq9@broker:5673"
    assert route.provider.settings.timeouts.poll == 2.0
    assert AMQPRoute("/amq/queue/o", handler=lambda c, m: True).provider.settings.connection == (
        Connection(url="amqp://127.0.0.1:5672")
    )


def test_every_field_type_is_a_real_object() -> None:
    for cls in (AMQPSettings, AMQPPublisherSettings, AMQPConnection, TLS):
        for f in dataclasses.fields(cls):
            assert not isinstance(f.type, str), (cls, f.name)


@pytest.fixture
def _fresh_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sys, "path", list(sys.path))  # build_routes adds the file's directory
    yield


@pytest.mark.usefixtures("_fresh_path")
@pytest.mark.parametrize(
    ("option", "message"),
    [
        ('fetch_wait = "soon"', "provider_options.fetch_wait: expected float, got 'soon'"),
        ('ssl_verify = "no"', "provider_options.ssl_verify: expected bool, got 'no'"),
        ('broker = "artemis"', "provider_options.broker: expected 'auto', 'rabbitmq' or"),
    ],
)
def test_a_config_file_with_a_wrong_typed_option_is_refused(
    tmp_path: Path, option: str, message: str
) -> None:
    path = tmp_path / "loafer.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [[routes]]
            name = "orders"
            provider = "amqp"
            queue = "/amq/queue/orders"
            handler = "tests.loafer_cli.config_app:handle"
            [routes.provider_options]
            url = "{URL}"
            {option}
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError) as caught:
        build_routes(load_config(path, {}))
    assert message in str(caught.value)


@pytest.mark.amqp
async def test_built_from_settings_objects_they_work_against_the_broker(
    amqp_url: str, broker: Broker, queue: str
) -> None:
    common: dict[str, Any] = {
        "address": f"/amq/queue/{queue}",
        "connection": Connection(url=amqp_url),
        "amqp": AMQPConnection(heartbeat=30.0),
    }
    provider = AMQPProvider(
        AMQPSettings(**common, timeouts=Timeouts(connect=10.0, poll=5.0), broker="rabbitmq")
    )
    publisher = AMQPPublisher(AMQPPublisherSettings(**common, timeout=10.0))
    try:
        async with publisher:
            await publisher.publish({"id": 1})
        await provider.start(2)
        [delivery] = await fetch_n(provider, 1)
        assert delivery.body == b'{"id":1}'
        await provider.settle(delivery, ACCEPT)
    finally:
        await provider.close()
    await broker.wait_depth(queue, 0)
