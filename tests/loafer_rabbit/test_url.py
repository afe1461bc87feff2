"""The broker URL: refused at construction when it would be misread, masked everywhere."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from loafer_core.errors import ConfigurationError
from loafer_rabbit import RabbitProvider, RabbitPublisher, RabbitRoute, mask_url
from loafer_rabbit.errors import scrub, secrets_of

pytestmark = pytest.mark.rabbit

PASSWORDS = ["pa#ss9word", "pa/ss9word", "pa?ss9word", "12#ss9word", "pa@x/ss9word"]

BUILDERS: list[Callable[[str], Any]] = [
    lambda url: RabbitProvider("q", url=url),
    lambda url: RabbitPublisher(url),
    lambda url: RabbitRoute("q", url=url, handler=lambda content, metadata: None),
]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("build", BUILDERS, ids=["provider", "publisher", "route"])
def test_unencoded_special_characters_in_the_password_are_refused_at_construction(
    password: str, build: Callable[[str], Any]
) -> None:
    url = f"amqp://guest:{password}@127.0.0.1:5672/"
    with pytest.raises(ConfigurationError) as info:
        build(url)
    shown = "".join(traceback.format_exception(info.value))
    assert "percent-encode" in str(info.value)
    assert "ss9word" not in shown


@pytest.mark.parametrize("url", ["amqp://guest:guest@127.0.0.1:99999/", "amqp://u:p@h:xx/"])
def test_a_bad_port_is_refused_at_construction(url: str) -> None:
    with pytest.raises(ConfigurationError, match="port"):
        RabbitProvider("q", url=url)


async def test_the_percent_encoded_password_reaches_the_broker(rabbit_url: str) -> None:
    # The same password, percent-encoded, is accepted at construction and sent as is:
    # RabbitMQ refuses the login (wrong password), and the error still hides it.
    url = f"amqp://guest:{quote('pa#ss9word', safe='')}@127.0.0.1:5672/"
    provider = RabbitProvider("q", url=url, connect_timeout=10)
    with pytest.raises(ConfigurationError, match="refused the login") as info:
        await provider.start(1)
    await provider.close()
    shown = "".join(traceback.format_exception(info.value))
    assert "ss9word" not in shown and "ss9word" not in repr(provider)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("amqp://u:p%40ss@h:5672/v", "amqp://u:******@h:5672/v"),
        ("amqp://h/", "amqp://h/"),
        ("amqp://u@h/", "amqp://u@h/"),
        ("amqps://u:x@h/v?keyfile_password=secret&heartbeat=5", None),
        ("amqp://guest:pa#ss9word@h:5672/", "amqp://guest:******@h:5672/"),
        ("amqp://guest:pa/ss9word@h/", "amqp://guest:******@h/"),
        ("amqp://guest:12#ss9word@h/", "amqp://guest:******@h/"),
        ("amqp://gu/est:ss9word@h/", "amqp://gu/est:******@h/"),
        ("amqp://h/v#ss9word", "amqp://h/v#******"),
    ],
)
def test_mask_url_never_shows_the_password(url: str, masked: str | None) -> None:
    assert "ss9word" not in mask_url(url) and "secret" not in mask_url(url)
    if masked is not None:
        assert mask_url(url) == masked


def test_secrets_and_scrub() -> None:
    url = "amqp://u:p%40ss9@h/?keyfile_password=k%2Fey9&heartbeat=30"
    assert set(secrets_of(url)) == {"p%40ss9", "p@ss9", "k%2Fey9", "k/ey9"}
    text = scrub("login p@ss9 failed on amqp://u:p%40ss9@h/?heartbeat=30, key k/ey9", url)
    assert "ss9" not in text and "ey9" not in text and "heartbeat=******" in text
