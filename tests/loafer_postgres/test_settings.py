"""PostgresSettings and PostgresPublisherSettings: built both ways, checked, secrets masked,
read by the config loader (``provider = "postgres"``), and a provider built from one
against the real server."""

import ssl
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

import pytest

from loafer_cli.config import build_routes, load_config
from loafer_core.errors import ConfigurationError
from loafer_core.outcome import ACCEPT
from loafer_core.settings import Connection, SettingError, Timeouts
from loafer_postgres import (
    PostgresProvider,
    PostgresPublisher,
    PostgresPublisherSettings,
    PostgresRoute,
    PostgresSettings,
)
from loafer_postgres.settings import DEFAULT_TIMEOUTS, DEFAULT_URL

from .conftest import PgAdmin

PASSWORD = "s3cret-pg-pw"


def test_flat_keywords_and_a_settings_object_build_equal_settings() -> None:
    tls = ssl.create_default_context()
    flat = PostgresProvider(
        "jobs",
        url=f"postgresql://app:{PASSWORD}@db:5432/app",
        table="work",
        schema="app",
        lease=7,
        poll_interval=2,
        batch_size=10,
        dead_letters=False,
        listen=False,
        pool_size=3,
        wait=4,
        statement_timeout=9,
        connect_timeout=5,
        close_timeout=6,
        reconnect_wait=1.5,
        connection_name="me",
        tls=tls,
        connection_options={"statement_cache_size": 0},
    )
    built = PostgresSettings(
        queue="jobs",
        table="work",
        schema="app",
        lease=7,
        poll_interval=2,
        batch_size=10,
        dead_letters=False,
        listen=False,
        pool_size=3,
        connection=Connection(
            url=f"postgresql://app:{PASSWORD}@db:5432/app",
            name="me",
            tls=tls,
            options={"statement_cache_size": 0},
        ),
        timeouts=Timeouts(connect=5, close=6, poll=4, publish=9, reconnect=1.5),
    )
    assert flat.settings == built
    assert PostgresProvider(built).settings is built
    assert flat.lease_duration == 7.0
    assert not flat.capabilities.dead_letter


def test_defaults() -> None:
    s = PostgresProvider("jobs").settings
    assert (s.table, s.schema, s.lease, s.poll_interval, s.batch_size) == (
        "loafer_queue",
        "public",
        30.0,
        5.0,
        100,
    )
    assert s.dead_letters and s.listen and s.pool_size == 4
    assert s.connection.url == DEFAULT_URL and s.timeouts == DEFAULT_TIMEOUTS
    p = PostgresPublisher("jobs").settings
    assert (p.queue, p.table, p.schema) == ("jobs", "loafer_queue", "public")


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("lease", 0, "seconds > 0"),
        ("poll_interval", -1, "seconds > 0"),
        ("batch_size", 0, "an int >= 1"),
        ("pool_size", True, "an int >= 1"),
        ("table", "Bad-Name", "a plain lower-case SQL identifier"),
        ("schema", "x; drop table y", "a plain lower-case SQL identifier"),
        ("wait", 0, "seconds > 0"),
        ("statement_timeout", "1", "seconds > 0"),
    ],
)
def test_each_check_names_the_flat_keyword(option: str, value: Any, expected: str) -> None:
    with pytest.raises(SettingError) as caught:
        PostgresProvider("jobs", **{option: value})
    assert f"PostgresProvider({option}=...): expected {expected}" in str(caught.value)


def test_the_queue_and_url_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="queue"):
        PostgresProvider("")
    with pytest.raises(ConfigurationError, match=r"postgresql://"):
        PostgresProvider("jobs", url="mysql://u@h/db")
    with pytest.raises(ConfigurationError, match="would not be read as meant") as caught:
        PostgresProvider("jobs", url=f"postgresql://u:{PASSWORD}/x@h/db")
    assert PASSWORD not in str(caught.value)
    with pytest.raises(SettingError, match=r"connection\.url") as caught:
        PostgresSettings(
            queue="q", connection=Connection(url=f"postgresql://u:{PASSWORD}@h:99999/d")
        )
    assert PASSWORD not in str(caught.value)
    with pytest.raises(ConfigurationError, match="queue"):
        PostgresPublisher(queue="")


def test_unknown_and_doubled_options_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'lease'"):
        PostgresProvider("jobs", leese=3)
    with pytest.raises(ConfigurationError, match="set the same thing"):
        PostgresProvider("jobs", wait=1, poll_timeout=2)
    with pytest.raises(ConfigurationError, match="given twice"):
        PostgresProvider("jobs", queue="other")


def test_secrets_are_absent_from_reprs() -> None:
    url = f"postgresql://app:{PASSWORD}@db/app?sslpassword=kp-{PASSWORD}"
    p = PostgresProvider("jobs", url=url)
    pub = PostgresPublisher("jobs", url=url)
    for text in (repr(p), repr(p.settings), repr(pub), repr(pub.settings), p.url):
        assert PASSWORD not in text, text
    assert repr(p.description()).count(PASSWORD) == 0


def test_field_types_are_real_types() -> None:
    hints = typing.get_type_hints(PostgresSettings)
    assert hints["lease"] is float and hints["batch_size"] is int
    assert hints["connection"] is Connection


def test_the_route_takes_the_flat_names() -> None:
    async def handle(body: Any, metadata: Any) -> bool:
        return True

    route = PostgresRoute("jobs", handler=handle, lease=3, max_concurrency=4, schema="app")
    assert isinstance(route.provider, PostgresProvider)
    assert route.provider.settings.lease == 3 and route.provider.settings.schema == "app"
    assert route.name == "postgres:loafer_queue/jobs"


def test_a_config_file_builds_a_postgres_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # build_routes adds the file's directory
    path = tmp_path / "loafer.toml"
    path.write_text(
        textwrap.dedent(
            """
            [[routes]]
            name = "jobs"
            provider = "postgres"
            queue = "jobs"
            handler = "tests.loafer_cli.config_app:handle"
            [routes.provider_options]
            url = "postgresql://app@127.0.0.1/app"
            schema = "app"
            batch_size = "many"
            """
        ),
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError) as caught:
        build_routes(load_config(path, {}))
    assert "provider_options.batch_size" in str(caught.value)
    path.write_text(path.read_text().replace('"many"', "3"), encoding="utf-8")
    (route,) = build_routes(load_config(path, {}))
    assert isinstance(route.provider, PostgresProvider)
    assert (route.provider.settings.batch_size, route.provider.settings.schema) == (3, "app")


@pytest.mark.postgres
async def test_settings_objects_against_the_real_server(pg: PgAdmin) -> None:
    connection = Connection(url=pg.url)
    provider = PostgresProvider(
        PostgresSettings(queue="jobs", schema=pg.schema, connection=connection, lease=5)
    )
    publisher = PostgresPublisher(
        PostgresPublisherSettings(queue="jobs", schema=pg.schema, connection=connection)
    )
    await provider.start(5)
    try:
        async with publisher:
            await publisher.publish({"n": 1}, headers={"h": "v"}, key="k")
        (delivery,) = await provider.fetch(5)
        assert delivery.body == b'{"n": 1}' and delivery.ordering_key == "k"
        assert delivery.metadata["headers"]["h"] == "v"
        await provider.settle(delivery, ACCEPT)
    finally:
        await provider.close()
    assert await pg.rows("jobs") == []
