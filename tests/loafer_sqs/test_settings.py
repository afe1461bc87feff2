"""SQSSettings, SQSPublisherSettings and SNSPublisherSettings: built both ways (Loafer
2.x's calls included), checked, credentials masked, read by the config loader, and a
provider built from one against moto."""

import asyncio
import dataclasses
import json
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
from loafer_core.settings import SettingError
from loafer_sqs import (
    AWSClient,
    Closing,
    Lingers,
    SNSPublisher,
    SNSPublisherSettings,
    SQSProvider,
    SQSPublisher,
    SQSPublisherSettings,
    SQSRoute,
    SQSSettings,
)
from tests.loafer_sqs.conftest import MakeQueue, queue_counts

SECRET = "very-s3cret-key"
TOKEN = "session-t0ken"


def test_loafer_calls_and_a_settings_object_build_equal_settings() -> None:
    built = SQSSettings(
        queue="orders",
        receive_options={"WaitTimeSeconds": 3, "MaxNumberOfMessages": 5},
        dead_letter_queue=False,
        retry_visibility=0,
        lingers=Lingers(settle=0.1, receive=0.2),
        closing=Closing(grace=0.5, timeout=4),
        client=AWSClient(region_name="eu-west-1", endpoint_url="http://h:1", use_ssl=False),
    )
    keywords: dict[str, Any] = {
        "dead_letter_queue": False,
        "retry_visibility": 0,
        "settle_linger": 0.1,
        "receive_linger": 0.2,
        "close_grace": 0.5,
        "close_timeout": 4,
        "region_name": "eu-west-1",
        "endpoint_url": "http://h:1",
        "use_ssl": False,
    }
    options = {"WaitTimeSeconds": 3, "MaxNumberOfMessages": 5}
    assert SQSProvider("orders", options, **keywords).settings == built
    assert SQSProvider("orders", options=options, **keywords).settings == built
    assert SQSProvider(queue="orders", options=options, **keywords).settings == built
    assert SQSProvider(queue_name="orders", options=options, **keywords).settings == built
    assert SQSProvider(None, options, queue_name="orders", **keywords).settings == built
    provider = SQSProvider(built)
    assert provider.describe() == "sqs:orders"
    assert not provider.capabilities.retry_waits  # retry_visibility=0

    client = AWSClient(region_name="eu-west-1")
    assert SQSPublisher("q", region_name="eu-west-1", linger=0.1).settings == (
        SQSPublisherSettings(queue="q", linger=0.1, client=client)
    )
    assert SNSPublisher(topic="t", region_name="eu-west-1").settings == (
        SNSPublisherSettings(topic="t", client=client)
    )
    assert SQSPublisher(SQSPublisherSettings(queue="q")).queue == "q"


def test_defaults_are_today_s() -> None:
    settings = SQSProvider("q").settings
    assert settings.receive_options == {}
    assert (settings.dead_letter_queue, settings.retry_visibility) == (None, None)
    assert settings.lingers == Lingers(settle=0.02, receive=0.05)
    assert settings.closing == Closing(grace=1.0, timeout=10.0)
    assert settings.client.given() == {}
    publisher = SQSPublisher().settings
    assert (publisher.linger, publisher.close_timeout, publisher.type_header) == (
        0.02,
        10.0,
        "type",
    )
    assert publisher.encoder is json.dumps


@pytest.mark.parametrize(
    ("positional", "keywords", "named", "expected"),
    [
        ((), {"queue": ""}, "queue", "a queue name or URL"),
        (({"WaitTimeSeconds": 21},), {}, "options", r"options\['WaitTimeSeconds'\]"),
        ((), {"options": {"Nope": 1}}, "options", "ReceiveMessage options only"),
        (({"MaxNumberOfMessages": 0},), {}, "options", r"options\['MaxNumberOfMessages'\]"),
        (({"VisibilityTimeout": -1},), {}, "options", r"options\['VisibilityTimeout'\]"),
        (({"MessageAttributeNames": "All"},), {}, "options", r"options\[.MessageAttributeNames.\]"),
        ((), {"retry_visibility": -1}, "retry_visibility", "seconds from 0 to 43200"),
        ((), {"settle_linger": "0.1"}, "settle_linger", "a number >= 0"),
        ((), {"receive_linger": -1}, "receive_linger", "a number >= 0"),
        ((), {"close_grace": float("inf")}, "close_grace", "a number >= 0"),
        ((), {"close_timeout": True}, "close_timeout", "a number >= 0"),
    ],
)
def test_each_provider_check_names_the_flat_keyword(
    positional: tuple[Any, ...], keywords: dict[str, Any], named: str, expected: str
) -> None:
    args = ("q", *positional) if "queue" not in keywords else positional
    with pytest.raises(SettingError, match=rf"^SQSProvider\({named}=\.\.\.\): expected {expected}"):
        SQSProvider(*args, **keywords)


