"""RabbitSettings and RabbitPublisherSettings: built either way, checked, never showing a secret."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import traceback
from pathlib import Path
from typing import Any

import pytest

from loafer_cli.config import build_manager, load_config
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import ACCEPT
from loafer_core.provider import Delivery
from loafer_core.settings import Connection, SettingError, Timeouts, flat_names
from loafer_rabbit import (
    DeadLetters,
    RabbitProvider,
    RabbitPublisher,
    RabbitPublisherSettings,
    RabbitRoute,
    RabbitSettings,
    Retries,
    Topology,
)
from tests.loafer_rabbit.conftest import RabbitAdmin, unique

SECRET_URL = "amqp://app:pa55-s3cret@rabbit.example:5672/shop?keyfile_password=k3y-s3cret"
SECRETS = ("pa55-s3cret", "k3y-s3cret")
#: Refused (an unencoded '#' in the password); the tracebacks show only these names.
MISREAD_URL = "amqp://app:pa55-s3cret#x@h/"
HTTP_URL = "http://app:pa55-s3cret@h/"


def _shows_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text


# -- both ways build the same settings ---------------------------------------------------------


def test_the_provider_flat_keywords_and_a_settings_object_build_equal_settings() -> None:
    context = ssl.create_default_context()
    flat = RabbitProvider(
        "orders",
        url=SECRET_URL,
        declare=True,
        queue_type="quorum",
        durable=True,
        queue_arguments={"x-max-length": 10},
        delayed_retry=True,
        retry_queue="orders.later",
        retry_tiers=False,
        dead_letter=True,
        dead_letter_exchange="orders.x",
        dead_letter_queue="orders.bin",
        prefetch_headroom=2,
        poll_timeout=1.5,
        publish_timeout=20,
        connect_timeout=7,
        close_timeout=3,
        reconnect_interval=0.5,
        connection_name="orders-consumer",
        ssl_context=context,
        connection_options={"heartbeat": 30},
    )
    settings = RabbitSettings(
        queue="orders",
        connection=Connection(
            url=SECRET_URL, name="orders-consumer", tls=context, options={"heartbeat": 30}
        ),
        timeouts=Timeouts(poll=1.5, publish=20, connect=7, close=3, reconnect=0.5),
        topology=Topology(
            declare=True, queue_type="quorum", durable=True, arguments={"x-max-length": 10}
        ),
        retries=Retries(delayed=True, queue="orders.later", tiers=False),
        dead_letters=DeadLetters(mode=True, exchange="orders.x", queue="orders.bin"),
        prefetch_headroom=2,
    )
    assert flat.settings == settings
    built = RabbitProvider(settings)
    assert built.settings is settings
    assert (built.queue, built.retry_queue) == ("orders", "orders.later")
    assert (built.dead_letter_exchange, built.dead_letter_queue) == ("orders.x", "orders.bin")
    assert built.description() == flat.description()


def test_the_provider_defaults_are_those_of_the_flat_keywords() -> None:
    provider = RabbitProvider(RabbitSettings(queue="orders"))
    assert provider.settings == RabbitProvider("orders").settings
    assert provider.url == "amqp://guest:******@localhost:5672/"
    assert provider.retry_queue == "orders.retry"
    assert provider.dead_letter_exchange == "orders.dlx"
    assert provider.dead_letter_queue == "orders.dead"
    assert provider._connection_name == "loafer:orders"
    assert provider.settings.timeouts == Timeouts()


def test_the_publisher_positionals_keywords_and_a_settings_object_build_equal_settings() -> None:
    flat = RabbitPublisher(
        SECRET_URL,
        "shop",
        routing_key="orders",
        mandatory=False,
        persistent=False,
        pipeline=10,
        timeout=5,
        connect_timeout=6,
        close_timeout=2,
        connection_name="shop-publisher",
        connection_options={"heartbeat": 10},
        type_header=None,
    )
    settings = RabbitPublisherSettings(
        exchange="shop",
        routing_key="orders",
        mandatory=False,
        persistent=False,
        pipeline=10,
        type_header=None,
        connection=Connection(url=SECRET_URL, name="shop-publisher", options={"heartbeat": 10}),
        timeouts=Timeouts(publish=5, connect=6, close=2),
    )
    assert flat.settings == settings
    assert RabbitPublisher(url=SECRET_URL, exchange="shop").settings == RabbitPublisherSettings(
        exchange="shop", connection=Connection(url=SECRET_URL, name="loafer:publisher")
    )
    publisher = RabbitPublisher(settings)
    assert (publisher.exchange, publisher.routing_key, publisher.timeout) == ("shop", "orders", 5)
    assert (publisher.mandatory, publisher.persistent, publisher.pipeline) == (False, False, 10)
    assert publisher.type_header is None
    assert publisher.description() == flat.description()
    assert RabbitPublisher().settings == RabbitPublisherSettings()


def test_a_route_takes_the_settings_flat_names_and_its_pieces() -> None:
    route = RabbitRoute(
        "orders",
        handler=lambda content, metadata: True,
        topology=Topology(declare=True),
        poll_timeout=2,
        max_concurrency=4,
    )
    assert route.provider.settings == RabbitSettings(
        queue="orders", topology=Topology(declare=True), timeouts=Timeouts(poll=2)
    )
    assert route.name == "rabbit:orders" and route.max_concurrency == 4


def test_settings_and_keywords_together_are_refused() -> None:
    settings = RabbitSettings(queue="orders")
    with pytest.raises(ConfigurationError, match=r"RabbitSettings and keywords \['url'\]"):
        RabbitProvider(settings, url="amqp://h/")
    with pytest.raises(ConfigurationError, match="queue given twice"):
        RabbitProvider("orders", queue="other")
    with pytest.raises(ConfigurationError, match=r"RabbitPublisherSettings and \['exchange'\]"):
        RabbitPublisher(RabbitPublisherSettings(), "shop")
    with pytest.raises(ConfigurationError, match="url given twice"):
        RabbitPublisher("amqp://h/", url="amqp://other/")


def test_settings_are_frozen() -> None:
    settings = RabbitSettings(queue="orders", topology=Topology(arguments={"x-max-length": 1}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.queue = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.topology.arguments["x-max-length"] = 2  # type: ignore[index]
    assert settings.replace(queue="other").queue == "other"


# -- each check refuses a wrong value, naming the flat keyword ---------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"queue": ""}, "RabbitProvider(queue=...): expected a non-empty string, got ''"),
        ({"url": "http://x"}, "RabbitProvider(url=...): expected an amqp:// or amqps:// URL"),
        (
            {"queue_type": "stream"},
            "RabbitProvider(queue_type=...): expected 'classic' or 'quorum', got 'stream'",
        ),
        (
            {"dead_letter": "yes"},
            "RabbitProvider(dead_letter=...): expected True, False or 'queue', got 'yes'",
        ),
        ({"dead_letter": 1}, "RabbitProvider(dead_letter=...): expected True, False or 'queue'"),
        (
            {"prefetch_headroom": -1},
            "RabbitProvider(prefetch_headroom=...): expected an int >= 0, got -1",
        ),
        ({"prefetch_headroom": True}, "RabbitProvider(prefetch_headroom=...): expected an int"),
        ({"poll_timeout": 0}, "RabbitProvider(poll_timeout=...): expected seconds > 0, got 0"),
        ({"publish_timeout": -1}, "RabbitProvider(publish_timeout=...): expected seconds > 0"),
        ({"connect_timeout": "5"}, "RabbitProvider(connect_timeout=...): expected seconds > 0"),
        ({"close_timeout": float("nan")}, "RabbitProvider(close_timeout=...): expected seconds"),
        ({"reconnect_interval": 0}, "RabbitProvider(reconnect_interval=...): expected seconds"),
        ({"retry_queue": ""}, "RabbitProvider(retry_queue=...): expected a non-empty string"),
        (
            {"dead_letter_exchange": ""},
            "RabbitProvider(dead_letter_exchange=...): expected a non-empty string",
        ),
        (
            {"dead_letter_queue": 5},
            "RabbitProvider(dead_letter_queue=...): expected a non-empty string",
        ),
        (
            {"connection_name": ""},
            "RabbitProvider(connection_name=...): expected a non-empty string",
        ),
        (
            {"queue_type": "quorum", "durable": False},
            "RabbitProvider: quorum queues are always durable",
        ),
        ({"prefetch": 1}, "RabbitProvider(prefetch=...): unknown option (did you mean"),
    ],
)
def test_each_provider_check_names_the_flat_keyword(options: dict[str, Any], expected: str) -> None:
    options = {"queue": "orders", **options}
    with pytest.raises(ConfigurationError) as caught:
        RabbitProvider(**options)
    assert str(caught.value).startswith(expected), str(caught.value)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"url": "http://x"}, "RabbitPublisher(url=...): expected an amqp:// or amqps:// URL"),
        ({"pipeline": 0}, "RabbitPublisher(pipeline=...): expected an int >= 1, got 0"),
        ({"timeout": 0}, "RabbitPublisher(timeout=...): expected seconds > 0, got 0"),
        ({"connect_timeout": -1}, "RabbitPublisher(connect_timeout=...): expected seconds > 0"),
        ({"close_timeout": None}, "RabbitPublisher(close_timeout=...): expected seconds > 0"),
        ({"poll_timeout": 1}, "RabbitPublisher(poll_timeout=...): unknown option"),
    ],
)
def test_each_publisher_check_names_the_flat_keyword(
    options: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        RabbitPublisher(**options)
    assert str(caught.value).startswith(expected), str(caught.value)


def test_a_settings_object_is_checked_with_its_own_field_names() -> None:
    with pytest.raises(SettingError, match=r"Topology\(queue_type=...\)"):
        Topology(queue_type="lazy")  # type: ignore[arg-type]
    with pytest.raises(SettingError, match=r"RabbitSettings\(prefetch_headroom=...\)"):
        RabbitSettings(queue="q", prefetch_headroom=-1)
    with pytest.raises(ConfigurationError, match="quorum queues are always durable"):
        Topology(queue_type="quorum", durable=False)
    with pytest.raises(ConfigurationError, match="amqp://"):
        RabbitSettings(queue="q", connection=Connection(url="http://x"))


# -- secrets ------------------------------------------------------------------------------------


def test_secrets_are_absent_from_the_settings_repr() -> None:
    provider = RabbitProvider(
        "orders", url=SECRET_URL, connection_options={"login_password": "opt-s3cret"}
    )
    publisher = RabbitPublisher(SECRET_URL)
    for text in (repr(provider.settings), repr(publisher.settings), repr(provider)):
        _shows_no_secret(text)
        assert "opt-s3cret" not in text
    assert "rabbit.example:5672/shop" in repr(provider.settings)


@pytest.mark.parametrize(
    "build",
    [
        lambda: RabbitProvider("q", url=MISREAD_URL),
        lambda: RabbitProvider("q", url=SECRET_URL, poll_timeout=-1),
        lambda: RabbitProvider("q", url=SECRET_URL, queue_type="quorum", durable=False),
        lambda: RabbitPublisher(MISREAD_URL),
        lambda: RabbitPublisher(SECRET_URL, pipeline=0),
        lambda: RabbitSettings(queue="q", connection=Connection(url=HTTP_URL)),
    ],
)
def test_secrets_are_absent_from_errors(build: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        build()
    _shows_no_secret("".join(traceback.format_exception(caught.value)))


# -- config files -------------------------------------------------------------------------------

HANDLER = 'handler = "tests.loafer_cli.config_app:handle"'


def _problem(directory: Path, text: str, environ: dict[str, str]) -> str:
    path = directory / "loafer.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        build_manager(load_config(path, environ))
    return str(caught.value).replace(str(path), "loafer.toml")


def _route(options: str) -> str:
    return (
        f'[[routes]]\nname = "orders"\nprovider = "rabbit"\nqueue = "q"\n{HANDLER}\n'
        f'[routes.provider_options]\nurl = "amqp://app:${{PW}}@127.0.0.1:1/"\n{options}\n'
    )


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            'prefetch_headroom = "two"',
            "provider_options.prefetch_headroom: expected int, got 'two'",
        ),
        ('dead_letter = "sometimes"', "provider_options.dead_letter: expected "),
        (  # a value the settings' check refuses, said at its option
            "poll_timeout = -1",
            "provider_options.poll_timeout: expected seconds > 0, got -1",
        ),
        ('queue_arguments = "x"', "provider_options.queue_arguments: expected "),
        (  # a nested piece is set by its flat names in a config file
            "topology = { declare = true }",
            "provider_options.topology: unknown option of 'rabbit' (RabbitProvider)",
        ),
    ],
)
def test_a_config_file_with_a_wrong_typed_provider_option_is_refused(
    tmp_path: Path, options: str, expected: str
) -> None:
    message = _problem(tmp_path, _route(options), {"PW": "pa55-s3cret"})
    assert message.startswith(f"loafer.toml: routes[0] ('orders'): {expected}"), message
    _shows_no_secret(message)


def test_a_config_file_with_a_wrong_typed_publisher_option_is_refused(tmp_path: Path) -> None:
    text = (
        f'[[routes]]\nname = "orders"\nprovider = "memory"\nqueue = "q"\n{HANDLER}\n\n'
        '[publishers.out]\npublisher = "rabbit"\ntarget = "out"\n'
        'url = "amqp://app:${PW}@127.0.0.1:1/"\noptions = { pipeline = "many" }\n'
    )
    message = _problem(tmp_path, text, {"PW": "pa55-s3cret"})
    assert message == "loafer.toml: publishers.out.options.pipeline: expected int, got 'many'"


def test_every_flat_keyword_of_the_constructors_is_mapped() -> None:
    provider_keywords = {
        "queue",
        "url",
        "declare",
        "queue_type",
        "durable",
        "queue_arguments",
        "delayed_retry",
        "retry_queue",
        "retry_tiers",
        "dead_letter",
        "dead_letter_exchange",
        "dead_letter_queue",
        "prefetch_headroom",
        "poll_timeout",
        "publish_timeout",
        "connect_timeout",
        "close_timeout",
        "reconnect_interval",
        "connection_name",
        "ssl_context",
        "connection_options",
    }
    publisher_keywords = {
        "url",
        "exchange",
        "routing_key",
        "mandatory",
        "persistent",
        "pipeline",
        "timeout",
        "connect_timeout",
        "close_timeout",
        "connection_name",
        "ssl_context",
        "connection_options",
        "type_header",
    }
    assert provider_keywords <= set(flat_names(RabbitSettings))
    assert publisher_keywords <= set(flat_names(RabbitPublisherSettings))


# -- against the broker -------------------------------------------------------------------------


@pytest.mark.rabbit
async def test_a_provider_and_a_publisher_built_from_settings_round_trip(
    rabbit_url: str, admin: RabbitAdmin
) -> None:
    queue = unique()
    settings = RabbitSettings(
        queue=queue,
        connection=Connection(url=rabbit_url, name="loafer-test-settings"),
        timeouts=Timeouts(poll=1.0, connect=10),
        topology=Topology(declare=True, queue_type="quorum"),
        dead_letters=DeadLetters(mode=True),
    )
    provider = RabbitProvider(settings)
    admin.track(
        queue,
        provider.retry_queue,
        provider.dead_letter_queue,
        exchanges=(provider.dead_letter_exchange,),
    )
    publisher = RabbitPublisher(
        RabbitPublisherSettings(routing_key=queue, connection=Connection(url=rabbit_url))
    )
    try:
        await provider.start(4)
        await publisher.publish({"id": 1}, message_id="m-1")
        deliveries: list[Delivery] = []
        async with asyncio.timeout(15):
            while not deliveries:
                deliveries.extend(await provider.fetch(1))
        (delivery,) = deliveries
        assert delivery.body == b'{"id": 1}' and delivery.message_id == "m-1"
        await provider.settle(delivery, ACCEPT)
    finally:
        await publisher.close()
        await provider.close()
    assert await admin.count(queue) == 0
