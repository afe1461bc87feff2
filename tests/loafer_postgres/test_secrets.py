"""No password in any log line (at DEBUG), exception or repr."""

from __future__ import annotations

import logging
import socket
import traceback
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from loafer_core import Manager, Route
from loafer_core.errors import LoaferError
from loafer_core.testing import eventually
from loafer_postgres import PostgresProvider, PostgresPublisher, mask_url
from loafer_postgres.errors import secrets_of
from tests.loafer_postgres.conftest import PgAdmin

pytestmark = pytest.mark.postgres

PASSWORD = "s3cr3t-" + uuid.uuid4().hex


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` (the local server trusts loopback: any password works)."""
    parts = urlsplit(url)
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_mask_url() -> None:
    assert mask_url("postgresql://u:pw@host:5432/db") == "postgresql://u:******@host:5432/db"
    assert mask_url("postgres://u@host/db") == "postgres://u@host/db"
    assert (
        mask_url("postgresql://u@h/db?password=pw&sslmode=require")
        == "postgresql://u@h/db?password=******&sslmode=******"
    )
    assert mask_url("postgresql://u:p%40ss@h1:5432,h2:5433/db") == (
        "postgresql://u:******@h1:5432,h2:5433/db"
    )
    assert set(secrets_of("postgresql://u:p%40ss@h/db?sslpassword=kk1")) == {
        "p%40ss",
        "p@ss",
        "kk1",
    }


def _text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


async def test_errors_of_an_unreachable_server_hide_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"postgresql://app:{PASSWORD}@127.0.0.1:{closed_port()}/test?sslpassword={PASSWORD}x"
    caplog.set_level(logging.DEBUG)
    provider = PostgresProvider("q", url=url, connect_timeout=2)
    publisher = PostgresPublisher("q", url=url, connect_timeout=2)
    for call in (lambda: provider.start(1), provider.verify, publisher.start):
        with pytest.raises(LoaferError) as caught:
            await call()
        assert PASSWORD not in _text(caught.value)
    await provider.close()
    await publisher.close()
    for text in (repr(provider), repr(publisher), repr(provider.description())):
        assert PASSWORD not in text
    assert PASSWORD not in caplog.text


async def test_a_running_route_with_a_password_logs_no_secret(
    pg: PgAdmin, caplog: pytest.LogCaptureFixture
) -> None:
    """A route on a URL with a password, at DEBUG, through start, a dropped connection
    (the pool's and the listener's errors) and a drain: no secret anywhere."""
    caplog.set_level(logging.DEBUG)
    url = with_password(pg.url, PASSWORD)
    name = f"loafer-secret-{uuid.uuid4().hex[:8]}"
    seen: list[Any] = []

    async def handler(body: Any, metadata: Any) -> bool:
        seen.append(body)
        return True

    provider = PostgresProvider(
        "q", url=url, schema=pg.schema, wait=0.5, poll_interval=0.5, connection_name=name
    )
    async with Manager([Route(provider, handler)], shutdown_timeout=5):
        await pg.put("q", b'{"n": 1}')
        await eventually(lambda: seen, timeout=10, what="the first row handled")
        await pg.pool.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            name,
        )
        await pg.put("q", b'{"n": 2}')
        await eventually(lambda: len(seen) == 2, timeout=15, what="the second row handled")
    assert PASSWORD not in caplog.text
    assert "loafer_postgres" in caplog.text  # something was logged by us