@pytest.mark.parametrize("cls", [SQSPublisher, SNSPublisher])
def test_each_publisher_check_names_the_flat_keyword(cls: type[Any]) -> None:
    for named in ("linger", "close_timeout"):
        with pytest.raises(
            SettingError, match=rf"^{cls.__name__}\({named}=\.\.\.\): expected a number >= 0"
        ):
            cls("x", **{named: -1})


def test_unknown_doubled_and_missing_options_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"regon_name.*did you mean 'region_name'"):
        SQSProvider("q", regon_name="eu-west-1")
    with pytest.raises(ConfigurationError, match="give one or the other"):
        SQSProvider(SQSSettings(queue="q"), region_name="eu-west-1")
    with pytest.raises(ConfigurationError, match="give one or the other"):
        SQSProvider(SQSSettings(queue="q"), {"WaitTimeSeconds": 1})
    with pytest.raises(ConfigurationError, match="'options' given twice"):
        SQSProvider("q", {"WaitTimeSeconds": 1}, options={"WaitTimeSeconds": 2})
    with pytest.raises(ConfigurationError, match="needs a queue name or URL"):
        SQSProvider()
    with pytest.raises(ConfigurationError, match="SQSPublisher: 'queue' given twice"):
        SQSPublisher("a", queue="b")


def test_credentials_are_absent_from_reprs_and_errors() -> None:
    client = AWSClient(
        region_name="eu-west-1",
        endpoint_url=f"http://user:{SECRET}@h:1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key=SECRET,
        aws_session_token=TOKEN,
    )
    settings = SQSSettings(queue="q", client=client)
    provider = SQSProvider(settings)
    publisher = SQSPublisher(SQSPublisherSettings(client=client))
    for text in (repr(client), repr(settings), repr(provider), repr(publisher), str(settings)):
        assert SECRET not in text and TOKEN not in text, text
        assert "AKIDEXAMPLE" not in text
    assert "credentials=" in repr(client) and "eu-west-1" in repr(client)
    with pytest.raises(ConfigurationError) as caught:
        SQSProvider("q", aws_secret_access_key=SECRET, settle_linger=-1)
    assert SECRET not in str(caught.value)


def test_field_types_are_real_types() -> None:
    for cls in (
        SQSSettings,
        SQSPublisherSettings,
        SNSPublisherSettings,
        AWSClient,
        Lingers,
        Closing,
    ):
        for field in dataclasses.fields(cls):
            assert not isinstance(field.type, str), (cls, field.name)
        typing.get_type_hints(cls)


def test_the_loafer_route_keeps_its_signature() -> None:
    route = SQSRoute(
        "q", {"options": {"WaitTimeSeconds": 1}, "region_name": "eu-west-1"}, handler=print
    )
    assert isinstance(route.provider, SQSProvider)
    assert route.provider.settings.receive_options == {"WaitTimeSeconds": 1}
    with pytest.raises(SettingError, match=r"SQSProvider\(retry_visibility=\.\.\.\)"):
        SQSRoute("q", {"retry_visibility": "soon"}, handler=print)


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
            name = "emails"
            provider = "sqs"
            queue = "emails"
            handler = "tests.loafer_cli.config_app:handle"
            [routes.provider_options]
            region_name = "eu-west-1"
            aws_secret_access_key = "${AWS_SECRET}"
            close_grace = "long"
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError) as caught:
        build_routes(load_config(path, {"AWS_SECRET": SECRET}))
    assert "provider_options.close_grace: expected float, got 'long'" in str(caught.value)
    assert SECRET not in str(caught.value)
    path.write_text(path.read_text().replace('"long"', "0.5"), encoding="utf-8")
    (route,) = build_routes(load_config(path, {"AWS_SECRET": SECRET}))
    assert isinstance(route.provider, SQSProvider)
    assert route.provider.settings.closing.grace == 0.5
    assert SECRET not in repr(route.provider)


@pytest.mark.sqs
async def test_settings_objects_against_moto(
    make_queue: MakeQueue, client_options: dict[str, Any], sqs: Any
) -> None:
    url = await make_queue()
    client = AWSClient(**client_options)
    provider = SQSProvider(
        SQSSettings(queue=url, receive_options={"WaitTimeSeconds": 1}, client=client)
    )
    await provider.start(5)
    try:
        async with SQSPublisher(SQSPublisherSettings(queue=url, client=client)) as publisher:
            await publisher.publish({"n": 1})
        deliveries: list[Any] = []
        async with asyncio.timeout(15):
            while not deliveries:
                deliveries.extend(await provider.fetch(5))
        [delivery] = deliveries
        assert json.loads(delivery.raw["Body"]) == {"n": 1}
        await provider.settle(delivery, ACCEPT)
    finally:
        await provider.close()
    assert await queue_counts(sqs, url) == (0, 0)
